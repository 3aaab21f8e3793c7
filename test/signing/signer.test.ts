// Signing on libuv's thread pool: signatures that verify, a bad key fails only its own signature, and the
// pool's threads found and lowered in priority (src/keys/thread-pool-priority.ts) are the ones that sign.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync, type KeyObject, verify, constants } from 'node:crypto';
import { test } from 'node:test';
import type { Algorithm } from '../../src/config.js';
import { signer } from '../../src/keys/signer.js';
import { THREAD_NAMES } from '../../src/lib/thread-name.js';
import { SCHED_BATCH, SCHED_OTHER } from '../helpers/threads.js';

const KEYS: Array<[Algorithm, { privateKey: KeyObject; publicKey: KeyObject }, string | null, object]> = [
  ['RS256', generateKeyPairSync('rsa', { modulusLength: 2048 }), 'sha256', {}],
  ['PS256', generateKeyPairSync('rsa', { modulusLength: 2048 }), 'sha256', { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }],
  ['ES256', generateKeyPairSync('ec', { namedCurve: 'P-256' }), 'sha256', { dsaEncoding: 'ieee-p1363' }],
  ['EdDSA', generateKeyPairSync('ed25519'), null, {}],
];

test('signatures verify', async () => {
  const tokens = await Promise.all(
    KEYS.flatMap(([alg, pair]) => Array.from({ length: 5 }, (_, i) => signer.signCompact(alg, pair.privateKey, { kid: `k-${alg}`, typ: 'JWT' }, JSON.stringify({ n: i })))),
  );
  tokens.forEach((token, i) => {
    const [alg, pair, digest, options] = KEYS[Math.floor(i / 5)]!;
    const [header, payload, signature] = token.split('.') as [string, string, string];
    assert.deepEqual(JSON.parse(Buffer.from(header, 'base64url').toString()), { alg, kid: `k-${alg}`, typ: 'JWT' });
    assert.equal(JSON.parse(Buffer.from(payload, 'base64url').toString()).n, i % 5);
    assert.ok(verify(digest, Buffer.from(`${header}.${payload}`), { key: pair.publicKey, ...options }, Buffer.from(signature, 'base64url')), `${alg} verifies`);
  });
});

test('a bad key fails that signature only', async () => {
  const ed25519 = KEYS[3]![1].privateKey;
  await assert.rejects(signer.signCompact('ES256', ed25519, { kid: 'k', typ: 'JWT' }, '{}'));
  assert.ok(await signer.signCompact('EdDSA', ed25519, { kid: 'k', typ: 'JWT' }, '{}'));
});

// In a fresh process (this one's pool is shared with every other test): UV_THREADPOOL_SIZE=3, lowered to nice
// 10 under SCHED_BATCH, then 400 RSA signatures; the fixture reports each thread's nice value, policy and CPU
// time during the signing.
test('the threads lowered at start-up are libuv pool threads, and they are the ones that sign', { skip: process.platform !== 'linux' }, () => {
  const run = spawnSync(process.execPath, ['--import', 'tsx', 'test/signing/fixtures/pool-priority.ts'], {
    env: { ...process.env, UV_THREADPOOL_SIZE: '3' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(run.status, 0, run.stderr);
  const r = JSON.parse(run.stdout) as {
    pid: number;
    lowered: number[];
    expected: number;
    batch: number;
    threads: Array<{ tid: number; name: string; nice: number; policy: number; cpuTicks: number }>;
  };
  assert.equal(r.expected, 3);
  assert.equal(r.lowered.length, 3, 'three pool threads found');
  const byTid = new Map(r.threads.map((t) => [t.tid, t]));
  assert.equal(r.batch, 3, 'the three under SCHED_BATCH (needs util-linux chrt)');
  for (const tid of r.lowered) {
    assert.equal(byTid.get(tid)?.nice, 10, `thread ${tid} at nice 10`);
    assert.equal(byTid.get(tid)?.policy, SCHED_BATCH, `thread ${tid} under SCHED_BATCH`);
    assert.equal(byTid.get(tid)?.name, THREAD_NAMES.signingPool, `thread ${tid} named for top -H and ps -L`);
  }
  const others = r.threads.filter((t) => !r.lowered.includes(t.tid));
  assert.ok(others.some((t) => t.tid === r.pid), 'the main thread is listed');
  for (const t of others) {
    assert.equal(t.nice, 0, `thread ${t.tid} keeps the process priority`);
    assert.equal(t.policy, SCHED_OTHER, `thread ${t.tid} keeps the default policy`);
    assert.notEqual(t.name, THREAD_NAMES.signingPool, `thread ${t.tid} is not named as a pool thread`);
  }
  const signing = r.threads.filter((t) => r.lowered.includes(t.tid)).reduce((a, t) => a + t.cpuTicks, 0);
  const rest = others.filter((t) => t.tid !== r.pid).reduce((a, t) => a + t.cpuTicks, 0);
  assert.ok(signing > 0 && signing >= 4 * rest, `the signatures ran on the lowered threads (${signing} ticks there, ${rest} on other helper threads)`);
});
