// The doctor's checks on fetched data: one case per rule, asserted by status.
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { test } from 'node:test';
import { calculateJwkThumbprint, type JWK } from 'jose';
import type { KeySetDescription } from '../../src/client.js';
import {
  checkAudience,
  checkCacheHeaders,
  checkClientIdForm,
  checkClock,
  checkDiscovery,
  checkJwksKeys,
  checkJwksResponse,
  diagnoseInvalidClient,
  invalidClientHint,
  matchServiceView,
  publicationLeadSeconds,
} from '../../src/cli/doctor.js';

async function publicJwk(bits = 2048): Promise<Record<string, unknown>> {
  const jwk = generateKeyPairSync('rsa', { modulusLength: bits }).publicKey.export({ format: 'jwk' }) as JWK;
  return { ...jwk, kid: await calculateJwkThumbprint(jwk, 'sha256'), use: 'sig', alg: 'RS256' };
}

const body = (value: unknown) => Buffer.from(JSON.stringify(value));
const byId = (checks: Array<{ id: string; status: string }>) => Object.fromEntries(checks.map((c) => [c.id, c.status]));

test('response: slow, large and mistyped answers', () => {
  const base = { url: 'https://jwks.example.com/jwks.json', status: 200, body: body({ keys: [] }), truncated: false };
  const headers = new Headers({ 'content-type': 'application/jwk-set+json; charset=utf-8' });
  assert.deepEqual(byId(checkJwksResponse({ ...base, headers, elapsedMs: 20 }).checks), { 'jwks.redirect': 'ok', 'jwks.status': 'ok', 'jwks.time': 'ok', 'jwks.size': 'ok', 'jwks.content_type': 'ok' });
  assert.equal(byId(checkJwksResponse({ ...base, headers, elapsedMs: 1_500 }).checks)['jwks.time'], 'warn');
  assert.equal(byId(checkJwksResponse({ ...base, headers, elapsedMs: 6_000 }).checks)['jwks.time'], 'fail');
  const large = checkJwksResponse({ ...base, headers, elapsedMs: 1, body: Buffer.alloc(60_000) });
  assert.equal(byId(large.checks)['jwks.size'], 'fail');
  assert.equal(large.readable, false);
  assert.equal(byId(checkJwksResponse({ ...base, headers: new Headers({ 'content-type': 'text/plain' }), elapsedMs: 1 }).checks)['jwks.content_type'], 'fail');
  const missing = checkJwksResponse({ ...base, status: 404, headers, elapsedMs: 1 });
  assert.equal(byId(missing.checks)['jwks.status'], 'fail');
  assert.equal(missing.readable, false);
});

test('keys: private members, weak RSA, other uses, missing alg, kids that are not thumbprints, an empty set', async () => {
  const [good, weak] = await Promise.all([publicJwk(), publicJwk(1024)]);
  assert.deepEqual(byId((await checkJwksKeys(body({ keys: [good] }))).checks), { 'jwks.valid_jwks': 'ok', 'jwks.unique_kids': 'ok', 'jwks.kid_thumbprints': 'ok' });
  for (const bad of [{ ...good, d: 'AQAB' }, { ...good, k: 'AQAB' }, weak, { ...good, use: 'enc' }, { ...good, kty: 'oct' }, { ...good, n: undefined }, { ...good, kid: undefined }]) {
    assert.equal(byId((await checkJwksKeys(body({ keys: [bad] }))).checks)['jwks.valid_jwks'], 'fail', JSON.stringify(Object.keys(bad)));
  }
  assert.equal(byId((await checkJwksKeys(body({ keys: [{ ...good, alg: undefined }] }))).checks)['jwks.valid_jwks'], 'warn');
  assert.equal(byId((await checkJwksKeys(body({ keys: [{ ...good, kid: 'key-1' }] }))).checks)['jwks.kid_thumbprints'], 'warn');
  assert.equal(byId((await checkJwksKeys(body({ keys: [] }))).checks)['jwks.valid_jwks'], 'fail');
  assert.equal(byId((await checkJwksKeys(Buffer.from('<html>'))).checks)['jwks.valid_jwks'], 'fail');
  assert.equal(byId((await checkJwksKeys(body({ keys: [good, good] }))).checks)['jwks.unique_kids'], 'fail');
});

