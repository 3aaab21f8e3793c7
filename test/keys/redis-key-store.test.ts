import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { decodeProtectedHeader } from 'jose';
import jwt from 'jsonwebtoken';
import jwksRsa from 'jwks-rsa';
import { KeyStoreIntegrityError } from '../../src/errors.js';
import { associatedData, createKeyEncryption } from '../../src/keys/key-encryption.js';
import { openPrivateKey } from '../../src/keys/key-generation.js';
import type { KeyRecord } from '../../src/keys/types.js';
import { bearer, buildTestApp, FakeClock, TEST_KEK, type TestApp } from '../helpers/app.js';
import { TOKENS, clientsFile } from '../helpers/clients.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';

let redis: RedisServer;
before(async () => {
  redis = await startRedis();
});
after(() => redis.close());

let prefixes = 0;
const newPrefix = () => `t${++prefixes}-${randomBytes(3).toString('hex')}:`;

function env(prefix: string, extra: Record<string, string> = {}) {
  return { REDIS_URL: redis.url, REDIS_KEY_PREFIX: prefix, API_CLIENTS_FILE: clientsFile(), ...extra };
}

async function rawDump(prefix: string): Promise<Record<string, Record<string, string>>> {
  const names = (await redis.client.keys(`${prefix}*`)).sort();
  const out: Record<string, Record<string, string>> = {};
  for (const name of names) {
    const type = await redis.client.type(name);
    if (type === 'hash') out[name] = await redis.client.hgetall(name);
    else if (type === 'stream') out[name] = { entries: JSON.stringify(await redis.client.xrange(name, '-', '+')) };
    else out[name] = { value: String(await redis.client.get(name)) };
  }
  return out;
}

async function storedRecords(prefix: string, server: RedisServer = redis): Promise<KeyRecord[]> {
  const hash = await server.client.hgetall(`${prefix}{default}:keys`);
  return Object.values(hash).map((v) => JSON.parse(v) as KeyRecord);
}

async function waitFor(what: string, check: () => Promise<boolean> | boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`timed out waiting for ${what}`);
}

const etagOf = async ({ app }: TestApp) => (await app.public.inject({ url: '/.well-known/jwks.json' })).headers.etag;

test('keys live under the prefix with a hash tag per set; raw values hold no private key in the clear', async (t) => {
  const prefix = newPrefix();
  const { app } = await buildTestApp(env(prefix));
  t.after(() => app.close());
  const dump = await rawDump(prefix);
  assert.deepEqual(Object.keys(dump), [`${prefix}audit`, `${prefix}{default}:keys`, `${prefix}{default}:meta`], 'the set and the audit stream');
  const text = JSON.stringify(dump);
  assert.doesNotMatch(text, /PRIVATE KEY|-----BEGIN/);
  const encryption = createKeyEncryption([{ id: 'test', key: Buffer.from(TEST_KEK.slice('test:'.length), 'base64') }]);
  const records = await storedRecords(prefix);
  assert.equal(records.length, 2);
  for (const record of records) {
    assert.equal(record.privateKey?.kek, 'test');
    const key = await openPrivateKey(record, encryption);
    const jwk = key.export({ format: 'jwk' });
    for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi'] as const) {
      assert.ok(jwk[member] && jwk[member]!.length > 20);
      assert.equal(text.includes(jwk[member]!), false, `${member} is not stored in the clear`);
      assert.equal(text.includes(Buffer.from(jwk[member]!, 'base64url').toString('base64').slice(0, 40)), false);
    }
    const der = key.export({ format: 'der', type: 'pkcs8' });
    assert.equal(text.includes(der.toString('base64').slice(0, 60)), false);
    assert.equal(text.includes(der.toString('hex').slice(0, 60)), false);
  }
});

test('a restarted instance reuses the stored keys; a tampered ciphertext is refused, not replaced', async (t) => {
  const prefix = newPrefix();
  const first = await buildTestApp(env(prefix));
  const etag = await etagOf(first);
  await first.app.close();
  const second = await buildTestApp(env(prefix));
  t.after(() => second.app.close());
  assert.equal(await etagOf(second), etag, 'same keys after a restart');

  const tamperedPrefix = newPrefix();
  const victim = await buildTestApp(env(tamperedPrefix));
  await victim.app.close();
  const [record] = (await storedRecords(tamperedPrefix)).filter((r) => r.state === 'active');
  const sealed = record!.privateKey!;
  const ct = Buffer.from(sealed.ct, 'base64');
  ct[10] = ct[10]! ^ 0xff;
  await redis.client.hset(`${tamperedPrefix}{default}:keys`, record!.kid, JSON.stringify({ ...record, privateKey: { ...sealed, ct: ct.toString('base64') } }));
  const before = await rawDump(tamperedPrefix);
  await assert.rejects(buildTestApp(env(tamperedPrefix)), (err: unknown) => err instanceof KeyStoreIntegrityError && err.code === 'decryption_failed');
  assert.deepEqual(await rawDump(tamperedPrefix), before);
});

