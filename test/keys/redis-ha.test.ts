// Redis Sentinel and Redis Cluster, against real servers (test/helpers/redis-ha.ts): failover under load,
// READONLY after a demotion, slots and pub/sub on a Cluster.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { decodeProtectedHeader } from 'jose';
import type { App } from '../../src/app.js';
import { connectRedis } from '../../src/keys/redis-key-store.js';
import type { KeyRecord } from '../../src/keys/types.js';
import { bearer, buildTestApp, TEST_KEK } from '../helpers/app.js';
import { clientsFile, TOKENS } from '../helpers/clients.js';
import { startRedis } from '../helpers/redis.js';
import { type ClusterSetup, type SentinelSetup, sleep, startCluster, startSentinelSetup, waitUntil } from '../helpers/redis-ha.js';

const newPrefix = () => `ha-${randomBytes(3).toString('hex')}:`;
const CLIENTS_FILE = clientsFile();
after(() => rmSync(dirname(CLIENTS_FILE), { recursive: true, force: true }));
const SIGN = { client_id: 'c', audience: 'https://a/token' };
// Fast keys; no public rate limit (every injected request comes from one address); the 60 s poll interval
// of buildTestApp stays, so a replica that catches a change within a second got it through pub/sub.
const BASE_ENV = { KEY_ALG: 'ES256', RATE_LIMIT_MAX: '0' };

async function sign(app: App, keySet?: string) {
  return app.internal.inject({ method: 'POST', url: '/v1/assertions', headers: bearer(TOKENS.broad), payload: { ...SIGN, ...(keySet ? { key_set: keySet } : {}) } });
}

async function etag(app: App, set?: string): Promise<string | undefined> {
  const res = await app.public.inject({ url: set ? `/jwks/${set}.json` : '/.well-known/jwks.json' });
  return res.statusCode === 200 ? (res.headers.etag as string) : undefined;
}

/** Retries a forced rotation until the store takes it (bounded): the admin's retry after a failover. */
async function rotateWhenBack(app: App, set: string, timeoutMs: number): Promise<{ attempts: number }> {
  const deadline = Date.now() + timeoutMs;
  let attempts = 0;
  for (;;) {
    attempts += 1;
    try {
      const result = await app.keys.rotate(set, { force: true });
      assert.equal(result.changed, true);
      return { attempts };
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (!['store_unavailable', 'rotation_in_progress'].includes(code ?? '') || Date.now() > deadline) throw err;
      await sleep(100);
    }
  }
}

const records = (hash: Record<string, string>) => Object.values(hash).map((v) => JSON.parse(v) as KeyRecord);

