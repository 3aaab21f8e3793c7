// Property-based: whatever the policy and the request, the answer is a signed token inside the policy or a 4xx.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { buildTestApp } from '../helpers/app.js';

const CLIENT_IDS = ['a@T', 'b@T', 'c'];
const AUDIENCES = ['https://x/token', 'https://x/token/', 'HTTPS://X/TOKEN', 'host.example'];
const SUBJECTS = ['u1', 'u2'];
const CLAIM_NAMES = ['scope', 'tenant', 'iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti', 'alg', 'kid', '__proto__', 'constructor'];

const policy = fc.record({
  clientIds: fc.oneof(fc.constant<string[]>(['*']), fc.subarray(CLIENT_IDS)),
  audiences: fc.oneof(fc.constant<string[]>(['*']), fc.subarray(AUDIENCES)),
  subjects: fc.oneof(fc.constant<string[]>(['*']), fc.subarray(SUBJECTS)),
  extraClaims: fc.oneof(fc.boolean(), fc.subarray(['scope', 'tenant'])),
  maxTtl: fc.integer({ min: 1, max: 900 }),
});
type Policy = typeof policy extends fc.Arbitrary<infer T> ? T : never;

const allows = (list: string[], value: string) => list.includes('*') || list.includes(value);

test('property: random policies x random assertion requests never give a 5xx and never sign outside the policy', async (t) => {
  const policies = fc.sample(policy, { numRuns: 6, seed: 42 });
  const dir = mkdtempSync(join(tmpdir(), 'prop-'));
  const file = join(dir, 'clients.yaml');
  const tokens = policies.map((_, i) => `prop-token-${i}`);
  writeFileSync(
    file,
    `clients:\n${policies
      .map(
        (p, i) =>
          `  - name: p${i}\n    tokenSha256: ${createHash('sha256').update(tokens[i]!).digest('hex')}\n    scopes: [sign]\n    clientIds: ${JSON.stringify(p.clientIds)}\n    audiences: ${JSON.stringify(p.audiences)}\n    subjects: ${JSON.stringify(p.subjects)}\n    extraClaims: ${JSON.stringify(p.extraClaims)}\n    maxTtl: ${p.maxTtl}s\n`,
      )
      .join('')}`,
  );
  const { app } = await buildTestApp({ API_CLIENTS_FILE: file, KEY_ALG: 'ES256' });
  t.after(() => app.close());

  const request = fc.record(
    {
      client_id: fc.oneof(fc.constantFrom(...CLIENT_IDS), fc.string()),
      audience: fc.oneof(fc.constantFrom(...AUDIENCES), fc.string()),
      subject: fc.oneof(fc.constantFrom(...SUBJECTS, ...CLIENT_IDS), fc.string()),
      ttl: fc.oneof(fc.integer({ min: -5, max: 2000 }), fc.double(), fc.string()),
      claims: fc.dictionary(fc.constantFrom(...CLAIM_NAMES), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 3 }),
      typ: fc.constantFrom('JWT', 'client-authentication+jwt', 'at+jwt', 'none'),
      key_set: fc.constantFrom('default', 'other', '../x'),
    },
    { requiredKeys: ['client_id', 'audience'] },
  );

  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 0, max: policies.length - 1 }), request, async (index, body) => {
      const p: Policy = policies[index]!;
      const res = await app.internal.inject({
        method: 'POST',
        url: '/v1/assertions',
        headers: { authorization: `Bearer ${tokens[index]}`, 'content-type': 'application/json' },
        payload: JSON.stringify(body),
      });
      assert.ok(res.statusCode < 500, `5xx for ${JSON.stringify(body)}: ${res.body}`);
      if (res.statusCode !== 200) {
        assert.ok(res.statusCode >= 400);
        assert.equal(typeof res.json().code, 'string');
        return;
      }
      const token = res.json().client_assertion as string;
      const claims = decodeJwt(token);
      const header = decodeProtectedHeader(token);
      assert.equal(header.alg, 'ES256');
      assert.equal(claims.iss, body.client_id);
      assert.ok(allows(p.clientIds, claims.iss!), 'client_id allowed');
      assert.ok(allows(p.audiences, claims.aud as string), 'audience allowed');
      assert.equal(claims.aud, body.audience, 'audience copied exactly');
      assert.ok(claims.sub === claims.iss || allows(p.subjects, claims.sub!), 'subject allowed');
      assert.ok(claims.exp! - claims.iat! <= Math.min(p.maxTtl, 600), 'lifetime within policy');
      for (const reserved of ['exp', 'iat', 'nbf', 'jti', 'iss', 'sub', 'aud']) assert.ok(!body.claims || !(reserved in body.claims) || !Object.hasOwn(body.claims, reserved), `${reserved} not taken from the caller`);
      const extra = Object.keys(claims).filter((n) => !['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti'].includes(n));
      if (p.extraClaims === false) assert.deepEqual(extra, []);
      if (Array.isArray(p.extraClaims)) for (const n of extra) assert.ok(p.extraClaims.includes(n), `extra claim ${n} allowed`);
    }),
    { numRuns: 400, seed: 7 },
  );
});

test('property: random and mutated bodies on every internal endpoint never give a 5xx', async (t) => {
  const { app } = await buildTestApp({ KEY_ALG: 'ES256' });
  t.after(() => app.close());
  const token = app.config.devApiToken!;
  const routes = [
    ['POST', '/v1/assertions'],
    ['POST', '/v1/jwt'],
    ['POST', '/v1/keys/rotate'],
    ['POST', '/v1/keys/import'],
    ['POST', '/v1/keys/some-kid/revoke'],
    ['POST', '/v1/keys/reencrypt'],
    ['GET', '/v1/keys'],
  ] as const;
  const valid = { client_id: 'c', audience: 'a', claims: { iss: 'i', aud: 'a' }, key_set: 'default', ttl: 60 };
  const mutated = fc.oneof(
    fc.json({ maxDepth: 4 }),
    fc.string().map((s) => s),
    fc.record({ key: fc.constantFrom(...Object.keys(valid), 'force', 'private_key', 'pkcs12', 'x5t', 'typ'), value: fc.jsonValue({ maxDepth: 3 }) }).map(({ key, value }) => JSON.stringify({ ...valid, [key]: value })),
  );
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...routes), mutated, fc.constantFrom('application/json', 'text/plain', 'application/x-www-form-urlencoded'), async ([method, url], payload, contentType) => {
      const res = await app.internal.inject({
        method,
        url: method === 'GET' ? `${url}?key_set=${encodeURIComponent(payload.slice(0, 20))}` : url,
        headers: { authorization: `Bearer ${token}`, 'content-type': contentType },
        ...(method === 'POST' ? { payload } : {}),
      });
      assert.ok(res.statusCode < 500, `${method} ${url} ${contentType} ${payload.slice(0, 200)} -> ${res.statusCode} ${res.body}`);
      assert.match(res.headers['content-type'] as string, /json/);
    }),
    { numRuns: 500, seed: 11 },
  );
  assert.equal(app.keys.view('default')!.keys.filter((k) => k.state === 'active').length, 1, 'the key set survived');
});
