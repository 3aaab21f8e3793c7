// Faults with real processes and a real Redis: clock skew between replicas, SIGKILL mid-rotation, SIGTERM under load.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { after, before, test } from 'node:test';
import type { KeyRecord } from '../src/keys/types.js';
import { buildTestApp, FakeClock, TEST_KEK } from './helpers/app.js';
import { clientsFile } from './helpers/clients.js';
import { freePort, type RedisServer, startRedis } from './helpers/redis.js';

let redis: RedisServer;
before(async () => {
  redis = await startRedis();
});
after(() => redis.close());

async function records(prefix: string): Promise<KeyRecord[]> {
  return Object.values(await redis.client.hgetall(`${prefix}{default}:keys`)).map((v) => JSON.parse(v) as KeyRecord);
}

const TOKEN = 'fault-test-token';

async function startServer(env: Record<string, string>): Promise<{ child: ChildProcess; port: number; internal: number; exited: Promise<number | null> }> {
  const [port, internal] = [await freePort(), await freePort()];
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    env: {
      ...process.env,
      PORT: String(port),
      INTERNAL_PORT: String(internal),
      HOST: '127.0.0.1',
      REDIS_URL: redis.url,
      KEY_ENCRYPTION_KEYS: TEST_KEK,
      API_TOKEN_SHA256: createHash('sha256').update(TOKEN).digest('hex'),
      LOG_LEVEL: 'warn',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.status === 200, () => false);
    if (ready) break;
    if (Date.now() > deadline) throw new Error('server did not become ready');
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, port, internal, exited };
}

test('two replicas whose clocks are 2 minutes apart rotate concurrently: always exactly one active key', async (t) => {
  const prefix = 'skew:';
  const env = { REDIS_URL: redis.url, REDIS_KEY_PREFIX: prefix, API_CLIENTS_FILE: clientsFile(), KEY_ALG: 'ES256', KEY_ROTATION_PERIOD: '60s', KEY_PREPUBLISH_PERIOD: '10s', KEY_RETIRE_GRACE: '10m', TOKEN_MAX_TTL: '30s', TOKEN_DEFAULT_TTL: '10s' };
  const start = Date.now();
  const ahead = new FakeClock(start + 120_000);
  const behind = new FakeClock(start);
  const a = await buildTestApp(env, { clock: ahead });
  const b = await buildTestApp(env, { clock: behind });
  t.after(() => Promise.all([a.app.close(), b.app.close()]));
  const seen = new Set<string>();
  for (let step = 0; step < 16; step++) {
    ahead.advance(15_000);
    behind.advance(15_000);
    await Promise.all([a.app.keys.tick(), b.app.keys.tick()]);
    const stored = await records(prefix);
    assert.equal(stored.filter((r) => r.state === 'active').length, 1, `step ${step}: one active key`);
    assert.equal(stored.filter((r) => r.state === 'next').length, 1, `step ${step}: one next key`);
    for (const r of stored) seen.add(r.kid);
    for (const kid of seen) assert.ok(stored.some((r) => r.kid === kid), `step ${step}: ${kid} not lost within its grace`);
  }
  const retired = (await records(prefix)).filter((r) => r.state === 'retired').sort((x, y) => x.retiredAt! - y.retiredAt!);
  assert.ok(retired.length >= 3, `rotations happened (${retired.length})`);
});

test('a replica SIGKILLed in the middle of a rotation: the lock expires, another replica rotates, nothing half-written', async (t) => {
  const prefix = 'kill:';
  const env = { REDIS_KEY_PREFIX: prefix, KEY_RSA_BITS: '4096', ROTATION_LOCK_TTL: '3s' };
  const victim = await startServer(env);
  t.after(() => victim.child.kill('SIGKILL'));
  const before = await records(prefix);
  const generation = await redis.client.hget(`${prefix}{default}:meta`, 'generation');
  const rotation = fetch(`http://127.0.0.1:${victim.internal}/v1/keys/rotate`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ force: true }),
  }).catch((err: Error) => err);
  const deadline = Date.now() + 10_000;
  while (!(await redis.client.exists(`${prefix}{default}:lock`)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
  victim.child.kill('SIGKILL');
  await victim.exited;
  assert.ok((await rotation) instanceof Error, 'the request died with the process');
  assert.equal(await redis.client.hget(`${prefix}{default}:meta`, 'generation'), generation, 'nothing was committed');
  assert.deepEqual(await records(prefix), before, 'no half-written key');
  assert.ok((await redis.client.pttl(`${prefix}{default}:lock`)) > 0, 'the dead replica left its lock, with an expiry');

  const survivor = await buildTestApp({ REDIS_URL: redis.url, API_CLIENTS_FILE: clientsFile(), ...env });
  t.after(() => survivor.app.close());
  const result = await survivor.app.keys.rotate('default', { force: true });
  assert.equal(result.changed, true, 'rotated once the lock expired');
  const after = await records(prefix);
  assert.equal(after.filter((r) => r.state === 'active').length, 1);
  assert.equal(after.find((r) => r.state === 'active')!.kid, before.find((r) => r.state === 'next')!.kid);
  assert.equal(after.length, before.length + 1);
  assert.equal(Number(await redis.client.hget(`${prefix}{default}:meta`, 'generation')), Number(generation) + 1);
});

test('SIGTERM under load: every request in flight is answered, then the process exits 0', async () => {
  const server = await startServer({ REDIS_KEY_PREFIX: 'term:', KEY_ALG: 'ES256' });
  const body = JSON.stringify({ client_id: 'c', audience: 'https://a/token' });
  const inFlight = Array.from({ length: 40 }, (_, i) => {
    const isJwks = i % 2 === 0;
    const req = httpRequest({
      host: '127.0.0.1',
      port: isJwks ? server.port : server.internal,
      path: isJwks ? '/.well-known/jwks.json' : '/v1/assertions',
      method: isJwks ? 'GET' : 'POST',
      headers: isJwks
        ? {}
        : { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    });
    const status = new Promise<number | string>((resolve) => {
      req.on('response', (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
    if (isJwks) req.end();
    else req.write(body.slice(0, 5));
    return { req, status, isJwks };
  });
  await new Promise((r) => setTimeout(r, 300));
  server.child.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 200));
  for (const { req, isJwks } of inFlight) if (!isJwks) req.end(body.slice(5));
  const statuses = await Promise.all(inFlight.map((r) => r.status));
  assert.deepEqual(statuses.filter((s) => s !== 200), [], 'no reset, no refusal for requests already in flight');
  assert.equal(await server.exited, 0);
});