describe('Redis Sentinel', () => {
  let sentinel: SentinelSetup;
  before(async () => {
    sentinel = await startSentinelSetup({ downAfterMs: 1000, failoverTimeoutMs: 3000 });
  });
  after(() => sentinel?.close());

  test('primary SIGKILLed under JWKS and signing load: no failed response, the new primary takes a rotation, no key lost', async (t) => {
    const prefix = newPrefix();
    const common = { ...BASE_ENV, REDIS_KEY_PREFIX: prefix, API_CLIENTS_FILE: CLIENTS_FILE, REDIS_SENTINEL_PASSWORD: sentinel.sentinelPassword };
    // One replica with REDIS_SENTINELS (+ credentials from a plain REDIS_URL whose host is ignored), one with
    // the redis+sentinel:// URL form alone.
    const a = await buildTestApp({
      ...common,
      REDIS_SENTINELS: sentinel.sentinelsEnv,
      REDIS_SENTINEL_MASTER: sentinel.masterName,
      REDIS_URL: `redis://:${sentinel.dataPassword}@ignored.invalid:6379/0`,
    });
    t.after(() => a.app.close());
    const b = await buildTestApp({ ...common, REDIS_URL: `redis+sentinel://:${sentinel.dataPassword}@${sentinel.sentinelsEnv}/${sentinel.masterName}/0` });
    t.after(() => b.app.close());
    const apps = [a.app, b.app];
    assert.deepEqual(apps.map((app) => app.store.state()), ['up', 'up']);
    assert.equal(await etag(a.app), await etag(b.app), 'both replicas publish the same set');

    const oldPrimary = await sentinel.primaryPort();
    const keysKey = `${prefix}{default}:keys`;
    // The replica must hold every write before the primary dies (replication is asynchronous).
    assert.equal(await sentinel.node(oldPrimary).call('WAIT', '1', '2000'), 1);
    const before = await sentinel.node(oldPrimary).hgetall(keysKey);
    assert.equal(Object.keys(before).length, 2);
    const activeBefore = records(before).find((r) => r.state === 'active')!.kid;
    const nextBefore = records(before).find((r) => r.state === 'next')!.kid;

    // Load: both replicas, JWKS on the public port and signing on the internal port, back to back.
    const stats = { jwks: 0, jwksFailed: [] as number[], signed: 0, signFailed: [] as string[], kids: new Set<string>() };
    let stop = false;
    const loops = apps.map(async (app) => {
      while (!stop) {
        const [jwks, signed] = await Promise.all([app.public.inject({ url: '/.well-known/jwks.json' }), sign(app)]);
        stats.jwks += 1;
        if (jwks.statusCode !== 200) stats.jwksFailed.push(jwks.statusCode);
        stats.signed += 1;
        if (signed.statusCode !== 200) stats.signFailed.push(`${signed.statusCode} ${signed.body}`);
        else stats.kids.add(signed.json().kid as string);
        await sleep(5);
      }
    });
    const loadDone = Promise.all(loops);
    t.after(() => {
      stop = true;
      return loadDone;
    });

    await sleep(300);
    const killedAt = Date.now();
    assert.equal(await sentinel.killPrimary(), oldPrimary);
    await waitUntil('a replica to see the store down', () => apps.some((app) => app.store.state() === 'down'), 3000, 10);
    const newPrimary = await sentinel.waitForFailover(oldPrimary, 20_000);
    const failoverMs = Date.now() - killedAt;
    assert.notEqual(newPrimary, oldPrimary);

    // Nothing was lost or duplicated by the failover: the new primary holds exactly what the old one did.
    assert.deepEqual(await sentinel.node(newPrimary).hgetall(keysKey), before);

    // The admin retries the rotation until the store is back (StoreUnavailable while reconnecting, then success).
    const { attempts } = await rotateWhenBack(a.app, 'default', 15_000);
    const promoted = a.app.keys.view('default')!.keys.find((k) => k.state === 'next')!.kid;
    // Both subscribers follow the failover (ioredis resubscribes on the new primary): a change made on b then
    // reaches a through pub/sub (its poll interval is 60 s).
    await waitUntil('both replicas to reconnect', () => apps.every((app) => app.store.state() === 'up'), 10_000);
    const channel = `${prefix}events`;
    await waitUntil('both subscribers to be back', async () => Number(((await sentinel.node(newPrimary).call('PUBSUB', 'NUMSUB', channel)) as [string, number])[1]) === 2, 10_000);
    await b.app.keys.rotate('default', { force: true });
    const rotatedAt = Date.now();
    await waitUntil('a to see b\'s rotation', () => a.app.keys.view('default')!.active.kid === promoted, 1000, 10);
    const propagationMs = Date.now() - rotatedAt;
    await sleep(200);
    stop = true;
    await loadDone;

    assert.deepEqual(stats.jwksFailed, [], 'every JWKS request was answered (from memory)');
    assert.deepEqual(stats.signFailed, [], 'signing never stopped (cached active key)');
    assert.ok(stats.jwks > 50 && stats.signed > 50, `load ran (${stats.jwks} JWKS, ${stats.signed} signatures)`);
    for (const kid of [activeBefore, nextBefore, promoted]) assert.ok(stats.kids.has(kid), `signed with ${kid} in turn`);
    for (const app of apps) {
      const res = await sign(app);
      assert.equal(decodeProtectedHeader(res.json().client_assertion).kid, promoted, 'both sign with the one active key');
      assert.equal(await etag(app), await etag(a.app));
    }

    const stored = records(await sentinel.node(newPrimary).hgetall(keysKey));
    const kids = stored.map((r) => r.kid);
    assert.equal(new Set(kids).size, kids.length, 'no kid twice');
    assert.equal(stored.length, 4, 'the two keys from before plus one new key per rotation');
    for (const kid of Object.keys(before)) assert.ok(kids.includes(kid), `key ${kid} kept`);
    assert.deepEqual(stored.filter((r) => r.state === 'active').map((r) => r.kid), [promoted], 'exactly one active key');
    assert.deepEqual(stored.filter((r) => r.state === 'retired').map((r) => r.kid).sort(), [activeBefore, nextBefore].sort());
    assert.equal(stored.filter((r) => r.state === 'next').length, 1);
    t.diagnostic(`failover ${failoverMs} ms; rotation took ${attempts} attempt(s); pub/sub b->a ${propagationMs} ms; ${stats.jwks} JWKS + ${stats.signed} signatures, 0 failed`);
  });
});