test('a stored private key that does not match its kid is never used: start-up reads it, the first signature refuses it', async (t) => {
  // Sealed correctly (right KEK, right set and kid) but another key pair: only parsing it shows the mismatch. Start-up
  // only decrypts (a wrong KEK or an altered value stops it, above); the key is parsed and matched when it first signs.
  const prefix = newPrefix();
  const { app } = await buildTestApp(env(prefix));
  await app.close();
  const [record] = (await storedRecords(prefix)).filter((r) => r.state === 'active');
  const { privateKey: other } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const der = other.export({ format: 'der', type: 'pkcs8' });
  const sealed = createKeyEncryption([{ id: 'test', key: Buffer.from(TEST_KEK.slice('test:'.length), 'base64') }]).encrypt(associatedData('default', record!.kid), der);
  await redis.client.hset(`${prefix}{default}:keys`, record!.kid, JSON.stringify({ ...record, privateKey: sealed }));
  const restarted = await buildTestApp(env(prefix));
  t.after(() => restarted.app.close());
  assert.equal((await restarted.app.public.inject({ url: '/.well-known/jwks.json' })).statusCode, 200, 'the public keys are still served');
  const res = await restarted.app.internal.inject({
    method: 'POST',
    url: '/v1/assertions',
    headers: { ...bearer(TOKENS.broad), 'content-type': 'application/json' },
    payload: { client_id: 'client-1', audience: 'https://erp.example.com/identity/connect/token' },
  });
  assert.equal(res.statusCode, 503);
  assert.equal(res.json().code, 'no_active_key');
});

test('a wrong or missing key-encryption key refuses to start and leaves the stored keys untouched', async (t) => {
  const prefix = newPrefix();
  const { app } = await buildTestApp(env(prefix));
  await app.close();
  const before = await rawDump(prefix);
  const wrongSameId = `test:${randomBytes(32).toString('base64')}`;
  await assert.rejects(buildTestApp(env(prefix, { KEY_ENCRYPTION_KEYS: wrongSameId })), (err: unknown) => err instanceof KeyStoreIntegrityError && err.code === 'decryption_failed');
  const otherId = `other:${randomBytes(32).toString('base64')}`;
  await assert.rejects(buildTestApp(env(prefix, { KEY_ENCRYPTION_KEYS: otherId })), (err: unknown) => err instanceof KeyStoreIntegrityError && err.code === 'unknown_encryption_key');
  assert.deepEqual(await rawDump(prefix), before, 'nothing was written');

  const rotatedKek = await buildTestApp(env(prefix, { KEY_ENCRYPTION_KEYS: `${otherId},${TEST_KEK}` }));
  t.after(() => rotatedKek.app.close());
  assert.equal(rotatedKek.app.keys.view('default')!.generation, Number(before[`${prefix}{default}:meta`]!.generation), 'old keys read with the old KEK');
  await rotatedKek.app.keys.rotate('default', { force: true });
  const newest = (await storedRecords(prefix)).find((r) => r.state === 'next')!;
  assert.equal(newest.privateKey!.kek, 'other', 'new keys are encrypted under the first KEK');
});

test('three instances forced to rotate at the same moment: one active key, the same JWKS, no key lost', async (t) => {
  const prefix = newPrefix();
  const clock = new FakeClock();
  const extra = { KEY_ALG: 'ES256', KEY_ROTATION_PERIOD: '20s', KEY_PREPUBLISH_PERIOD: '5s', KEY_RETIRE_GRACE: '1h', TOKEN_MAX_TTL: '30s', TOKEN_DEFAULT_TTL: '10s' };
  const instances = await Promise.all([0, 1, 2].map(() => buildTestApp(env(prefix, extra), { clock })));
  t.after(() => Promise.all(instances.map((i) => i.app.close())));
  const everKids = new Set<string>();
  const initialRecords = await storedRecords(prefix);
  assert.equal(initialRecords.length, 2, 'three instances starting together made one active + one next, not three');

  for (let round = 0; round < 6; round++) {
    for (const r of await storedRecords(prefix)) everKids.add(r.kid);
    if (round % 2 === 0) {
      const results = await Promise.all(instances.map(({ app }) => app.keys.rotate('default', { force: true })));
      assert.equal(results.filter((r) => r.changed).length, 3, 'each forced rotation is applied in turn');
    } else {
      clock.advance(20_000);
      await Promise.all(instances.map(({ app }) => app.keys.tick()));
    }
    const records = await storedRecords(prefix);
    assert.equal(records.filter((r) => r.state === 'active').length, 1, `round ${round}: exactly one active key`);
    assert.equal(records.filter((r) => r.state === 'next').length, 1, `round ${round}: exactly one next key`);
    const stored = new Set(records.map((r) => r.kid));
    for (const kid of everKids) assert.ok(stored.has(kid), `round ${round}: key ${kid} was not lost`);
    await waitFor('every instance to publish the same JWKS', async () => new Set(await Promise.all(instances.map(etagOf))).size === 1);
    const active = records.find((r) => r.state === 'active')!.kid;
    for (const { app } of instances) {
      const res = await app.internal.inject({ method: 'POST', url: '/v1/assertions', headers: bearer(TOKENS.broad), payload: { client_id: 'c', audience: 'a' } });
      assert.equal(decodeProtectedHeader(res.json().client_assertion).kid, active, 'every instance signs with the one active key');
    }
  }
  const dueRound = await storedRecords(prefix);
  assert.ok(dueRound.length >= 8, 'retired keys are kept for their grace');
});

