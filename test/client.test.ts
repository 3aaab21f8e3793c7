// The typed client (src/client.ts) against a listening service: results, problem codes, transport failures.
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { X509Certificate } from 'node:crypto';
import type { Static } from '@sinclair/typebox';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import {
  type AssertionRequest,
  type AssertionResult,
  createClient,
  type ImportRequest,
  type ImportResult,
  type JwtRequest,
  type JwtResult,
  JwksSignerError,
  type KeysResult,
  PROBLEM_CODES,
  type RevokeResult,
  type RotateRequest,
  type RotateResult,
  type TokensRequest,
  type TokensResult,
} from '../src/client.js';
import type { App } from '../src/app.js';
import { Errors } from '../src/errors.js';
import type {
  AssertionBody,
  AssertionResponse,
  ImportBody,
  ImportResponse,
  JwtBody,
  JwtResponse,
  KeysResponse,
  RevokeResponse,
  RotateBody,
  RotateResponse,
  TokenBody,
} from '../src/routes/internal/schemas.js';
import type { RevokeBodySchema } from '../src/routes/internal/schemas.js';
import { buildTestApp } from './helpers/app.js';
import { ACUMATICA_AUD, ACUMATICA_CLIENT, TOKENS, clientsFile } from './helpers/clients.js';
import { startOidcServer } from './helpers/oidc-server.js';
import { freePort } from './helpers/redis.js';

// The client's types are written out (it imports nothing from the service); these fail to compile if they drift from the schemas.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const typesMatch: [
  Same<AssertionRequest, AssertionBody>,
  Same<JwtRequest, JwtBody>,
  Same<RotateRequest, RotateBody>,
  Same<ImportRequest, ImportBody>,
  Same<{ key_set?: string }, Static<typeof RevokeBodySchema>>,
  Same<AssertionResult, AssertionResponse>,
  Same<JwtResult, JwtResponse>,
  Same<KeysResult, KeysResponse>,
  Same<RotateResult, RotateResponse>,
  Same<RevokeResult, RevokeResponse>,
  Same<ImportResult, ImportResponse>,
  Same<TokensRequest, TokenBody>,
] = [true, true, true, true, true, true, true, true, true, true, true, true];

let app: App;
let internalUrl: string;
let publicUrl: string;

before(async () => {
  ({ app } = await buildTestApp({ API_CLIENTS_FILE: clientsFile() }));
  ({ internalUrl, publicUrl } = await app.listen());
});
after(() => app.close());