test('READONLY after the primary is demoted under the store: store_unavailable, reconnect, and it works once a primary is back', async (t) => {
  // No 5 s wait before a diskless full sync (Redis 7's default), either way round.
  const primary = await startRedis(['--repl-diskless-sync-delay', '0']);
  t.after(() => primary.close());
  const other = await startRedis(['--repl-diskless-sync-delay', '0']);
  t.after(() => other.close());
  const { app } = await buildTestApp({ ...BASE_ENV, REDIS_URL: primary.url, REDIS_KEY_PREFIX: newPrefix(), API_CLIENTS_FILE: CLIENTS_FILE });
  t.after(() => app.close());
  const jwks = (await app.public.inject({ url: '/.well-known/jwks.json' })).body;
  const connectionId = async () => {
    const list = (await primary.client.call('CLIENT', 'LIST', 'TYPE', 'normal')) as string;
    return /id=(\d+) .*name=jwks-signer /.exec(list)?.[1];
  };
  const before = await connectionId();
  assert.ok(before);

  // A manual failover done behind the client's back: the other server takes the data and becomes the
  // primary; the old primary is demoted while the client's connection to it stays open.
  await other.client.call('REPLICAOF', '127.0.0.1', String(primary.port));
  await waitUntil('the other server to sync', async () => /master_link_status:up/.test(await other.client.info('replication')), 5000);
  await other.client.call('REPLICAOF', 'NO', 'ONE');
  await primary.client.call('REPLICAOF', '127.0.0.1', String(other.port));

  const rotate = await app.internal.inject({ method: 'POST', url: '/v1/keys/rotate', headers: bearer(TOKENS.admin), payload: { force: true } });
  assert.equal(rotate.statusCode, 503, rotate.body);
  assert.equal(rotate.json().code, 'store_unavailable');
  assert.equal((await app.public.inject({ url: '/.well-known/jwks.json' })).body, jwks, 'JWKS from memory');
  assert.equal((await sign(app)).statusCode, 200, 'signing unaffected');
  // reconnectOnError: the READONLY reply dropped the connection (Sentinel would now name the new primary).
  await waitUntil('the store to reconnect', async () => {
    const id = await connectionId();
    return id !== undefined && id !== before;
  }, 5000);

  await primary.client.call('REPLICAOF', 'NO', 'ONE');
  await rotateWhenBack(app, 'default', 5000);
  assert.notEqual((await app.public.inject({ url: '/.well-known/jwks.json' })).body, jwks);
});