test('a change made on one instance reaches the others within a second (pub/sub), and polling catches up otherwise', async (t) => {
  const prefix = newPrefix();
  const a = await buildTestApp(env(prefix, { KEY_ALG: 'ES256' }));
  const b = await buildTestApp(env(prefix, { KEY_ALG: 'ES256', STORE_POLL_INTERVAL: '200ms' }));
  t.after(() => Promise.all([a.app.close(), b.app.close()]));
  assert.equal(await etagOf(a), await etagOf(b));
  await a.app.keys.rotate('default', { force: true });
  const started = Date.now();
  await waitFor('b to see the rotation', async () => (await etagOf(b)) === (await etagOf(a)), 1000);
  assert.ok(Date.now() - started < 1000);

  const record = (await storedRecords(prefix)).find((r) => r.state === 'retired')!;
  const res = await a.app.internal.inject({ method: 'POST', url: `/v1/keys/${record.kid}/revoke`, headers: { authorization: `Bearer ${TOKENS.admin}` } });
  assert.equal(res.statusCode, 200);
  await waitFor('b to drop the revoked key', async () => !(await b.app.public.inject({ url: '/.well-known/jwks.json' })).body.includes(record.kid), 1000);
});

test('Redis stopped mid-test: JWKS still served, signing continues, readiness says so; everything resumes after', async (t) => {
  const own = await startRedis();
  t.after(() => own.close());
  const prefix = newPrefix();
  const { app } = await buildTestApp({ ...env(prefix), REDIS_URL: own.url, KEY_ALG: 'RS256' });
  t.after(() => app.close());
  const { publicUrl } = await app.listen();
  const jwksBefore = (await app.public.inject({ url: '/.well-known/jwks.json' })).body;
  const kidsBefore = (await app.keys.view('default')!.keys).map((k) => k.kid).sort();

  await own.stop();
  await waitFor('the store to be seen as down', () => app.store.state() === 'down');

  const jwks = await app.public.inject({ url: '/.well-known/jwks.json' });
  assert.equal(jwks.statusCode, 200);
  assert.equal(jwks.body, jwksBefore, 'the last good JWKS is served from memory');
  const signed = await app.internal.inject({ method: 'POST', url: '/v1/assertions', headers: bearer(TOKENS.broad), payload: { client_id: 'c', audience: 'https://a/token' } });
  assert.equal(signed.statusCode, 200, 'signing continues with the cached active key');
  const key = await jwksRsa({ jwksUri: `${publicUrl}/.well-known/jwks.json` }).getSigningKey(signed.json().kid);
  jwt.verify(signed.json().client_assertion, key.getPublicKey(), { audience: 'https://a/token' });

  for (const server of [app.public, app.internal]) {
    const ready = await server.inject({ url: '/readyz' });
    assert.equal(ready.statusCode, 200, 'still able to serve: stays in the load balancer');
    assert.deepEqual(ready.json(), { status: 'degraded', store: 'down' });
  }
  const rotate = await app.internal.inject({ method: 'POST', url: '/v1/keys/rotate', headers: bearer(TOKENS.admin), payload: { force: true } });
  assert.equal(rotate.statusCode, 503);
  assert.equal(rotate.json().code, 'store_unavailable');
  await app.keys.tick();

  await own.start();
  await waitFor('the store to be seen as up', () => app.store.state() === 'up', 5000);
  await app.keys.tick();
  assert.deepEqual((await app.internal.inject({ url: '/readyz' })).json(), { status: 'ready', store: 'up' });
  const restored = await storedRecords(prefix, own);
  assert.deepEqual(restored.map((r) => r.kid).sort(), kidsBefore, 'the emptied Redis got the same keys back, not new ones');
  assert.equal((await app.public.inject({ url: '/.well-known/jwks.json' })).body, jwksBefore);
  const after = await app.internal.inject({ method: 'POST', url: '/v1/keys/rotate', headers: bearer(TOKENS.admin), payload: { force: true } });
  assert.equal(after.statusCode, 200, after.body);
});

