// The public port in its own thread (PUBLIC_SERVER_THREAD, the default): real listeners on 127.0.0.1, a real
// Redis; what the thread serves must equal what the in-process instance (app.public) serves.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { after, before, test } from 'node:test';
import type { App } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { ConfigError } from '../src/errors.js';
import { publicSettings } from '../src/public-server.js';
import { THREAD_NAMES } from '../src/lib/thread-name.js';
import { buildTestApp, TEST_KEK } from './helpers/app.js';
import { type RedisServer, startRedis } from './helpers/redis.js';
import { SCHED_BATCH, SCHED_OTHER, threadsNamed } from './helpers/threads.js';

const JWKS = '/.well-known/jwks.json';
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const HEADERS = ['content-type', 'etag', 'last-modified', 'cache-control', 'vary', 'access-control-allow-origin', 'access-control-expose-headers', 'access-control-allow-methods', 'access-control-allow-headers', 'access-control-max-age', 'retry-after'];

let redis: RedisServer;
before(async () => {
  redis = await startRedis();
});
after(() => redis.close());

async function started(env: Record<string, string> = {}): Promise<{ app: App; url: string; logs: string[] }> {
  const { app, logs } = await buildTestApp(env);
  const { publicUrl } = await app.listen();
  return { app, url: publicUrl, logs };
}

/** Polls until `check` passes: at most `tries` times, `ms` apart. */
async function eventually(check: () => Promise<boolean>, what: string, tries = 100, ms = 50): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await check()) return;
    await pause(ms);
  }
  assert.fail(`not reached after ${tries} tries: ${what}`);
}