const set = (name: string, keys: Array<[string, string]>): KeySetDescription => ({
  key_set: name,
  alg: 'RS256',
  generation: 1,
  updated_at: '2026-01-01T00:00:00.000Z',
  active_kid: keys.find(([, state]) => state === 'active')?.[0] ?? '',
  next_rotation_at: '2026-01-02T00:00:00.000Z',
  keys: keys.map(([kid, state]) => ({ kid, state: state as never, alg: 'RS256', published: state !== 'revoked', created_at: '2026-01-01T00:00:00.000Z', public_jwk: {} as never, has_certificate: true })),
});

test('service view: exactly the published keys of one set; revoked keys must be gone; --key-set picks the set', () => {
  const sets = [set('default', [['a', 'active'], ['n', 'next'], ['r', 'retired'], ['x', 'revoked']]), set('okta', [['o', 'active'], ['p', 'next']])];
  assert.equal(matchServiceView(['a', 'n', 'r'], sets).check.status, 'ok');
  assert.equal(matchServiceView(['a', 'n', 'r'], sets).set?.key_set, 'default');
  assert.equal(matchServiceView(['o', 'p'], sets).set?.key_set, 'okta');
  assert.equal(matchServiceView(['a', 'n', 'r', 'x'], sets).check.status, 'fail');
  assert.equal(matchServiceView(['a', 'n'], sets).check.status, 'fail');
  assert.equal(matchServiceView(['z'], sets).check.status, 'fail');
  assert.equal(matchServiceView(['a', 'n', 'r'], sets, 'okta').check.status, 'fail');
  assert.equal(matchServiceView(['a', 'n', 'r'], sets, 'nope').check.status, 'fail');
  assert.equal(publicationLeadSeconds(sets[0]!), 86_400);
});

test('cache headers: max-age against the publication lead time; no max-age or ETag is a warning', () => {
  const headers = (values: Record<string, string>) => new Headers(values);
  assert.deepEqual(byId(checkCacheHeaders(headers({ 'cache-control': 'public, max-age=300', etag: '"e"' }), 86_400)), { 'jwks.cache_headers': 'ok', 'jwks.etag': 'ok' });
  assert.equal(byId(checkCacheHeaders(headers({ 'cache-control': 'max-age=90000' }), 86_400))['jwks.cache_headers'], 'fail');
  assert.equal(byId(checkCacheHeaders(headers({ 'cache-control': 'max-age=90000' }), undefined))['jwks.cache_headers'], 'warn');
  assert.equal(byId(checkCacheHeaders(headers({}), 86_400))['jwks.cache_headers'], 'warn');
  assert.equal(byId(checkCacheHeaders(headers({ 'cache-control': 'no-store' }), 86_400))['jwks.cache_headers'], 'warn');
  assert.equal(byId(checkCacheHeaders(headers({}), 86_400))['jwks.etag'], 'warn');
});

test('discovery: private_key_jwt and the key set algorithm', () => {
  const document = { issuer: 'https://op.example.com', token_endpoint: 'https://op.example.com/token', token_endpoint_auth_methods_supported: ['private_key_jwt'], token_endpoint_auth_signing_alg_values_supported: ['RS256'] };
  const input = { issuer: 'https://op.example.com', url: 'https://op.example.com/.well-known/openid-configuration', document };
  assert.deepEqual(byId(checkDiscovery({ ...input, alg: 'RS256' })), { 'issuer.discovery': 'ok', 'issuer.auth_methods': 'ok', 'issuer.signing_algs': 'ok' });
  assert.equal(byId(checkDiscovery({ ...input, alg: 'EdDSA' }))['issuer.signing_algs'], 'fail');
  assert.equal(byId(checkDiscovery({ ...input, document: { ...document, token_endpoint_auth_methods_supported: ['client_secret_basic'] } }))['issuer.auth_methods'], 'warn');
  assert.equal(byId(checkDiscovery({ ...input, issuer: 'https://op.example.com/' }))['issuer.discovery'], 'warn');
  assert.equal(byId(checkDiscovery({ ...input, document: { issuer: 'https://op.example.com' } }))['issuer.discovery'], 'fail');
});