test('Redis emptied under three replicas: one restores the last known set, none mints new keys', async (t) => {
  const prefix = newPrefix();
  const instances = await Promise.all([0, 1, 2].map(() => buildTestApp(env(prefix, { KEY_ALG: 'ES256' }))));
  t.after(() => Promise.all(instances.map((i) => i.app.close())));
  const kids = (await storedRecords(prefix)).map((r) => r.kid).sort();
  const generation = Number(await redis.client.hget(`${prefix}{default}:meta`, 'generation'));
  for (const name of await redis.client.keys(`${prefix}*`)) await redis.client.del(name);
  await Promise.all(instances.map(({ app }) => app.keys.tick()));
  assert.deepEqual((await storedRecords(prefix)).map((r) => r.kid).sort(), kids);
  assert.equal(Number(await redis.client.hget(`${prefix}{default}:meta`, 'generation')), generation + 1, 'restored once, at a higher generation');
  assert.equal(new Set(await Promise.all(instances.map(etagOf))).size, 1);
});

test('Redis down at start-up: not ready and nothing invented; ready once Redis appears', async (t) => {
  const own = await startRedis();
  t.after(() => own.close());
  await own.stop();
  const { app } = await buildTestApp({ ...env(newPrefix()), REDIS_URL: own.url, KEY_ALG: 'ES256' });
  t.after(() => app.close());
  const ready = await app.public.inject({ url: '/readyz' });
  assert.equal(ready.statusCode, 503);
  assert.deepEqual(ready.json(), { status: 'not_ready', store: 'down' });
  const jwks = await app.public.inject({ url: '/.well-known/jwks.json' });
  assert.equal(jwks.statusCode, 503);
  assert.equal(jwks.json().code, 'no_active_key');
  const sign = await app.internal.inject({ method: 'POST', url: '/v1/assertions', headers: bearer(TOKENS.broad), payload: { client_id: 'c', audience: 'a' } });
  assert.equal(sign.statusCode, 503);
  await own.start();
  await waitFor('the store to be seen as up', () => app.store.state() === 'up', 5000);
  await app.keys.tick();
  assert.equal((await app.public.inject({ url: '/readyz' })).statusCode, 200);
  assert.equal((await app.public.inject({ url: '/.well-known/jwks.json' })).statusCode, 200);
});

test('regression: closing while Redis is gone does not hang (it waited forever on QUIT)', async (t) => {
  const own = await startRedis();
  t.after(() => own.close());
  const { app } = await buildTestApp({ ...env(newPrefix()), REDIS_URL: own.url, KEY_ALG: 'ES256' });
  await own.stop();
  await waitFor('the store to be seen as down', () => app.store.state() === 'down');
  const closed = await Promise.race([app.close().then(() => true), new Promise((r) => setTimeout(() => r(false), 5000))]);
  assert.equal(closed, true, 'close() finished');
});

test('signing with cached keys while Redis is down stops after SIGN_WHILE_STORE_DOWN, and resumes with Redis', async (t) => {
  const own = await startRedis();
  t.after(() => own.close());
  const ctx = await buildTestApp({ ...env(newPrefix()), REDIS_URL: own.url, KEY_ALG: 'ES256', SIGN_WHILE_STORE_DOWN: '10m' });
  t.after(() => ctx.app.close());
  const sign = () => ctx.app.internal.inject({ method: 'POST', url: '/v1/assertions', headers: bearer(TOKENS.broad), payload: { client_id: 'c', audience: 'a' } });
  await own.stop();
  await waitFor('the store to be seen as down', () => ctx.app.store.state() === 'down');
  assert.equal((await sign()).statusCode, 200, 'within the limit');
  ctx.clock.advance(9 * 60_000);
  assert.equal((await sign()).statusCode, 200);
  ctx.clock.advance(2 * 60_000);
  const refused = await sign();
  assert.equal(refused.statusCode, 503);
  assert.equal(refused.json().code, 'store_unavailable');
  assert.equal((await ctx.app.public.inject({ url: '/.well-known/jwks.json' })).statusCode, 200, 'the JWKS is still served');
  await own.start();
  await waitFor('the store to be seen as up', () => ctx.app.store.state() === 'up', 5000);
  await ctx.app.keys.tick();
  assert.equal((await sign()).statusCode, 200, 'signing resumes');
});
