import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import jwt from 'jsonwebtoken';
import jwksRsa from 'jwks-rsa';
import { FormatRegistry } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { AssertionResponseSchema, JwtResponseSchema } from '../../../src/routes/internal/schemas.js';
import { bearer, buildTestApp } from '../../helpers/app.js';
import { ACUMATICA_AUD, ACUMATICA_CLIENT, TOKENS, clientsFile } from '../../helpers/clients.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
FormatRegistry.Set('uuid', (value) => UUID.test(value));

async function listening(env: Record<string, string> = {}) {
  const built = await buildTestApp({ API_CLIENTS_FILE: clientsFile(), ...env });
  const { publicUrl, internalUrl } = await built.app.listen();
  return { ...built, jwksUri: `${publicUrl}/.well-known/jwks.json`, publicUrl, internalUrl };
}

function post(app: Awaited<ReturnType<typeof listening>>['app'], url: string, token: string, payload: unknown) {
  return app.internal.inject({ method: 'POST', url, headers: bearer(token), payload: payload as Record<string, unknown> });
}

test('an assertion verifies with jwks-rsa + jsonwebtoken against the live JWKS URL (Acumatica shape)', async (t) => {
  const { app, jwksUri } = await listening();
  t.after(() => app.close());
  const res = await post(app, '/v1/assertions', TOKENS.app, { client_id: ACUMATICA_CLIENT, audience: ACUMATICA_AUD });
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers['cache-control'], 'no-store');
  const body = res.json();
  assert.equal(body.client_assertion_type, 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
  assert.equal(body.alg, 'RS256');
  assert.match(body.jti, UUID);

  const header = decodeProtectedHeader(body.client_assertion);
  assert.deepEqual(header, { alg: 'RS256', kid: body.kid, typ: 'JWT' });
  const client = jwksRsa({ jwksUri, cache: false });
  const signingKey = await client.getSigningKey(header.kid);
  const claims = jwt.verify(body.client_assertion, signingKey.getPublicKey(), {
    algorithms: ['RS256'],
    audience: ACUMATICA_AUD,
    issuer: ACUMATICA_CLIENT,
    subject: ACUMATICA_CLIENT,
  }) as jwt.JwtPayload;
  assert.equal(claims.iss, ACUMATICA_CLIENT);
  assert.equal(claims.sub, ACUMATICA_CLIENT);
  assert.equal(claims.aud, ACUMATICA_AUD);
  assert.equal(claims.exp! - claims.iat!, 60, 'default lifetime 60 s');
  assert.equal(claims.exp, body.expires_at);
  assert.equal(claims.jti, body.jti);
  assert.equal(body.kid, app.keys.view('default')!.active.kid, 'header kid is the active JWKS kid (rule 10)');
});

