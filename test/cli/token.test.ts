// `jwks-signer token` end to end: the CLI spawned against a running service and oidc-provider as the OAuth server.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startOidcServer, type OidcServer } from '../helpers/oidc-server.js';
import { cli, json, OPS_TOKEN, type RunningService, startService } from './fixtures.js';

let service: RunningService;
let oidc: OidcServer;
let env: Record<string, string>;

before(async () => {
  service = await startService();
  oidc = await startOidcServer({ clients: [{ clientId: 'app-1', jwksUri: service.jwksUrl }] });
  env = { JWKS_SIGNER_URL: service.internalUrl, JWKS_SIGNER_TOKEN: OPS_TOKEN };
});
after(async () => {
  await oidc?.close();
  await service?.app.close();
});

test('a client_credentials token from the token endpoint, or from the endpoint the issuer names; --json prints the same', async () => {
  const [direct, discovered] = await Promise.all([
    cli(['token', '--token-endpoint', oidc.tokenEndpoint, '--client-id', 'app-1'], env),
    cli(['token', '--issuer', oidc.issuer, '--client-id', 'app-1', '--json'], env),
  ]);
  for (const run of [direct, discovered]) {
    assert.equal(run.code, 0, run.stderr);
    const response = json(run);
    assert.equal(typeof response.access_token, 'string');
    assert.equal(response.token_type, 'Bearer');
  }
});

test('an invalid_client answer: exit 1, the error body on stdout as received, a hint naming the diagnosis', async () => {
  const run = await cli(['token', '--issuer', oidc.issuer, '--client-id', 'app-1', '--audience', `${oidc.tokenEndpoint}/`], env);
  assert.equal(run.code, 1);
  const body = json(run);
  assert.equal(body.error, 'invalid_client');
  assert.equal(oidc.errors.at(-1)?.error, 'invalid_client');
  assert.match(run.stderr, /^jwks-signer: the token endpoint answered HTTP 401 invalid_client$/m);
  assert.match(run.stderr, /^jwks-signer: hint: diagnosis\.audience: /m);
  assert.doesNotMatch(run.stdout + run.stderr, /eyJ[\w-]+\.[\w-]+\./, 'the assertion is not printed');
});

test('other OAuth errors are printed as received, without an invalid_client hint; a grant parameter may come from the environment or stdin', async () => {
  const runs = await Promise.all([
    cli(['token', '--token-endpoint', oidc.tokenEndpoint, '--client-id', 'app-1', '--grant', 'password', '--param', 'username=u'], { ...env, JWKS_SIGNER_PARAM_PASSWORD: 'p' }),
    cli(['token', '--token-endpoint', oidc.tokenEndpoint, '--client-id', 'app-1', '--grant', 'password', '--param', 'username=u', '--password-stdin'], env, 'p\n'),
  ]);
  for (const run of runs) {
    assert.equal(run.code, 1, run.stderr);
    assert.equal(typeof json(run).error, 'string');
    assert.notEqual(json(run).error, 'invalid_client');
    assert.doesNotMatch(run.stderr, /hint:/);
  }
});

test('a JWT bearer grant sends the signed JWT as the assertion, without client authentication: exit 1 with the body as received', async () => {
  const run = await cli(['token', '--token-endpoint', oidc.tokenEndpoint, '--client-id', 'app-1', '--grant', 'jwt-bearer'], env);
  assert.equal(run.code, 1, run.stderr);
  assert.equal(typeof json(run).error, 'string', 'oidc-provider wants client authentication for every grant');
});

test('usage errors exit 2 before anything is signed; service errors exit 1 with the problem code', async () => {
  const runs = await Promise.all([
    cli(['token', '--token-endpoint', oidc.tokenEndpoint], env),
    cli(['token', '--token-endpoint', oidc.tokenEndpoint, '--client-id', 'app-1', '--grant', 'password', '--param', 'password=p'], env),
    cli(['token', '--client-id', 'app-1'], env),
    cli(['token', '--token-endpoint', 'not a url', '--client-id', 'app-1'], env),
    cli(['token', '--token-endpoint', oidc.tokenEndpoint, '--client-id', 'app-1', '--grant', 'implicit'], env),
    cli(['token', '--token-endpoint', oidc.tokenEndpoint, '--client-id', 'app-1', '--param', 'client_secret=s'], env),
  ]);
  for (const run of runs) {
    assert.equal(run.code, 2, run.stderr);
    assert.equal(run.stdout, '');
  }
  assert.match(runs[0]!.stderr, /--client-id/);
  assert.match(runs[1]!.stderr, /needs username/);

  const badToken = await cli(['token', '--token-endpoint', oidc.tokenEndpoint, '--client-id', 'app-1'], { ...env, JWKS_SIGNER_TOKEN: 'wrong-token-0123456789' });
  assert.equal(badToken.code, 1);
  assert.match(badToken.stderr, /^jwks-signer: invalid_token: /);
  const noIssuer = await cli(['token', '--issuer', `${oidc.issuer}/nowhere`, '--client-id', 'app-1'], env);
  assert.equal(noIssuer.code, 1);
  assert.match(noIssuer.stderr, /^jwks-signer: discovery_failed: /);
});