test('audience: exact token endpoint or issuer; slash, scheme and case variants named', () => {
  const endpoint = 'https://erp.example.com/identity/connect/token';
  const issuer = 'https://erp.example.com/identity';
  assert.equal(checkAudience('a', endpoint, endpoint, issuer).status, 'ok');
  assert.equal(checkAudience('a', issuer, endpoint, issuer).status, 'ok');
  assert.equal(checkAudience('a', [endpoint, 'x'], endpoint, issuer).status, 'ok');
  for (const variant of [`${endpoint}/`, endpoint.replace('https', 'http'), endpoint.toUpperCase(), `${issuer}/`, 'https://other.example.com/token']) {
    assert.equal(checkAudience('a', variant, endpoint, issuer).status, 'fail', variant);
  }
  assert.equal(checkAudience('a', 'https://other.example.com/token', endpoint).status, 'warn', 'without the issuer it may be the issuer');
  assert.equal(checkAudience('a', undefined, endpoint).status, 'fail');
});

test('clock: offsets within 30 s are fine, beyond 120 s fail; the signer against the server counts', () => {
  assert.equal(checkClock('c', {}).status, 'skip');
  assert.equal(checkClock('c', { jwks: 1, issuer: -2, service: 0 }).status, 'ok');
  assert.equal(checkClock('c', { issuer: 45 }).status, 'warn');
  assert.equal(checkClock('c', { issuer: -200 }).status, 'fail');
  assert.equal(checkClock('c', { issuer: 25, service: -25 }).status, 'warn', '50 s apart');
});

test('client_id form: GUID@Tenant at /identity servers only', () => {
  const acumatica = 'https://erp.example.com/instance/identity/connect/token';
  assert.equal(checkClientIdForm('f', '0c5e3e4a-1b2c-4d5e-8f90-123456789abc@Company', acumatica).status, 'ok');
  assert.equal(checkClientIdForm('f', '0c5e3e4a-1b2c-4d5e-8f90-123456789abc', acumatica).status, 'warn');
  assert.equal(checkClientIdForm('f', 'my-app', 'https://op.example.com/token').status, 'skip');
});

test('invalid_client diagnosis: the first failure is the hint; with no cause found, the registered JWKS URL is', () => {
  const facts = { clientId: 'c', aud: 'https://op.example.com/token', kid: 'k1', tokenEndpoint: 'https://op.example.com/token', jwks: { url: 'https://jwks.example.com/', kids: ['k1'] }, clock: {} };
  const clean = diagnoseInvalidClient(facts);
  assert.equal(byId(clean)['diagnosis.jwks_uri'], 'warn');
  assert.match(invalidClientHint(clean), /^diagnosis\.jwks_uri: /);
  const unknownKid = diagnoseInvalidClient({ ...facts, kid: 'k2' });
  assert.equal(byId(unknownKid)['diagnosis.kid'], 'fail');
  assert.equal(byId(unknownKid)['diagnosis.jwks_uri'], 'skip');
  assert.match(invalidClientHint(unknownKid), /^diagnosis\.kid: /);
  assert.equal(byId(diagnoseInvalidClient({ ...facts, clock: { service: 300 } }))['diagnosis.clock'], 'fail');
  assert.equal(byId(diagnoseInvalidClient({ ...facts, jwks: undefined } as never))['diagnosis.kid'], 'skip');
});