test('every algorithm verifies with jose createRemoteJWKSet; typ and subject on request', async (t) => {
  const { writeFileSync, mkdtempSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const sets = join(mkdtempSync(join(tmpdir(), 'sets-')), 'sets.yaml');
  writeFileSync(sets, 'keySets:\n  default: {}\n  ps: { alg: PS256 }\n  es: { alg: ES256 }\n  es5: { alg: ES512 }\n  ed: { alg: EdDSA }\n');
  const { app, publicUrl } = await listening({ KEY_SETS_FILE: sets });
  t.after(() => app.close());
  for (const [set, alg] of [['default', 'RS256'], ['ps', 'PS256'], ['es', 'ES256'], ['es5', 'ES512'], ['ed', 'EdDSA']] as const) {
    const res = await post(app, '/v1/assertions', TOKENS.broad, {
      client_id: 'okta-client',
      audience: 'https://dev.okta.example/oauth2/v1/token',
      key_set: set,
      subject: 'svc-user',
      typ: 'client-authentication+jwt',
      ttl: 300,
    });
    assert.equal(res.statusCode, 200, res.body);
    const jwks = createRemoteJWKSet(new URL(`${publicUrl}/jwks/${set}.json`));
    const { payload, protectedHeader } = await jwtVerify(res.json().client_assertion, jwks, {
      algorithms: [alg],
      audience: 'https://dev.okta.example/oauth2/v1/token',
      issuer: 'okta-client',
      typ: 'client-authentication+jwt',
    });
    assert.equal(protectedHeader.alg, alg);
    assert.equal(payload.sub, 'svc-user');
    assert.equal(payload.exp! - payload.iat!, 300);
  }
});

test('every assertion gets a fresh jti; aud is copied exactly (case, scheme, trailing slash)', async (t) => {
  const { app } = await listening();
  t.after(() => app.close());
  const jtis = new Set<string>();
  for (let i = 0; i < 50; i++) {
    const res = await post(app, '/v1/assertions', TOKENS.app, { client_id: ACUMATICA_CLIENT, audience: ACUMATICA_AUD });
    jtis.add(res.json().jti);
  }
  assert.equal(jtis.size, 50);
  for (const audience of ['https://Login.Example.com/Token/', 'account-d.docusign.com', 'https://login.salesforce.com']) {
    const res = await post(app, '/v1/assertions', TOKENS.broad, { client_id: 'c', audience });
    assert.equal(jwt.decode(res.json().client_assertion, { json: true })!.aud, audience);
  }
});

test('a 200 answer (written without Fastify\'s reply pipeline) has the documented shape and headers, over a real socket, and is counted', async (t) => {
  const { app, internalUrl } = await listening();
  t.after(() => app.close());
  const cases = [
    { url: '/v1/assertions', token: TOKENS.app, payload: { client_id: ACUMATICA_CLIENT, audience: ACUMATICA_AUD }, schema: AssertionResponseSchema, tokenField: 'client_assertion' },
    { url: '/v1/jwt', token: TOKENS.broad, payload: { claims: { iss: 'integration-key', aud: 'account-d.docusign.com' } }, schema: JwtResponseSchema, tokenField: 'jwt' },
  ];
  for (const { url, token, payload, schema, tokenField } of cases) {
    const res = await fetch(`${internalUrl}${url}`, { method: 'POST', headers: { ...bearer(token), 'content-type': 'application/json' }, body: JSON.stringify(payload) });
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.equal(res.headers.get('content-type'), 'application/json; charset=utf-8');
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.equal(Number(res.headers.get('content-length')), Buffer.byteLength(text));
    const body = JSON.parse(text) as Record<string, unknown>;
    assert.ok(Value.Check(schema, JSON.parse(text)), `${url}: ${text}`);
    assert.match(String(body.jti), UUID);
    assert.equal(decodeProtectedHeader(String(body[tokenField])).kid, body.kid);
  }
  const metrics = (await app.internal.inject({ method: 'GET', url: '/metrics' })).body;
  for (const route of ['/v1/assertions', '/v1/jwt']) {
    assert.match(metrics, new RegExp(`jwks_signer_http_requests_total\\{port="internal",route="${route}",status="200"\\} 1\\b`));
  }
});

test('POST /v1/jwt signs general grants (DocuSign, Google, Workfront) under the same policy', async (t) => {
  const { app, jwksUri } = await listening();
  t.after(() => app.close());
  const res = await post(app, '/v1/jwt', TOKENS.broad, {
    claims: { iss: 'integration-key', sub: 'user-guid', aud: 'account-d.docusign.com', scope: 'signature impersonation' },
    ttl: 600,
  });
  assert.equal(res.statusCode, 200, res.body);
  const body = res.json();
  const key = await jwksRsa({ jwksUri }).getSigningKey(body.kid);
  const claims = jwt.verify(body.jwt, key.getPublicKey(), { audience: 'account-d.docusign.com' }) as jwt.JwtPayload;
  assert.equal(claims.scope, 'signature impersonation');
  assert.equal(claims.sub, 'user-guid');
  assert.equal(claims.exp! - claims.iat!, 600);
  const defaultSub = await post(app, '/v1/jwt', TOKENS.broad, { claims: { iss: 'sa@p.iam.gserviceaccount.com', aud: 'https://oauth2.googleapis.com/token' } });
  assert.equal(jwt.decode(defaultSub.json().jwt, { json: true })!.sub, 'sa@p.iam.gserviceaccount.com', 'sub defaults to iss (rule 12)');
});

test('authentication: 401 without or with a wrong token, 403 outside scope', async (t) => {
  const { app } = await listening();
  t.after(() => app.close());
  const payload = { client_id: ACUMATICA_CLIENT, audience: ACUMATICA_AUD };
  const cases: Array<[Record<string, string>, number, string]> = [
    [{ 'content-type': 'application/json' }, 401, 'missing_token'],
    [{ authorization: 'Bearer wrong-token', 'content-type': 'application/json' }, 401, 'invalid_token'],
    [{ authorization: `Basic ${TOKENS.app}`, 'content-type': 'application/json' }, 401, 'invalid_token'],
    [{ authorization: `Bearer ${TOKENS.app} extra`, 'content-type': 'application/json' }, 401, 'invalid_token'],
    [bearer(TOKENS.admin), 403, 'scope_denied'],
  ];
  for (const [headers, status, code] of cases) {
    const res = await app.internal.inject({ method: 'POST', url: '/v1/assertions', headers, payload });
    assert.equal(res.statusCode, status, code);
    assert.equal(res.json().code, code);
    assert.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8');
  }
  const missing = await app.internal.inject({ method: 'GET', url: '/v1/keys' });
  assert.equal(missing.headers['www-authenticate'], 'Bearer realm="jwks-signer"');
  const signerOnKeys = await app.internal.inject({ method: 'GET', url: '/v1/keys', headers: bearer(TOKENS.app) });
  assert.equal(signerOnKeys.statusCode, 403);
  assert.equal(signerOnKeys.json().code, 'scope_denied');
});

test('policy refusals: client_id, subject, audience, key set, ttl, extra claims', async (t) => {
  const { app } = await listening();
  t.after(() => app.close());
  const base = { client_id: ACUMATICA_CLIENT, audience: ACUMATICA_AUD };
  const cases: Array<[Record<string, unknown>, number, string]> = [
    [{ ...base, client_id: 'someone-else@Company' }, 403, 'client_id_denied'],
    [{ ...base, subject: 'user-2' }, 403, 'subject_denied'],
    [{ ...base, audience: `${ACUMATICA_AUD}/` }, 403, 'audience_denied'],
    [{ ...base, audience: ACUMATICA_AUD.toUpperCase() }, 403, 'audience_denied'],
    [{ ...base, key_set: 'other' }, 404, 'unknown_key_set'],
    [{ ...base, ttl: 121 }, 403, 'ttl_denied'],
    [{ ...base, claims: { tenant: 'x' } }, 403, 'extra_claims_denied'],
  ];
  for (const [payload, status, code] of cases) {
    const res = await post(app, '/v1/assertions', TOKENS.app, payload);
    assert.equal(res.statusCode, status, `${code}: ${res.body}`);
    assert.equal(res.json().code, code);
  }
  const allowed = await post(app, '/v1/assertions', TOKENS.app, { ...base, subject: 'user-1', ttl: 120, claims: { scope: 'api' } });
  assert.equal(allowed.statusCode, 200, allowed.body);
  const claims = jwt.decode(allowed.json().client_assertion, { json: true })!;
  assert.equal(claims.sub, 'user-1');
  assert.equal(claims.scope, 'api');
  const jwtDenied = await post(app, '/v1/jwt', TOKENS.app, { claims: { iss: ACUMATICA_CLIENT, aud: 'https://elsewhere/token' } });
  assert.equal(jwtDenied.json().code, 'audience_denied');
  const ttlCap = await post(app, '/v1/assertions', TOKENS.broad, { client_id: 'c', audience: 'a', ttl: 601 });
  assert.equal(ttlCap.json().code, 'ttl_denied', 'capped at TOKEN_MAX_TTL (600 s) even for a broad client');
});

test('bad input: each answered with its 4xx and stable code, never a 5xx', async (t) => {
  const { app } = await listening();
  t.after(() => app.close());
  const good = { client_id: 'c', audience: 'https://a/token' };
  const raw = (payload: string, contentType = 'application/json') =>
    app.internal.inject({ method: 'POST', url: '/v1/assertions', headers: { authorization: `Bearer ${TOKENS.broad}`, 'content-type': contentType }, payload });
  const cases: Array<[string, () => ReturnType<typeof raw>, number, string]> = [
    ['malformed JSON', () => raw('{"client_id": '), 400, 'invalid_json'],
    ['empty body', () => raw(''), 400, 'invalid_json'],
    ['JSON array', () => raw('[]'), 400, 'invalid_request'],
    ['missing audience', () => raw(JSON.stringify({ client_id: 'c' })), 400, 'invalid_request'],
    ['wrong type', () => raw(JSON.stringify({ ...good, client_id: 42 })), 400, 'invalid_request'],
    ['ttl as string', () => raw(JSON.stringify({ ...good, ttl: '60' })), 400, 'invalid_request'],
    ['negative ttl', () => raw(JSON.stringify({ ...good, ttl: -1 })), 400, 'invalid_request'],
    ['zero ttl', () => raw(JSON.stringify({ ...good, ttl: 0 })), 400, 'invalid_request'],
    ['absurd ttl', () => raw(JSON.stringify({ ...good, ttl: 1e12 })), 400, 'invalid_request'],
    ['fractional ttl', () => raw(JSON.stringify({ ...good, ttl: 1.5 })), 400, 'invalid_request'],
    ['unknown field', () => raw(JSON.stringify({ ...good, foo: 1 })), 400, 'invalid_request'],
    ['alg override', () => raw(JSON.stringify({ ...good, alg: 'none' })), 400, 'invalid_request'],
    ['kid override', () => raw(JSON.stringify({ ...good, kid: 'attacker' })), 400, 'invalid_request'],
    ['header injection', () => raw(JSON.stringify({ ...good, header: { jku: 'https://evil' } })), 400, 'invalid_request'],
    ['bad typ', () => raw(JSON.stringify({ ...good, typ: 'at+jwt' })), 400, 'invalid_request'],
    ['reserved claim exp', () => raw(JSON.stringify({ ...good, claims: { exp: 9999999999 } })), 400, 'reserved_claim'],
    ['reserved claim iss', () => raw(JSON.stringify({ ...good, claims: { iss: 'x' } })), 400, 'reserved_claim'],
    ['reserved claim jti', () => raw(JSON.stringify({ ...good, claims: { jti: 'fixed' } })), 400, 'reserved_claim'],
    ['too many claims', () => raw(JSON.stringify({ ...good, claims: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`c${i}`, i])) })), 400, 'invalid_request'],
    ['bad key set name', () => raw(JSON.stringify({ ...good, key_set: '../etc' })), 400, 'invalid_request'],
    ['huge body', () => raw(JSON.stringify({ ...good, claims: { blob: 'x'.repeat(20_000) } })), 413, 'payload_too_large'],
    ['text/plain', () => raw('hello', 'text/plain'), 415, 'unsupported_media_type'],
    ['regression: deeply nested claims (a 500 before)', () => raw(`{"client_id":"c","audience":"a","claims":{"x":${'['.repeat(5000)}${']'.repeat(5000)}}}`), 400, 'invalid_request'],
    ['nesting past 32 levels', () => raw(`{"client_id":"c","audience":"a","claims":{"x":${'['.repeat(32)}${']'.repeat(32)}}}`), 400, 'invalid_request'],
    ['prototype pollution', () => raw('{"client_id":"c","audience":"a","claims":{"__proto__":{"admin":true}}}'), 400, 'invalid_json'],
    ['form body', () => raw('client_id=c', 'application/x-www-form-urlencoded'), 415, 'unsupported_media_type'],
  ];
  for (const [name, send, status, code] of cases) {
    const res = await send();
    assert.equal(res.statusCode, status, `${name}: ${res.body}`);
    assert.equal(res.json().code, code, name);
    assert.doesNotMatch(res.body, /at .*\.(ts|js):\d+/, `${name}: no stack trace`);
  }
  const jwtCases: Array<[unknown, string]> = [
    [{ claims: { aud: 'a' } }, 'invalid_request'],
    [{ claims: { iss: 'i' } }, 'invalid_request'],
    [{ claims: { iss: 'i', aud: [] } }, 'invalid_request'],
    [{ claims: { iss: 'i', aud: 'a', exp: 1 } }, 'reserved_claim'],
    [{ claims: { iss: 'i', aud: 'a', iat: 1 } }, 'reserved_claim'],
    [{ claims: { iss: 'i', aud: 'a' }, alg: 'HS256' }, 'invalid_request'],
  ];
  for (const [payload, code] of jwtCases) {
    const res = await post(app, '/v1/jwt', TOKENS.broad, payload);
    assert.equal(res.statusCode, 400, JSON.stringify(payload));
    assert.equal(res.json().code, code, JSON.stringify(payload));
  }
});

test('nesting up to 32 levels is accepted; brackets inside strings do not count', async (t) => {
  const { app } = await listening();
  t.after(() => app.close());
  const nested = `{"client_id":"c","audience":"a","claims":{"x":${'['.repeat(30)}"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]][[[["${']'.repeat(30)}}}`;
  const res = await app.internal.inject({ method: 'POST', url: '/v1/assertions', headers: bearer(TOKENS.broad), payload: nested });
  assert.equal(res.statusCode, 200, res.body);
});

test('a token over the 51,200-character IdentityServer limit is refused, not sent', async (t) => {
  const { app } = await listening({ INTERNAL_BODY_LIMIT: '131072' });
  t.after(() => app.close());
  const res = await post(app, '/v1/assertions', TOKENS.broad, { client_id: 'c', audience: 'a', claims: { blob: 'x'.repeat(40_000) } });
  assert.equal(res.statusCode, 400);
  assert.equal(res.json().code, 'token_too_large');
  const fits = await post(app, '/v1/assertions', TOKENS.broad, { client_id: 'c', audience: 'a', claims: { blob: 'x'.repeat(30_000) } });
  assert.equal(fits.statusCode, 200);
  assert.ok(fits.json().client_assertion.length <= 51_200);
});
