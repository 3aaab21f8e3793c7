// The public rate limit: fixed windows counted in memory, shared by replicas through batched reconciliation
// in a real Redis (RATE_LIMIT_SHARED), and local counting when Redis is down.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { App } from '../src/app.js';
import { buildTestApp, FakeClock } from './helpers/app.js';
import { type RedisServer, startRedis } from './helpers/redis.js';

const JWKS = '/.well-known/jwks.json';
const from = (app: App, ip: string, url = JWKS) => app.public.inject({ method: 'GET', url, remoteAddress: ip });
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let redis: RedisServer;
before(async () => {
  redis = await startRedis();
});
after(() => redis.close());

async function replicas(t: { after(fn: () => unknown): void }, env: Record<string, string>, clock = new FakeClock()): Promise<[App, App]> {
  const a = await buildTestApp({ REDIS_URL: redis.url, RATE_LIMIT_SYNC_INTERVAL: '50ms', ...env }, { clock });
  const b = await buildTestApp({ REDIS_URL: redis.url, RATE_LIMIT_SYNC_INTERVAL: '50ms', ...env }, { clock });
  t.after(() => Promise.all([a.app.close(), b.app.close()]));
  return [a.app, b.app];
}

test('a window ends: the refused address is served again; the window is counted per address', async (t) => {
  const clock = new FakeClock(Math.floor(Date.now() / 60_000) * 60_000);
  const { app } = await buildTestApp({ RATE_LIMIT_MAX: '2', RATE_LIMIT_WINDOW: '1m' }, { clock });
  t.after(() => app.close());
  for (let i = 0; i < 2; i++) assert.equal((await from(app, '192.0.2.9')).statusCode, 200);
  const refused = await from(app, '192.0.2.9', '/unknown');
  assert.equal(refused.statusCode, 429, 'unknown paths count and are refused too');
  assert.equal(refused.json().code, 'rate_limited');
  assert.equal(refused.headers['retry-after'], '60');
  clock.advance(30_000);
  assert.equal((await from(app, '192.0.2.9')).headers['retry-after'], '30');
  clock.advance(30_000);
  assert.equal((await from(app, '192.0.2.9')).statusCode, 200, 'a new window');
});

test('shared limit: a client spread over two replicas is refused by both once their counts are reconciled', async (t) => {
  const prefix = `rl-${Date.now()}:`;
  const [a, b] = await replicas(t, { RATE_LIMIT_MAX: '100', REDIS_KEY_PREFIX: prefix });
  const ip = '198.51.100.20';
  // Each replica alone sees 60 of the 100 allowed: both serve them. Counting alone, each would serve 40 more.
  for (let i = 0; i < 60; i++) {
    assert.equal((await from(a, ip)).statusCode, 200);
    assert.equal((await from(b, ip)).statusCode, 200);
  }
  // Within a reconcile interval (50 ms) plus slack, both learn that the client sent 120: bounded loop.
  let served = 0;
  let refusedBoth = false;
  for (let i = 0; i < 80 && !refusedBoth; i++) {
    const [ra, rb] = await Promise.all([from(a, ip), from(b, ip)]);
    served += Number(ra.statusCode === 200) + Number(rb.statusCode === 200);
    for (const res of [ra, rb]) assert.ok([200, 429].includes(res.statusCode), `status ${res.statusCode}`);
    refusedBoth = ra.statusCode === 429 && rb.statusCode === 429;
    if (!refusedBoth) await pause(25);
  }
  assert.ok(refusedBoth, 'both replicas refuse the client');
  assert.ok(served < 40, `only the requests of about one interval pass before reconciliation (${served}), not 80`);
  const refused = await from(a, ip);
  assert.equal(refused.json().code, 'rate_limited');
  assert.ok(Number(refused.headers['retry-after']) > 0);
  assert.equal((await from(a, '198.51.100.21')).statusCode, 200, 'another address keeps its own budget');
  assert.equal((await from(b, '198.51.100.21')).statusCode, 200);
  const keys = await redis.client.keys(`${prefix}ratelimit:*`);
  assert.equal(keys.length, 1, 'one hash per window');
  assert.ok(Number(await redis.client.hget(keys[0]!, ip)) >= 120);
  assert.ok((await redis.client.pttl(keys[0]!)) > 0, 'the window hash expires');
});

test('an address far below the limit costs Redis nothing; it is reported once 1% of the limit is pending', async (t) => {
  const prefix = `rl-quiet-${Date.now()}:`;
  const [a] = await replicas(t, { RATE_LIMIT_MAX: '1000', REDIS_KEY_PREFIX: prefix });
  const ip = '198.51.100.40';
  const stored = async () => {
    const keys = await redis.client.keys(`${prefix}ratelimit:*`);
    return keys.length === 0 ? null : redis.client.hget(keys[0]!, ip);
  };
  for (let i = 0; i < 9; i++) assert.equal((await from(a, ip)).statusCode, 200);
  await pause(200); // four intervals: nothing to report below 10 (1% of 1000)
  assert.equal(await stored(), null);
  assert.equal((await from(a, ip)).statusCode, 200);
  let reported: string | null = null;
  for (let i = 0; i < 40 && reported === null; i++) {
    await pause(25);
    reported = await stored();
  }
  assert.equal(reported, '10', 'the ten requests are reported together');
});

test('RATE_LIMIT_SHARED=false: each replica counts alone', async (t) => {
  const [a, b] = await replicas(t, { RATE_LIMIT_MAX: '3', RATE_LIMIT_SHARED: 'false', REDIS_KEY_PREFIX: `rl-local-${Date.now()}:` });
  for (let i = 0; i < 3; i++) {
    assert.equal((await from(a, '192.0.2.30')).statusCode, 200);
    assert.equal((await from(b, '192.0.2.30')).statusCode, 200);
  }
  await pause(150);
  assert.equal((await from(a, '192.0.2.30')).statusCode, 429);
  assert.equal((await from(b, '192.0.2.30')).statusCode, 429);
  assert.deepEqual(await redis.client.keys('rl-local-*ratelimit:*'), []);
});

test('Redis down: the JWKS is still served and each replica limits by its own counts, without errors', async (t) => {
  const [a, b] = await replicas(t, { RATE_LIMIT_MAX: '5', REDIS_KEY_PREFIX: `rl-down-${Date.now()}:` });
  await redis.stop();
  t.after(() => redis.start());
  const statuses: number[] = [];
  for (let i = 0; i < 7; i++) {
    statuses.push((await from(a, '203.0.113.5')).statusCode);
    if (i % 2 === 0) await pause(60); // reconciliation attempts run meanwhile and fail
  }
  assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429, 429]);
  for (let i = 0; i < 5; i++) assert.equal((await from(b, '203.0.113.6')).statusCode, 200);
  assert.equal((await from(b, '203.0.113.6')).statusCode, 429);
  assert.equal((await from(b, '203.0.113.7')).statusCode, 200, 'other addresses are served');
});
