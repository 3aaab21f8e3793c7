import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bearer, buildTestApp } from './helpers/app.js';
import { TOKENS, clientsFile } from './helpers/clients.js';

test('audit: every signature, admin action, key event and lockout, newest first, paged; admin only', async (t) => {
  const { app, logs } = await buildTestApp({ API_CLIENTS_FILE: clientsFile(), KEY_ALG: 'ES256', AUTH_FAILURE_LIMIT: '2' });
  t.after(() => app.close());
  for (let i = 0; i < 3; i++) {
    const res = await app.internal.inject({ method: 'POST', url: '/v1/assertions', headers: bearer(TOKENS.broad), payload: { client_id: `c${i}`, audience: 'https://a/token' } });
    assert.equal(res.statusCode, 200);
  }
  await app.internal.inject({ method: 'POST', url: '/v1/keys/rotate', headers: bearer(TOKENS.admin), payload: { force: true } });
  for (let i = 0; i < 2; i++) await app.internal.inject({ url: '/v1/keys', headers: { authorization: 'Bearer nope' }, remoteAddress: '10.1.1.1' });

  const res = await app.internal.inject({ url: '/v1/audit?count=100', headers: bearer(TOKENS.admin) });
  assert.equal(res.statusCode, 200, res.body);
  const { entries } = res.json() as { entries: Array<Record<string, unknown>> };
  const events = entries.map((e) => e.event);
  assert.deepEqual(events.slice(0, 3), ['auth_lockout', 'admin_rotate', 'key_lifecycle'], 'newest first');
  assert.equal(events.filter((e) => e === 'sign').length, 3);
  const sign = entries.find((e) => e.event === 'sign' && e.iss === 'c0')!;
  for (const field of ['client', 'keySet', 'kid', 'jti', 'iss', 'sub', 'aud', 'exp', 'id', 'time']) assert.ok(field in sign, `sign entry has ${field}`);
  assert.equal(sign.client, 'broad');
  assert.equal(entries.find((e) => e.event === 'auth_lockout')!.address, '10.1.1.1');
  assert.equal(logs.filter((l) => l.includes('"audit":"sign"')).length, 3, 'and in the logs');

  const page1 = (await app.internal.inject({ url: '/v1/audit?count=2', headers: bearer(TOKENS.admin) })).json();
  assert.equal(page1.entries.length, 2);
  const page2 = (await app.internal.inject({ url: `/v1/audit?count=2&before=${page1.next_before}`, headers: bearer(TOKENS.admin) })).json();
  assert.deepEqual(page2.entries.map((e: { id: string }) => e.id), entries.slice(2, 4).map((e) => e.id));

  assert.equal((await app.internal.inject({ url: '/v1/audit', headers: bearer(TOKENS.broad) })).json().code, 'scope_denied');
  assert.equal((await app.internal.inject({ url: '/v1/audit?count=5000', headers: bearer(TOKENS.admin) })).json().code, 'invalid_request');
  assert.equal((await app.internal.inject({ url: '/v1/audit?before=x', headers: bearer(TOKENS.admin) })).json().code, 'invalid_request');
});

test('audit: the ring buffer keeps the newest AUDIT_MAX_ENTRIES entries', async (t) => {
  const { app } = await buildTestApp({ API_CLIENTS_FILE: clientsFile(), KEY_ALG: 'ES256', AUDIT_MAX_ENTRIES: '100' });
  t.after(() => app.close());
  for (let i = 0; i < 120; i++) {
    await app.internal.inject({ method: 'POST', url: '/v1/assertions', headers: bearer(TOKENS.broad), payload: { client_id: `c${i}`, audience: 'a' } });
  }
  const { entries } = (await app.internal.inject({ url: '/v1/audit?count=1000', headers: bearer(TOKENS.admin) })).json();
  assert.equal(entries.length, 100);
  assert.equal(entries[0].iss, 'c119');
});