describe('Redis Cluster', () => {
  let cluster: ClusterSetup;
  let keySetsFile: string;
  const SETS = ['default', 'alpha', 'beta', 'gamma', 'delta', 'epsilon'];
  before(async () => {
    cluster = await startCluster();
    const dir = mkdtempSync(join(tmpdir(), 'jwks-signer-sets-'));
    keySetsFile = join(dir, 'key-sets.yaml');
    writeFileSync(keySetsFile, `keySets:\n${SETS.map((s) => `  ${s}: { alg: ES256 }`).join('\n')}\n`);
  });
  after(async () => {
    await cluster?.close();
    if (keySetsFile) rmSync(join(keySetsFile, '..'), { recursive: true, force: true });
  });

  const clusterEnv = (prefix: string, extra: Record<string, string> = {}) => ({
    ...BASE_ENV,
    REDIS_KEY_PREFIX: prefix,
    API_CLIENTS_FILE: CLIENTS_FILE,
    KEY_SETS_FILE: keySetsFile,
    KEY_ENCRYPTION_KEYS: TEST_KEK,
    ...extra,
  });

  test('each set lives in one slot, the sets spread over the primaries; rotation and signing work', async (t) => {
    const prefix = newPrefix();
    const { app } = await buildTestApp(clusterEnv(prefix, { REDIS_CLUSTER_NODES: cluster.nodesEnv, REDIS_PASSWORD: cluster.password }));
    t.after(() => app.close());
    assert.equal(app.store.state(), 'up');
    const owners = new Set<number>();
    const slots = new Set<number>();
    for (const set of SETS) {
      const names = ['keys', 'meta', 'lock'].map((n) => `${prefix}{${set}}:${n}`);
      const keyslots = await Promise.all(names.map((n) => cluster.keyslot(n)));
      assert.equal(new Set(keyslots).size, 1, `${set}: keys, meta and lock share a slot`);
      assert.equal(keyslots[0], await cluster.keyslot(set), `${set}: the slot of the hash tag {${set}}`);
      slots.add(keyslots[0]!);
      const owner = await cluster.ownerOf(keyslots[0]!);
      owners.add(owner);
      // The records are on the primary that owns the slot, written there by the Lua commit.
      assert.equal(await cluster.node(owner).hlen(names[0]!), 2, `${set}: active + next on node ${owner}`);
      assert.equal(await cluster.node(owner).hget(names[1]!, 'generation'), '1');
    }
    assert.equal(slots.size, SETS.length, 'one slot per set');
    assert.ok(owners.size >= 2, `the sets spread over ${owners.size} primaries`);

    for (const set of SETS) {
      const before = app.keys.view(set)!;
      const next = before.keys.find((k) => k.state === 'next')!.kid;
      const result = await app.keys.rotate(set, { force: true });
      assert.equal(result.changed, true);
      const res = await sign(app, set);
      assert.equal(res.statusCode, 200, res.body);
      assert.equal(decodeProtectedHeader(res.json().client_assertion).kid, next, `${set}: signs with the promoted key`);
      const slot = await cluster.keyslot(set);
      const stored = records(await cluster.node(await cluster.ownerOf(slot)).hgetall(`${prefix}{${set}}:keys`));
      assert.equal(stored.length, 3);
      assert.deepEqual(stored.filter((r) => r.state === 'active').map((r) => r.kid), [next]);
    }
    // The lock was taken and released on the set's slot, nothing else was written.
    const written: string[] = [];
    for (const port of cluster.ports) written.push(...(await cluster.node(port).keys(`${prefix}*`)));
    assert.deepEqual(written.sort(), [`${prefix}audit`, ...SETS.flatMap((s) => [`${prefix}{${s}}:keys`, `${prefix}{${s}}:meta`])].sort(), 'the sets and the audit stream');
  });

  test('pub/sub: a change on one instance reaches another within a second, for sets on every primary', async (t) => {
    const prefix = newPrefix();
    const seed = cluster.nodesEnv.split(',')[2]!;
    const a = await buildTestApp(clusterEnv(prefix, { REDIS_CLUSTER_NODES: cluster.nodesEnv, REDIS_PASSWORD: cluster.password }));
    t.after(() => a.app.close());
    // b knows one seed node only (discovers the rest) and takes its credentials from REDIS_URL.
    const b = await buildTestApp(clusterEnv(prefix, { REDIS_CLUSTER_NODES: seed, REDIS_URL: `redis://:${cluster.password}@ignored.invalid:6379` }));
    t.after(() => b.app.close());
    for (const set of SETS) assert.equal(await etag(b.app, set), await etag(a.app, set));
    for (const set of SETS) {
      await a.app.keys.rotate(set, { force: true });
      const started = Date.now();
      await waitUntil(`b to see the rotation of ${set}`, async () => (await etag(b.app, set)) === (await etag(a.app, set)), 1000, 10);
      assert.ok(Date.now() - started < 1000);
    }
    // And the other way round, on the default set.
    const kid = b.app.keys.view('default')!.keys.find((k) => k.state === 'next')!.kid;
    await b.app.keys.rotate('default', { force: true });
    await waitUntil('a to see b\'s rotation', () => a.app.keys.view('default')!.active.kid === kid, 1000, 10);
  });

  test('nodes lost: the subscriber moves to a live node, then backs off; the store fails fast; JWKS, signing and close() go on', async (t) => {
    const own = await startCluster();
    t.after(() => own.close());
    const prefix = newPrefix();
    const { app } = await buildTestApp(clusterEnv(prefix, { REDIS_CLUSTER_NODES: own.nodesEnv, REDIS_PASSWORD: own.password }));
    t.after(() => app.close());
    // A second pair of connections, to count the subscriber's reconnection attempts.
    const probe = connectRedis({ mode: 'cluster', nodes: own.ports.map((port) => ({ host: '127.0.0.1', port })), password: own.password, db: 0, tls: false });
    t.after(() => {
      probe.client.disconnect();
      probe.subscriber.disconnect();
    });
    for (const c of [probe.client, probe.subscriber]) c.on('error', () => undefined);
    let reconnects = 0;
    probe.subscriber.on('reconnecting', () => (reconnects += 1));
    await probe.subscriber.subscribe('probe');

    const channel = `${prefix}events`;
    const subscribedOn = async (ports: number[]) => {
      const counts = await Promise.all(ports.map(async (p) => Number(((await own.node(p).call('PUBSUB', 'NUMSUB', channel)) as [string, number])[1])));
      return ports.filter((_, i) => counts[i]! > 0);
    };
    const [first] = await subscribedOn(own.ports);
    assert.ok(first, 'the app subscribed on one node');
    await own.kill(first);
    const live = own.ports.filter((p) => p !== first);
    await waitUntil('the subscriber to resubscribe on a live node', async () => (await subscribedOn(live)).length === 1, 8000, 50);

    const jwks = (await app.public.inject({ url: '/.well-known/jwks.json' })).body;
    for (const port of live) await own.kill(port);
    const outageStart = reconnects;
    const started = Date.now();
    const rotate = await app.internal.inject({ method: 'POST', url: '/v1/keys/rotate', headers: bearer(TOKENS.admin), payload: { force: true } });
    assert.equal(rotate.statusCode, 503);
    assert.equal(rotate.json().code, 'store_unavailable');
    assert.ok(Date.now() - started < 3000, 'fails fast instead of queueing');
    await waitUntil('the store to be seen as down', () => app.store.state() === 'down', 5000, 20);
    assert.equal((await app.public.inject({ url: '/.well-known/jwks.json' })).body, jwks, 'JWKS from memory');
    assert.equal((await sign(app)).statusCode, 200, 'signing with the cached key');
    await sleep(2000);
    assert.ok(reconnects - outageStart <= 8, `the subscriber backs off while every node is down (${reconnects - outageStart} attempts in ~2 s)`);
    const closing = await Promise.race([app.close().then(() => true), sleep(5000).then(() => false)]);
    assert.equal(closing, true, 'close() finished');
  });
});