async function failure(promise: Promise<unknown>): Promise<JwksSignerError> {
  const err = await promise.then(
    () => assert.fail('expected a JwksSignerError'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof JwksSignerError, String(err));
  return err;
}

test('the client types match the API schemas, and its problem codes cover the error catalogue', () => {
  assert.ok(typesMatch.every(Boolean));
  for (const factory of Object.values(Errors)) assert.ok((PROBLEM_CODES as readonly string[]).includes(factory.code), factory.code);
});

test('assertion() answers a typed, verifiable client assertion', async () => {
  const signer = createClient({ url: internalUrl, token: TOKENS.app });
  const result: AssertionResult = await signer.assertion({ client_id: ACUMATICA_CLIENT, audience: ACUMATICA_AUD, ttl: 90, x5t: 'x5t#S256' });
  assert.equal(result.client_assertion_type, 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
  assert.equal(result.kid, app.keys.view('default')!.active.kid);
  const { payload, protectedHeader } = await jwtVerify(result.client_assertion, createRemoteJWKSet(new URL(`${publicUrl}/.well-known/jwks.json`)), {
    issuer: ACUMATICA_CLIENT,
    audience: ACUMATICA_AUD,
  });
  assert.equal(payload.exp, result.expires_at);
  assert.equal(payload.exp! - payload.iat!, 90);
  assert.equal(payload.jti, result.jti);
  assert.equal(typeof protectedHeader['x5t#S256'], 'string');
});

test('jwt() answers a signed JWT with the given claims', async () => {
  const signer = createClient({ url: `${internalUrl}/`, token: TOKENS.broad });
  const result = await signer.jwt({ claims: { iss: 'svc@example.com', aud: 'https://oauth2.example.com/token', scope: 'read' } });
  const { payload } = await jwtVerify(result.jwt, createRemoteJWKSet(new URL(`${publicUrl}/.well-known/jwks.json`)), { issuer: 'svc@example.com' });
  assert.equal(payload.scope, 'read');
  assert.equal(result.alg, 'RS256');
});

test('keys: list, rotate, import, certificate and revoke', async () => {
  const admin = createClient({ url: internalUrl, token: TOKENS.admin }).keys;
  const listed = await admin.list();
  assert.deepEqual(listed.key_sets.map((s) => s.key_set), ['default']);
  const before = listed.key_sets[0]!;
  assert.deepEqual((await admin.list({ key_set: 'default' })).key_sets[0]!.active_kid, before.active_kid);

  const notReady = await failure(admin.rotate());
  assert.equal(notReady.code, 'next_key_not_ready');
  assert.equal(notReady.status, 409);
  assert.equal(notReady.problem?.type, 'urn:jwks-signer:error:next_key_not_ready');

  const rotated = await admin.rotate({ force: true, if_active_kid: before.active_kid });
  assert.equal(rotated.rotated, true);
  assert.notEqual(rotated.active_kid, before.active_kid);
  assert.equal(rotated.keys.find((k) => k.kid === before.active_kid)?.state, 'retired');
  const again = await admin.rotate({ force: true, if_active_kid: before.active_kid });
  assert.equal(again.rotated, false, 'if_active_kid makes a retry a no-op');

  const privateKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  const imported = await admin.import({ private_key: privateKey, state: 'next' });
  assert.equal(imported.keys.find((k) => k.kid === imported.imported_kid)?.state, 'next');
  const duplicate = await failure(admin.import({ private_key: privateKey, state: 'next' }));
  assert.equal(duplicate.code, 'key_exists');

  const pem = await admin.certificate(imported.imported_kid);
  assert.match(pem, /^-----BEGIN CERTIFICATE-----\n/);
  assert.ok(new X509Certificate(pem).publicKey);

  const revoked = await admin.revoke(imported.imported_kid);
  assert.equal(revoked.revoked, true);
  assert.deepEqual(revoked.events.slice(0, 1), [`revoked ${imported.imported_kid}`]);
  assert.equal((await failure(admin.revoke('no-such-key'))).code, 'key_not_found');
  assert.equal((await failure(admin.list({ key_set: 'nope' }))).code, 'unknown_key_set');
});

test('policy and authentication failures carry the problem code, status and detail', async () => {
  const denied = await failure(createClient({ url: internalUrl, token: TOKENS.app }).assertion({ client_id: ACUMATICA_CLIENT, audience: 'https://evil.example.com/token' }));
  assert.equal(denied.code, 'audience_denied');
  assert.equal(denied.status, 403);
  assert.equal(denied.message, denied.problem?.detail ?? denied.problem?.title);

  const scope = await failure(createClient({ url: internalUrl, token: TOKENS.app }).keys.list());
  assert.equal(scope.code, 'scope_denied');

  const invalid = await failure(createClient({ url: internalUrl, token: TOKENS.app }).assertion({ client_id: ACUMATICA_CLIENT, audience: ACUMATICA_AUD, ttl: 0 }));
  assert.equal(invalid.code, 'invalid_request');
  assert.equal(invalid.problem?.errors?.[0]?.path, 'body/ttl');

  const token = await failure(createClient({ url: internalUrl, token: 'wrong-token-0123456789' }).keys.list());
  assert.equal(token.code, 'invalid_token');
  assert.equal(token.status, 401);
  assert.doesNotMatch(token.message, /wrong-token/, 'the token is never in a message');
});

test('transport failures: network_error without an answer, invalid_response for an answer that is not the API', async () => {
  const closed = await freePort();
  const network = await failure(createClient({ url: `http://127.0.0.1:${closed}`, token: TOKENS.admin }).keys.list());
  assert.equal(network.code, 'network_error');
  assert.equal(network.status, undefined);
  assert.match(network.message, /ECONNREFUSED/);

  const gateway = await failure(
    createClient({ url: internalUrl, token: TOKENS.admin, fetch: async () => new Response('<html>Bad gateway</html>', { status: 502 }) }).keys.list(),
  );
  assert.equal(gateway.code, 'invalid_response');
  assert.equal(gateway.status, 502);

  const slow = await failure(
    createClient({
      url: internalUrl,
      token: TOKENS.admin,
      timeoutMs: 50,
      fetch: (_input, init) => new Promise((_resolve, reject) => init?.signal?.addEventListener('abort', () => reject(init.signal!.reason))),
    }).keys.list(),
  );
  assert.equal(slow.code, 'network_error');
  assert.match(slow.message, /no answer within 50 ms/);
});

test('requests: the given fetch is used, a path prefix is kept, and the token goes in the Authorization header', async () => {
  const seen: Array<{ url: string; init: RequestInit | undefined }> = [];
  const signer = createClient({
    url: 'http://signer.internal:8081/jwks-signer/',
    token: TOKENS.admin,
    fetch: async (input, init) => {
      seen.push({ url: String(input), init });
      return Response.json({ key_sets: [] });
    },
  });
  await signer.keys.list({ key_set: 'a b' });
  await signer.keys.revoke('kid/1', { key_set: 'x' });
  assert.deepEqual(
    seen.map((s) => s.url),
    ['http://signer.internal:8081/jwks-signer/v1/keys?key_set=a%20b', 'http://signer.internal:8081/jwks-signer/v1/keys/kid%2F1/revoke'],
  );
  assert.equal((seen[0]!.init!.headers as Record<string, string>).authorization, `Bearer ${TOKENS.admin}`);
  assert.equal(seen[0]!.init!.body, undefined);
  assert.equal(seen[1]!.init!.body, JSON.stringify({ key_set: 'x' }));
});

test('tokens() answers the token endpoint response, typed; its OAuth errors keep the upstream error code', async (t) => {
  const port = await freePort();
  const oidc = await startOidcServer({ clients: [{ clientId: 'typed-app', jwksUri: `http://127.0.0.1:${port}/.well-known/jwks.json` }] });
  t.after(() => oidc.close());
  const file = join(mkdtempSync(join(tmpdir(), 'jwks-signer-client-broker-')), 'clients.json');
  const brokerToken = 'broker-token-0123456789';
  const tokenSha256 = createHash('sha256').update(brokerToken).digest('hex');
  writeFileSync(file, JSON.stringify({ clients: [{ name: 'broker', tokenSha256, scopes: ['tokens'], clientIds: ['*'], audiences: ['*'], tokenEndpoints: [oidc.tokenEndpoint] }] }));
  const { app: broker } = await buildTestApp({ PORT: String(port), API_CLIENTS_FILE: file });
  t.after(() => broker.close());
  const client = createClient({ url: (await broker.listen()).internalUrl, token: brokerToken });

  const request: TokensRequest = { token_endpoint: oidc.tokenEndpoint, client_id: 'typed-app', grant_type: 'client_credentials' };
  const result: TokensResult = await client.tokens(request);
  assert.equal(result.token_type, 'Bearer');
  assert.equal(typeof result.access_token, 'string');
  assert.equal(result.expires_in, 600);

  const refused = await failure(client.tokens({ ...request, client_id: 'unknown-app' }));
  assert.equal(refused.code, 'token_endpoint_error');
  assert.equal(refused.status, 502);
  assert.equal(refused.problem?.upstream?.error, 'invalid_client');
  assert.equal(refused.problem?.upstream?.status, 401);

  const denied = await failure(client.tokens({ ...request, token_endpoint: `${oidc.issuer}/elsewhere` }));
  assert.equal(denied.code, 'token_endpoint_denied');
  assert.equal(denied.status, 403);
});