test('audit on Redis: one stream for all replicas, paged, and signing goes on when the stream cannot be written', async (t) => {
  const { startRedis } = await import('./helpers/redis.js');
  const redis = await startRedis();
  t.after(() => redis.close());
  const env = { REDIS_URL: redis.url, API_CLIENTS_FILE: clientsFile(), KEY_ALG: 'ES256' };
  const a = await buildTestApp(env);
  const b = await buildTestApp(env);
  t.after(() => Promise.all([a.app.close(), b.app.close()]));
  for (const [app, iss] of [[a.app, 'from-a'], [b.app, 'from-b'], [a.app, 'from-a2']] as const) {
    await app.internal.inject({ method: 'POST', url: '/v1/assertions', headers: bearer(TOKENS.broad), payload: { client_id: iss, audience: 'a' } });
  }
  const deadline = Date.now() + 2000;
  let entries: Array<Record<string, unknown>> = [];
  while (Date.now() < deadline) {
    entries = (await b.app.internal.inject({ url: '/v1/audit', headers: bearer(TOKENS.admin) })).json().entries;
    if (entries.filter((e) => e.event === 'sign').length === 3) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.deepEqual(entries.filter((e) => e.event === 'sign').map((e) => e.iss), ['from-a2', 'from-b', 'from-a'], 'both replicas, newest first');
  assert.equal(await redis.client.type('jwks-signer:audit'), 'stream');
  const page = (await a.app.internal.inject({ url: '/v1/audit?count=1', headers: bearer(TOKENS.admin) })).json();
  const next = (await a.app.internal.inject({ url: `/v1/audit?count=1&before=${page.next_before}`, headers: bearer(TOKENS.admin) })).json();
  assert.equal(next.entries[0].id, entries[1]!.id);

  await redis.stop();
  const waitDown = Date.now() + 5000;
  while (a.app.store.state() !== 'down' && Date.now() < waitDown) await new Promise((r) => setTimeout(r, 20));
  const signed = await a.app.internal.inject({ method: 'POST', url: '/v1/assertions', headers: bearer(TOKENS.broad), payload: { client_id: 'during-outage', audience: 'a' } });
  assert.equal(signed.statusCode, 200, 'an unwritable audit stream does not stop signing');
  assert.ok(a.logs.some((l) => l.includes('"audit":"sign"') && l.includes('during-outage')), 'the log line is still written');
  const unreadable = await a.app.internal.inject({ url: '/v1/audit', headers: bearer(TOKENS.admin) });
  assert.equal(unreadable.json().code, 'store_unavailable');
});

test('the memory ring pages correctly across its wrap point', async () => {
  const { createMemoryAuditSink } = await import('../src/audit.js');
  const sink = createMemoryAuditSink(5);
  for (let i = 0; i < 12; i++) await sink.append({ id: `id-${i}`, time: '', event: 'e', n: i });
  const ids = (entries: Array<{ id: string }>) => entries.map((e) => e.id);
  assert.deepEqual(ids(await sink.read(10)), ['id-11', 'id-10', 'id-9', 'id-8', 'id-7']);
  assert.deepEqual(ids(await sink.read(2, 'id-10')), ['id-9', 'id-8']);
  assert.deepEqual(ids(await sink.read(10, 'id-8')), ['id-7']);
  assert.deepEqual(ids(await sink.read(10, 'id-3')), [], 'an id that has left the ring');
});

test('audit on Redis: 250 entries appended in one turn (3 batches) are all written, in order; a failed batch reports each of its entries', async (t) => {
  const { startRedis } = await import('./helpers/redis.js');
  const { createRedisAuditSink } = await import('../src/audit.js');
  const redis = await startRedis();
  t.after(() => redis.close());
  const sink = createRedisAuditSink(redis.client, 'audit-order', 1000, { maxBatch: 100 });
  for (let i = 0; i < 250; i++) sink.append({ event: 'sign', n: i, id: `x-${i}`, time: 't' });
  await sink.close!();
  const rows = await redis.client.xrange('audit-order', '-', '+');
  assert.deepEqual(
    rows.map(([, fields]) => JSON.parse(fields[1]!).n),
    Array.from({ length: 250 }, (_, i) => i),
  );
  assert.equal(JSON.parse(rows[0]![1][1]!).id, undefined, 'the stream id is the entry id');

  await redis.client.set('audit-wrong-type', 'a string');
  const failing = createRedisAuditSink(redis.client, 'audit-wrong-type', 1000);
  const failed: number[] = [];
  for (let i = 0; i < 3; i++) {
    failing.append({ event: 'sign', id: `y-${i}`, time: 't' }, (err) => {
      assert.match(err.message, /WRONGTYPE/);
      failed.push(i);
    });
  }
  await failing.close!();
  assert.deepEqual(failed, [0, 1, 2]);
});

test('audit on Redis: a batch waits for the flush interval after the previous one, unless it is full; a read or close writes at once, in order', { timeout: 20_000 }, async (t) => {
  const { startRedis } = await import('./helpers/redis.js');
  const { createRedisAuditSink } = await import('../src/audit.js');
  const redis = await startRedis();
  t.after(() => redis.close());
  // The script's first run is an EVAL (after EVALSHA's NOSCRIPT), later ones EVALSHA.
  const scriptRuns = async () => {
    const stats = await redis.client.info('commandstats');
    return ['eval', 'evalsha'].reduce((sum, name) => sum + Number(new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(stats)?.[1] ?? 0), 0);
  };
  // An interval no test run reaches: whatever is written after the first batch was written by a read or close.
  const sink = createRedisAuditSink(redis.client, 'audit-interval', 1000, { minIntervalMs: 600_000 });
  await redis.client.config('RESETSTAT');
  sink.append({ event: 'sign', n: 0, id: 'x-0', time: 't' });
  for (let i = 0; i < 100 && (await redis.client.xlen('audit-interval')) === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(await redis.client.xlen('audit-interval'), 1, 'the first entry of a quiet sink is written at once');
  for (let i = 1; i <= 3; i++) sink.append({ event: 'sign', n: i, id: `x-${i}`, time: 't' });
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(await redis.client.xlen('audit-interval'), 1, 'later entries wait for the interval');
  const read = await sink.read(10);
  assert.deepEqual(
    read.map((entry) => entry.n),
    [3, 2, 1, 0],
    'a read writes what is buffered first',
  );
  assert.equal(await scriptRuns(), 2, 'the three waiting entries went in one batch');
  sink.append({ event: 'sign', n: 4, id: 'x-4', time: 't' });
  await sink.close!();
  const rows = await redis.client.xrange('audit-interval', '-', '+');
  assert.deepEqual(
    rows.map(([, fields]) => JSON.parse(fields[1]!).n),
    [0, 1, 2, 3, 4],
  );

  // Full batches do not wait for the interval: 250 entries with maxBatch 100 go as 100 + 100 at once, and the
  // last 50 wait.
  const busy = createRedisAuditSink(redis.client, 'audit-busy', 1000, { maxBatch: 100, minIntervalMs: 600_000 });
  for (let i = 0; i < 250; i++) busy.append({ event: 'sign', n: i, id: `b-${i}`, time: 't' });
  for (let i = 0; i < 100 && (await redis.client.xlen('audit-busy')) < 200; i++) await new Promise((resolve) => setTimeout(resolve, 20));
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(await redis.client.xlen('audit-busy'), 200, 'two full batches written at once, the rest waits');
  await busy.close!();
  assert.equal(await redis.client.xlen('audit-busy'), 250);
});
