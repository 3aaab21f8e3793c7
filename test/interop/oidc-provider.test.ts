// panva's oidc-provider as a real OAuth server: a client registered by jwks_uri pointing at our service,
// token_endpoint_auth_method private_key_jwt, the client_credentials grant with our assertion.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { bearer, buildTestApp, type TestApp } from '../helpers/app.js';
import { TOKENS, clientsFile } from '../helpers/clients.js';
import { type OidcServer, startOidcServer } from '../helpers/oidc-server.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';

let redis: RedisServer;
let signer: TestApp;
let publicUrl: string;
before(async () => {
  redis = await startRedis();
  const sets = join(mkdtempSync(join(tmpdir(), 'sets-')), 'sets.yaml');
  writeFileSync(sets, 'keySets:\n  default: {}\n  ps: { alg: PS256 }\n  es: { alg: ES256 }\n');
  signer = await buildTestApp({ REDIS_URL: redis.url, KEY_SETS_FILE: sets, API_CLIENTS_FILE: clientsFile() });
  ({ publicUrl } = await signer.app.listen());
});
after(async () => {
  await signer.app.close();
  await redis.close();
});

async function assertion(body: Record<string, unknown>): Promise<string> {
  const res = await signer.app.internal.inject({ method: 'POST', url: '/v1/assertions', headers: bearer(TOKENS.broad), payload: body });
  assert.equal(res.statusCode, 200, res.body);
  return res.json().client_assertion;
}

test('client_credentials with our assertion returns an access token; a replayed assertion is refused', async (t) => {
  const clientId = '5f2a1c9e-8b3d-4e6f-a1b2-c3d4e5f60718@Company';
  const oidc: OidcServer = await startOidcServer({ clients: [{ clientId, jwksUri: `${publicUrl}/.well-known/jwks.json`, alg: 'RS256' }] });
  t.after(() => oidc.close());
  const token = await assertion({ client_id: clientId, audience: oidc.tokenEndpoint });
  const first = await oidc.clientCredentials({ clientId, assertion: token });
  assert.equal(first.status, 200, JSON.stringify({ body: first.body, errors: oidc.errors }));
  assert.equal(typeof first.body.access_token, 'string');
  assert.equal(first.body.token_type, 'Bearer');

  const replay = await oidc.clientCredentials({ clientId, assertion: token });
  assert.equal(replay.status, 401);
  assert.equal(replay.body.error, 'invalid_client');
  assert.match(oidc.errors.at(-1)?.detail ?? '', /only be used once/);

  const fresh = await oidc.clientCredentials({ clientId, assertion: await assertion({ client_id: clientId, audience: oidc.tokenEndpoint }) });
  assert.equal(fresh.status, 200, 'a fresh assertion (new jti) is accepted again');

  const slash = await oidc.clientCredentials({ clientId, assertion: await assertion({ client_id: clientId, audience: `${oidc.tokenEndpoint}/` }) });
  assert.equal(slash.status, 401, 'an audience that differs by a trailing slash is refused by the server');
});

test('PS256 and ES256 key sets, the strict audience mode, and a rotation the server follows', async (t) => {
  const oidc = await startOidcServer({
    clients: [
      { clientId: 'ps-client', jwksUri: `${publicUrl}/jwks/ps.json`, alg: 'PS256' },
      { clientId: 'es-client', jwksUri: `${publicUrl}/jwks/es.json`, alg: 'ES256' },
    ],
  });
  t.after(() => oidc.close());
  for (const [clientId, set] of [['ps-client', 'ps'], ['es-client', 'es']] as const) {
    const res = await oidc.clientCredentials({ clientId, assertion: await assertion({ client_id: clientId, audience: oidc.tokenEndpoint, key_set: set }) });
    assert.equal(res.status, 200, `${set}: ${JSON.stringify(oidc.errors.at(-1))}`);
  }

  const strict = await startOidcServer({ audienceMode: 'strict', clients: [{ clientId: 'strict-client', jwksUri: `${publicUrl}/.well-known/jwks.json` }] });
  t.after(() => strict.close());
  const strictOk = await strict.clientCredentials({
    clientId: 'strict-client',
    assertion: await assertion({ client_id: 'strict-client', audience: strict.issuer, typ: 'client-authentication+jwt' }),
  });
  assert.equal(strictOk.status, 200, JSON.stringify(strict.errors.at(-1)));
  const strictBad = await strict.clientCredentials({ clientId: 'strict-client', assertion: await assertion({ client_id: 'strict-client', audience: strict.tokenEndpoint }) });
  assert.equal(strictBad.status, 401);

  const before = await assertion({ client_id: 'es-client', audience: oidc.tokenEndpoint, key_set: 'es' });
  await signer.app.keys.rotate('es', { force: true });
  const afterRotation = await assertion({ client_id: 'es-client', audience: oidc.tokenEndpoint, key_set: 'es' });
  await oidc.expireJwksCache('es-client');
  for (const token of [before, afterRotation]) {
    const res = await oidc.clientCredentials({ clientId: 'es-client', assertion: token });
    assert.equal(res.status, 200, 'tokens of the old and the new active key are both accepted during the overlap');
  }
});
