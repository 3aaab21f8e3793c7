// The signing pool: worker threads at a lower priority, signatures that verify, and the libuv fallback.
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject, verify, constants } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import type { Algorithm } from '../../src/config.js';
import { createSigner } from '../../src/keys/signer.js';

const KEYS: Array<[Algorithm, { privateKey: KeyObject; publicKey: KeyObject }, string | null, object]> = [
  ['RS256', generateKeyPairSync('rsa', { modulusLength: 2048 }), 'sha256', {}],
  ['PS256', generateKeyPairSync('rsa', { modulusLength: 2048 }), 'sha256', { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }],
  ['ES256', generateKeyPairSync('ec', { namedCurve: 'P-256' }), 'sha256', { dsaEncoding: 'ieee-p1363' }],
  ['EdDSA', generateKeyPairSync('ed25519'), null, {}],
];

/** Nice values of this process's threads (Linux: /proc/self/task/<tid>/stat, field 19). */
function threadNiceValues(): number[] {
  return readdirSync('/proc/self/task').map((tid) => {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
  });
}

for (const workers of [2, 0]) {
  test(`signatures verify (${workers ? 'worker pool' : 'libuv thread pool'})`, async (t) => {
    const signer = createSigner({ workers });
    t.after(() => signer.close());
    assert.equal(signer.mode, workers ? 'workers' : 'libuv');
    const tokens = await Promise.all(
      KEYS.flatMap(([alg, pair]) => Array.from({ length: 5 }, (_, i) => signer.signCompact(alg, pair.privateKey, { kid: `k-${alg}`, typ: 'JWT' }, JSON.stringify({ n: i })))),
    );
    tokens.forEach((token, i) => {
      const [alg, pair, digest, options] = KEYS[Math.floor(i / 5)]!;
      const [header, payload, signature] = token.split('.') as [string, string, string];
      assert.equal(JSON.parse(Buffer.from(header, 'base64url').toString()).alg, alg);
      assert.equal(JSON.parse(Buffer.from(payload, 'base64url').toString()).n, i % 5);
      assert.ok(verify(digest, Buffer.from(`${header}.${payload}`), { key: pair.publicKey, ...options }, Buffer.from(signature, 'base64url')), `${alg} verifies`);
    });
  });
}

test('signing workers run at a lower priority than the event loop', { skip: process.platform !== 'linux' }, async (t) => {
  const before = threadNiceValues().filter((n) => n === 10).length;
  const signer = createSigner({ workers: 2 });
  t.after(() => signer.close());
  const [alg, pair] = KEYS[2]!;
  // Concurrent, so that both workers take some (each lowers its priority when it starts).
  await Promise.all(Array.from({ length: 20 }, () => signer.signCompact(alg, pair.privateKey, { kid: 'k', typ: 'JWT' }, '{}')));
  const niced = threadNiceValues().filter((n) => n === 10).length - before;
  assert.ok(niced >= 2, `two more threads at nice 10 (got ${niced})`);
  assert.equal(threadNiceValues()[0], 0, 'the main thread keeps its priority');
});

test('a bad key fails that signature only', async (t) => {
  const signer = createSigner({ workers: 1 });
  t.after(() => signer.close());
  const ed25519 = KEYS[3]![1].privateKey;
  await assert.rejects(signer.signCompact('ES256', ed25519, { kid: 'k', typ: 'JWT' }, '{}'));
  assert.ok(await signer.signCompact('EdDSA', ed25519, { kid: 'k', typ: 'JWT' }, '{}'));
  assert.equal(signer.mode, 'workers');
});