async function publicCount(app: App, pattern: RegExp): Promise<number> {
  const res = await app.internal.inject({ method: 'GET', url: '/metrics' });
  const line = res.body.split('\n').find((l) => pattern.test(l));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

test('thread mode: JWKS, 304s, health, CORS and problems equal what the in-process instance serves', async (t) => {
  const { app, url } = await started();
  t.after(() => app.close());
  assert.ok(app.publicThread, 'the public port is served by the thread');
  const cases: Array<{ method?: string; path: string; headers?: Record<string, string> }> = [
    { path: JWKS },
    { path: '/jwks/default.json' },
    { path: JWKS, headers: { accept: 'application/jwk-set+json' } },
    { path: '/jwks/nope.json' },
    { path: '/jwks/default' },
    { path: '/unknown' },
    { path: '/healthz' },
    { path: '/readyz' },
    { method: 'OPTIONS', path: JWKS },
  ];
  for (const c of cases) {
    const method = c.method ?? 'GET';
    const local = await app.public.inject({ method: method as 'GET', url: c.path, headers: c.headers ?? {} });
    const res = await fetch(`${url}${c.path}`, { method, headers: c.headers ?? {} });
    const what = `${method} ${c.path} ${JSON.stringify(c.headers ?? {})}`;
    assert.equal(res.status, local.statusCode, what);
    for (const name of HEADERS) assert.equal(res.headers.get(name) ?? undefined, local.headers[name], `${what}: ${name}`);
    assert.equal(await res.text(), local.body, what);
  }
  const etag = (await fetch(`${url}${JWKS}`)).headers.get('etag')!;
  const notModified = await fetch(`${url}${JWKS}`, { headers: { 'if-none-match': etag } });
  assert.equal(notModified.status, 304);
  assert.equal(notModified.headers.get('etag'), etag);
  assert.ok(notModified.headers.get('cache-control')?.startsWith('public, max-age='));
});

test('thread mode: a rotation in the main thread reaches the thread JWKS', async (t) => {
  const { app, url } = await started();
  t.after(() => app.close());
  const before = (await fetch(`${url}${JWKS}`)).headers.get('etag');
  const result = await app.keys.rotate('default', { force: true });
  assert.ok(result.changed);
  const expected = await app.public.inject({ method: 'GET', url: JWKS });
  assert.notEqual(expected.headers.etag, before);
  await eventually(async () => (await fetch(`${url}${JWKS}`)).headers.get('etag') === expected.headers.etag, 'the rotated JWKS served by the thread');
  const res = await fetch(`${url}${JWKS}`, { headers: { 'if-none-match': before! } });
  assert.equal(res.status, 200, 'the old ETag no longer matches');
  assert.equal(await res.text(), expected.body);
});

test('thread mode: rate limited with 429 problem+json; counts and refusals reach /metrics and the logs', async (t) => {
  const { app, url, logs } = await started({ RATE_LIMIT_MAX: '3', RATE_LIMIT_WINDOW: '1h' });
  t.after(() => app.close());
  for (let i = 0; i < 3; i++) assert.equal((await fetch(`${url}${JWKS}`)).status, 200);
  const refused = await fetch(`${url}${JWKS}`);
  assert.equal(refused.status, 429);
  assert.match(refused.headers.get('content-type') ?? '', /^application\/problem\+json/);
  assert.equal(((await refused.json()) as { code: string }).code, 'rate_limited');
  assert.ok(Number(refused.headers.get('retry-after')) > 0);
  assert.equal((await fetch(`${url}/healthz`)).status, 200, 'health is not limited');
  await eventually(
    async () =>
      (await publicCount(app, /^jwks_signer_http_requests_total\{port="public",route="\/\.well-known\/jwks\.json",status="200"\}/)) === 3 &&
      (await publicCount(app, /^jwks_signer_http_requests_total\{port="public",route="\/\.well-known\/jwks\.json",status="429"\}/)) === 1 &&
      (await publicCount(app, /^jwks_signer_rate_limited_total\{port="public"\}/)) === 1 &&
      (await publicCount(app, /^jwks_signer_http_requests_total\{port="public",route="\/healthz",status="200"\}/)) === 1,
    'the thread counts in the internal /metrics',
  );
  const refusal = logs.map((line) => JSON.parse(line) as Record<string, unknown>).find((line) => line.port === 'public' && line.code === 'rate_limited');
  assert.ok(refusal, 'the refusal is logged by the main thread with the public logger');
  assert.equal(typeof refusal.reqId, 'string');
});

test('thread mode: the shared limit holds across two replicas on one Redis', async (t) => {
  const env = { REDIS_URL: redis.url, RATE_LIMIT_MAX: '100', RATE_LIMIT_WINDOW: '1h', RATE_LIMIT_SYNC_INTERVAL: '50ms', REDIS_KEY_PREFIX: `pt-${Date.now()}:` };
  const a = await started(env);
  t.after(() => a.app.close());
  const b = await started(env);
  t.after(() => b.app.close());
  // 80 of the 100 allowed, half on each: all served. Counting alone, each replica would serve 60 more.
  for (let i = 0; i < 40; i++) {
    assert.equal((await fetch(`${a.url}${JWKS}`)).status, 200);
    assert.equal((await fetch(`${b.url}${JWKS}`)).status, 200);
  }
  let served = 0;
  let refusedBoth = false;
  for (let i = 0; i < 80 && !refusedBoth; i++) {
    const [ra, rb] = await Promise.all([fetch(`${a.url}${JWKS}`), fetch(`${b.url}${JWKS}`)]);
    await Promise.all([ra.arrayBuffer(), rb.arrayBuffer()]);
    served += Number(ra.status === 200) + Number(rb.status === 200);
    refusedBoth = ra.status === 429 && rb.status === 429;
    if (!refusedBoth) await pause(25);
  }
  assert.ok(refusedBoth, 'both replicas refuse the client');
  assert.ok(served >= 20 && served <= 40, `the remaining 20, plus about one interval of requests, pass (${served}), not 120`);
  // Reconciled through the main thread's connection: the counts are in the window's hash.
  const [hash] = await redis.client.keys(`${env.REDIS_KEY_PREFIX}ratelimit:*`);
  assert.ok(Number(await redis.client.hget(hash!, '127.0.0.1')) >= 100);
});

test('the public thread is given no Redis address or password', () => {
  const config = loadConfig({ REDIS_URL: 'redis://:s3cret-pass@127.0.0.1:6390/0', KEY_ENCRYPTION_KEYS: TEST_KEK });
  const given = JSON.stringify(publicSettings(config));
  assert.equal(config.rateLimit.shared, true);
  assert.ok(given.includes('"keyPrefix"'), 'the shared limit is on');
  for (const secret of ['s3cret-pass', '6390', 'redis://']) assert.equal(given.includes(secret), false, secret);
});

test('thread mode: /readyz follows readiness and the store state pushed by the main thread', async (t) => {
  const own = await startRedis();
  t.after(() => own.close());
  await own.stop();
  const { app, url } = await started({ REDIS_URL: own.url });
  t.after(() => app.close());
  const down = await fetch(`${url}/readyz`);
  assert.equal(down.status, 503);
  assert.deepEqual(await down.json(), { status: 'not_ready', store: 'down' });
  assert.equal((await fetch(`${url}${JWKS}`)).status, 503, 'no JWKS before the keys are loaded');
  await own.start();
  await eventually(async () => {
    await app.keys.tick();
    return app.keys.isReady();
  }, 'the main thread loads the keys');
  await eventually(async () => (await fetch(`${url}/readyz`)).status === 200, 'the thread turns ready');
  await eventually(async () => ((await (await fetch(`${url}/readyz`)).json()) as { status: string }).status === 'ready', 'the store is up in the thread');
  assert.equal((await fetch(`${url}${JWKS}`)).status, 200);
});

test('thread mode: close() lets a request in flight finish, then refuses connections', async (t) => {
  const { app, url } = await started();
  t.after(() => app.close());
  const { port } = new URL(url);
  const socket = connect(Number(port), '127.0.0.1');
  let response = '';
  socket.on('data', (chunk: Buffer) => {
    response += chunk.toString();
  });
  const ended = new Promise((resolve) => socket.on('close', resolve));
  await new Promise((resolve) => socket.once('connect', resolve));
  // An OPTIONS request with a body: the server waits for the whole body before it answers.
  socket.write(`OPTIONS ${JWKS} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{"a":`);
  await pause(100);
  let closed = false;
  const closing = app.close().then(() => {
    closed = true;
  });
  await pause(200);
  assert.equal(closed, false, 'close() waits for the request in flight');
  assert.equal(response, '');
  socket.end('1}\r\n');
  await closing;
  await ended;
  assert.match(response, /^HTTP\/1\.1 204 /, 'the request in flight is answered');
  await assert.rejects(fetch(`${url}/healthz`), 'the port is closed');
});

test('thread mode: a thread that dies is restarted and serves again', async (t) => {
  const { app, url } = await started();
  t.after(() => app.close());
  const etag = (await fetch(`${url}${JWKS}`)).headers.get('etag');
  await app.publicThread!.terminateForTest();
  await eventually(async () => (await fetch(`${url}${JWKS}`).catch(() => undefined))?.status === 200, 'the restarted thread serves the JWKS', 100, 50);
  await eventually(async () => app.publicThread!.restarts === 1, 'the restart is counted once');
  assert.equal((await fetch(`${url}${JWKS}`)).headers.get('etag'), etag, 'with the same keys');
  await app.keys.rotate('default', { force: true });
  const expected = (await app.public.inject({ method: 'GET', url: JWKS })).headers.etag;
  await eventually(async () => (await fetch(`${url}${JWKS}`)).headers.get('etag') === expected, 'changes reach the restarted thread');
});

for (const processNice of [0, 2]) {
  test(`thread mode: a public thread restarted after the main thread was lowered (API_THREAD_NICE) gets the process priority back (process at nice ${processNice})`, { skip: process.platform !== 'linux' }, async () => {
    const command = ['--import', 'tsx', 'test/helpers/lowered-restart.ts'];
    const child = spawnSync(processNice === 0 ? process.execPath : 'nice', processNice === 0 ? command : ['-n', String(processNice), process.execPath, ...command], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(child.status, 0, child.stderr);
    const out = JSON.parse(child.stdout.trim().split('\n').pop()!) as {
      lowered: { nice: number; batch: boolean };
      status: number;
      pid: number;
      threads: Array<{ tid: number; name: string; nice: number; policy: number }>;
      privileged: boolean;
    };
    assert.deepEqual(out.lowered, { nice: 3, batch: true });
    assert.equal(out.status, 200, 'the restarted thread serves');
    const main = out.threads.find((t) => t.tid === out.pid)!;
    assert.equal(main.policy, SCHED_BATCH);
    const publicThreads = out.threads.filter((t) => t.name === THREAD_NAMES.publicPort);
    assert.equal(publicThreads.length, 1);
    // It inherits nice 3 and SCHED_BATCH from the main thread that starts it; the policy can always be given back,
    // the nice value only with CAP_SYS_NICE, and never above the process's own.
    assert.equal(publicThreads[0]!.policy, SCHED_OTHER);
    assert.equal(publicThreads[0]!.nice, out.privileged ? processNice : 3);
  });
}

test('thread mode: the public thread is named for per-thread tools (top -H, ps -L) while it runs', { skip: process.platform !== 'linux' }, async () => {
  assert.equal(threadsNamed(THREAD_NAMES.publicPort), 0, 'no public thread before listen()');
  const { app } = await started();
  try {
    assert.equal(threadsNamed(THREAD_NAMES.publicPort), 1);
  } finally {
    await app.close();
  }
  await eventually(async () => threadsNamed(THREAD_NAMES.publicPort) === 0, 'the thread ends with close()');
});

test('PUBLIC_SERVER_THREAD=false: the in-process instance listens', async (t) => {
  const { app, url } = await started({ PUBLIC_SERVER_THREAD: 'false' });
  t.after(() => app.close());
  assert.equal(app.publicThread, undefined);
  assert.equal((await fetch(`${url}${JWKS}`)).status, 200);
});

test('PUBLIC_SERVER_THREAD: true by default; anything but true or false stops start-up naming it', () => {
  assert.equal(loadConfig({}).publicServerThread, true);
  assert.equal(loadConfig({ PUBLIC_SERVER_THREAD: 'false' }).publicServerThread, false);
  assert.equal(loadConfig({ PUBLIC_SERVER_THREAD: 'true' }).publicServerThread, true);
  assert.throws(
    () => loadConfig({ PUBLIC_SERVER_THREAD: 'yes' }),
    (err: unknown) => err instanceof ConfigError && err.variable === 'PUBLIC_SERVER_THREAD',
  );
});
