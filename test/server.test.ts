// server.ts as a process: config errors name the variable, SIGTERM shuts down gracefully.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { test } from 'node:test';
import { freePort } from './helpers/redis.js';
import { SCHED_BATCH, SCHED_OTHER, threadStats } from './helpers/threads.js';

function run(env: Record<string, string>) {
  return spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
}

test('a configuration error stops start-up with exit code 2 and names the variable', async () => {
  const child = run({ KEY_ROTATION_PERIOD: 'monthly' });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  assert.equal(code, 2);
  assert.match(stderr, /configuration error: KEY_ROTATION_PERIOD/);
});

test('starts on the embedded store with a warning and a dev token; SIGTERM finishes in-flight work and exits 0', async () => {
  const [port, internal] = [await freePort(), await freePort()];
  const child = run({ PORT: String(port), INTERNAL_PORT: String(internal), HOST: '127.0.0.1', LOG_LEVEL: 'info' });
  let stderr = '';
  let stdout = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  const deadline = Date.now() + 20_000;
  while (!stderr.includes('Development API token') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.match(stderr, /WARNING: in-memory key store/);
  assert.match(stderr, new RegExp(`http://127.0.0.1:${port}/.well-known/jwks.json`));
  const token = /Development API token[^\n]*\n\s+(\S+)/.exec(stderr)![1]!;
  assert.equal(stdout.includes(token), false, 'the token is not in the JSON logs');
  const jwks = await fetch(`http://127.0.0.1:${port}/.well-known/jwks.json`);
  assert.equal(jwks.status, 200);
  const body = JSON.stringify({ client_id: 'c', audience: 'a' });
  const request = httpRequest({
    host: '127.0.0.1',
    port: internal,
    path: '/v1/assertions',
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
  });
  const status = new Promise<number | undefined>((resolve, reject) => {
    request.on('response', (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    request.on('error', reject);
  });
  request.write(body.slice(0, 10));
  await new Promise((r) => setTimeout(r, 200));
  child.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 200));
  request.end(body.slice(10));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  assert.equal(await status, 200, 'the request in flight at SIGTERM was answered');
  assert.equal(code, 0);
  assert.match(stdout, /"signal":"SIGTERM"/);
});

const PRIORITY_CASES: Array<{ env: Record<string, string>; pool: number; poolNice: number; mainNice: number }> = [
  { env: {}, pool: 4, poolNice: 10, mainNice: 5 },
  { env: { SIGNING_NICE: '0' }, pool: 0, poolNice: 0, mainNice: 0 },
  { env: { SIGNING_NICE: '5' }, pool: 4, poolNice: 5, mainNice: 2 },
  { env: { API_THREAD_NICE: '0' }, pool: 4, poolNice: 10, mainNice: 0 },
  { env: { PUBLIC_SERVER_THREAD: 'false' }, pool: 4, poolNice: 10, mainNice: 0 },
];

for (const { env, pool, poolNice, mainNice } of PRIORITY_CASES) {
  const name = Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ') || 'defaults';
  test(`${name}: ${pool} libuv pool threads at nice ${poolNice}, the main thread at ${mainNice}, every other thread (the public port's) at the process priority`, { skip: process.platform !== 'linux' }, async () => {
    const [port, internal] = [await freePort(), await freePort()];
    const child = run({ PORT: String(port), INTERNAL_PORT: String(internal), HOST: '127.0.0.1', ...env });
    try {
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      child.stdout.resume();
      const deadline = Date.now() + 20_000;
      while (!stderr.includes('jwks-signer is running') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.match(stderr, /jwks-signer is running/);
      const stats = threadStats(child.pid!);
      const main = stats.get(child.pid!)!;
      const others = [...stats].filter(([tid]) => tid !== child.pid).map(([, t]) => t);
      assert.equal(main.nice, mainNice, 'the main thread (internal API)');
      assert.equal(main.policy, mainNice > 0 ? SCHED_BATCH : SCHED_OTHER, 'the main thread is SCHED_BATCH exactly when lowered');
      const lowered = others.filter((t) => t.nice !== 0);
      assert.equal(lowered.length, pool, 'only the pool threads are lowered besides the main thread');
      assert.ok(lowered.every((t) => t.nice === poolNice && t.policy === SCHED_BATCH && t.name === 'sign-pool'));
      assert.ok(others.filter((t) => t.nice === 0).every((t) => t.policy === SCHED_OTHER), 'the rest keep the process policy');
      const publicThread = others.filter((t) => t.name === 'jwks-public');
      assert.equal(publicThread.length, env.PUBLIC_SERVER_THREAD === 'false' ? 0 : 1);
      assert.ok(publicThread.every((t) => t.nice === 0 && t.policy === SCHED_OTHER), 'the public port thread keeps the process priority');
      // Signing still works on the lowered pool.
      const token = /Development API token[^\n]*\n\s+(\S+)/.exec(stderr)![1]!;
      const res = await fetch(`http://127.0.0.1:${internal}/v1/assertions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ client_id: 'c', audience: 'a' }),
      });
      assert.equal(res.status, 200);
    } finally {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.on('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
    }
  });
}
