// Certificates (x5c, x5t#S256, PEM download, x5t headers) and importing an existing key.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, createPublicKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { decodeProtectedHeader, type JWK } from 'jose';
import jwt from 'jsonwebtoken';
import { bearer, buildTestApp, type TestApp } from '../helpers/app.js';
import { TOKENS, clientsFile } from '../helpers/clients.js';

const dir = mkdtempSync(join(tmpdir(), 'jwks-signer-certs-'));
function setsFile(text: string): string {
  const path = join(dir, `sets-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(path, text);
  return path;
}

const ALL = 'keySets:\n  default: { publishX5c: true, certificateSubject: "CN=acme signer, O=Acme" }\n  ps: { alg: PS256, publishX5c: true }\n  es: { alg: ES256, publishX5c: true }\n  es384: { alg: ES384, publishX5c: true }\n  es512: { alg: ES512, publishX5c: true }\n  ed: { alg: EdDSA, publishX5c: true }\n  plain: { alg: ES256 }\n';

async function jwksOf(ctx: TestApp, set: string): Promise<JWK[]> {
  return (await ctx.app.public.inject({ url: `/jwks/${set}.json` })).json().keys;
}

test('x5c and x5t#S256 are published on request and match the key exactly (CONSUMERS.md rule 5)', async (t) => {
  const ctx = await buildTestApp({ KEY_SETS_FILE: setsFile(ALL), API_CLIENTS_FILE: clientsFile() });
  t.after(() => ctx.app.close());
  for (const jwk of await jwksOf(ctx, 'plain')) {
    assert.equal('x5c' in jwk, false, 'off by default');
    assert.equal('x5t#S256' in jwk, false);
  }
  for (const set of ['default', 'ps', 'es', 'es384', 'es512', 'ed']) {
    for (const jwk of await jwksOf(ctx, set)) {
      assert.equal(jwk.x5c!.length, 1, `${set}: one self-signed leaf`);
      assert.match(jwk.x5c![0]!, /^[A-Za-z0-9+/]+=*$/, 'standard base64, not base64url');
      const der = Buffer.from(jwk.x5c![0]!, 'base64');
      const certificate = new X509Certificate(der);
      assert.equal(jwk['x5t#S256'], createHash('sha256').update(der).digest('base64url'));
      const fromCert = certificate.publicKey.export({ format: 'jwk' });
      for (const member of ['n', 'e', 'crv', 'x', 'y'] as const) assert.equal(fromCert[member], jwk[member], `${set}: ${member} matches the leaf`);
      assert.ok(certificate.verify(certificate.publicKey), 'self-signed');
      assert.ok(Date.parse(certificate.validTo) > Date.now() + 300 * 86_400_000, 'valid for the key lifetime');
      assert.ok(Date.parse(certificate.validFrom) <= Date.now());
      assert.equal(certificate.ca, false);
      if (set === 'default') assert.match(certificate.subject, /CN=acme signer/);
    }
  }
});

test('the PEM certificate of each key can be downloaded; x5t and x5t#S256 headers match it', async (t) => {
  const ctx = await buildTestApp({ KEY_SETS_FILE: setsFile(ALL), API_CLIENTS_FILE: clientsFile() });
  t.after(() => ctx.app.close());
  const active = ctx.app.keys.view('default')!.active;
  const res = await ctx.app.internal.inject({ url: `/v1/keys/${active.kid}/certificate`, headers: { authorization: `Bearer ${TOKENS.app}` } });
  assert.equal(res.statusCode, 200, res.body);
  assert.equal(res.headers['content-type'], 'application/pem-certificate-chain');
  assert.match(res.body, /^-----BEGIN CERTIFICATE-----\n/);
  const pem = join(dir, 'cert.pem');
  writeFileSync(pem, res.body);
  const text = execFileSync('openssl', ['x509', '-in', pem, '-noout', '-subject', '-pubkey']).toString();
  const pubkey = text.slice(text.indexOf('-----BEGIN PUBLIC KEY-----'));
  assert.deepEqual(createPublicKey(pubkey).export({ format: 'jwk' }).n, active.publicJwk.n, 'openssl reads the key of the published JWK');
  const der = new X509Certificate(res.body).raw;
  for (const [x5t, hash] of [['x5t', 'sha1'], ['x5t#S256', 'sha256']] as const) {
    const signed = await ctx.app.internal.inject({
      method: 'POST',
      url: '/v1/assertions',
      headers: bearer(TOKENS.broad),
      payload: { client_id: 'entra-app-id', audience: 'https://login.microsoftonline.com/tenant/oauth2/v2.0/token', x5t },
    });
    assert.equal(signed.statusCode, 200, signed.body);
    const header = decodeProtectedHeader(signed.json().client_assertion) as Record<string, string>;
    assert.equal(header[x5t], createHash(hash).update(der).digest('base64url'));
    assert.equal(header.kid, active.kid);
  }
  const missing = await ctx.app.internal.inject({ url: '/v1/keys/doesnotexist/certificate', headers: bearer(TOKENS.admin) });
  assert.equal(missing.json().code, 'key_not_found');
  const noAuth = await ctx.app.internal.inject({ url: `/v1/keys/${active.kid}/certificate` });
  assert.equal(noAuth.statusCode, 401);
});

function importRequest(ctx: TestApp, payload: Record<string, unknown>) {
  return ctx.app.internal.inject({ method: 'POST', url: '/v1/keys/import', headers: bearer(TOKENS.admin), payload });
}

test('importing an existing RSA key (PKCS#8, PKCS#1, encrypted) makes it the active key; it is never echoed', async (t) => {
  const ctx = await buildTestApp({ KEY_SETS_FILE: setsFile('keySets:\n  default: { publishX5c: true }\n'), API_CLIENTS_FILE: clientsFile(), INTERNAL_BODY_LIMIT: '65536' });
  t.after(() => ctx.app.close());
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pkcs8 = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  const before = ctx.app.keys.view('default')!.active.kid;
  const res = await importRequest(ctx, { private_key: pkcs8 });
  assert.equal(res.statusCode, 200, res.body);
  const body = res.json();
  assert.equal(body.active_kid, body.imported_kid);
  assert.doesNotMatch(res.body, /PRIVATE KEY|"d":/);
  const jwk = publicKey.export({ format: 'jwk' });
  assert.equal(body.keys.find((k: { kid: string }) => k.kid === body.imported_kid).public_jwk.n, jwk.n);
  assert.equal(body.keys.find((k: { kid: string }) => k.kid === before).state, 'retired', 'the previous active key retires, still published');

  const signed = await ctx.app.internal.inject({ method: 'POST', url: '/v1/assertions', headers: bearer(TOKENS.broad), payload: { client_id: 'c', audience: 'https://a/token' } });
  const claims = jwt.verify(signed.json().client_assertion, publicKey, { audience: 'https://a/token' }) as jwt.JwtPayload;
  assert.equal(claims.iss, 'c', 'the app key registered at the consumer verifies our tokens');
  const published = await jwksOf(ctx, 'default');
  assert.equal(published[0]!.kid, body.imported_kid);
  assert.ok(published[0]!.x5c, 'a certificate was made for the imported key');

  assert.equal((await importRequest(ctx, { private_key: pkcs8 })).json().code, 'key_exists');
  const pkcs1 = generateKeyPairSync('rsa', { modulusLength: 3072 }).privateKey.export({ format: 'pem', type: 'pkcs1' }).toString();
  const asNext = await importRequest(ctx, { private_key: pkcs1, state: 'next' });
  assert.equal(asNext.statusCode, 200, asNext.body);
  assert.equal(asNext.json().keys.filter((k: { state: string }) => k.state === 'next').length, 1, 'one next key: the imported one');
  const encrypted = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8', cipher: 'aes-256-cbc', passphrase: 'pw' }).toString();
  assert.equal((await importRequest(ctx, { private_key: encrypted })).json().code, 'invalid_key', 'no password');
  assert.equal((await importRequest(ctx, { private_key: encrypted, password: 'pw' })).statusCode, 200);
});

test('importing a PKCS#12 file made by openssl keeps its certificate (Entra x5t stays the same)', async (t) => {
  const ctx = await buildTestApp({ KEY_SETS_FILE: setsFile('keySets:\n  default: { publishX5c: true }\n'), API_CLIENTS_FILE: clientsFile(), INTERNAL_BODY_LIMIT: '65536' });
  t.after(() => ctx.app.close());
  const key = join(dir, 'app.key');
  const crt = join(dir, 'app.crt');
  const p12 = join(dir, 'app.p12');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', crt, '-days', '30', '-subj', '/CN=existing-app']);
  execFileSync('openssl', ['pkcs12', '-export', '-inkey', key, '-in', crt, '-out', p12, '-passout', 'pass:secret']);
  const res = await importRequest(ctx, { pkcs12: readFileSync(p12).toString('base64'), password: 'secret' });
  assert.equal(res.statusCode, 200, res.body);
  const original = new X509Certificate(readFileSync(crt));
  const published = (await jwksOf(ctx, 'default')).find((k) => k.kid === res.json().imported_kid)!;
  assert.equal(published.x5c![0], original.raw.toString('base64'), 'the original certificate, not a new one');
  const wrongPassword = await importRequest(ctx, { pkcs12: readFileSync(p12).toString('base64'), password: 'nope' });
  assert.equal(wrongPassword.json().code, 'invalid_key');
});

test('import refusals: wrong key type, small RSA, a certificate of another key, garbage, both or neither input', async (t) => {
  const ctx = await buildTestApp({ KEY_SETS_FILE: setsFile('keySets:\n  default: {}\n  es: { alg: ES256 }\n'), API_CLIENTS_FILE: clientsFile(), INTERNAL_BODY_LIMIT: '65536' });
  t.after(() => ctx.app.close());
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  const ec384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey.export({ format: 'pem', type: 'sec1' }).toString();
  const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  const key = join(dir, 'other.key');
  const crt = join(dir, 'other.crt');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', crt, '-days', '1', '-subj', '/CN=other']);
  const cases: Array<[Record<string, unknown>, number, string]> = [
    [{ private_key: rsa, key_set: 'es' }, 400, 'invalid_key'],
    [{ private_key: ec384, key_set: 'es' }, 400, 'invalid_key'],
    [{ private_key: small }, 400, 'invalid_key'],
    [{ private_key: rsa, certificate: readFileSync(crt, 'utf8') }, 400, 'invalid_key'],
    [{ private_key: 'not a key' }, 400, 'invalid_key'],
    [{ private_key: rsa, pkcs12: 'AAAA' }, 400, 'invalid_request'],
    [{}, 400, 'invalid_request'],
    [{ private_key: rsa, state: 'retired' }, 400, 'invalid_request'],
  ];
  const before = await jwksOf(ctx, 'default');
  for (const [payload, status, code] of cases) {
    const res = await importRequest(ctx, payload);
    assert.equal(res.statusCode, status, `${code}: ${res.body}`);
    assert.equal(res.json().code, code);
  }
  assert.deepEqual(await jwksOf(ctx, 'default'), before, 'nothing changed');
  const signer = await ctx.app.internal.inject({ method: 'POST', url: '/v1/keys/import', headers: bearer(TOKENS.broad), payload: { private_key: rsa } });
  assert.equal(signer.json().code, 'scope_denied');
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'pem', type: 'sec1' }).toString();
  assert.equal((await importRequest(ctx, { private_key: ec, key_set: 'es' })).statusCode, 200, 'SEC1 EC keys are read');
});
