// `jwks-signer doctor` end to end: two running services, oidc-provider, and tiny loopback servers that get the JWKS wrong.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startOidcServer, type OidcServer } from '../helpers/oidc-server.js';
import { cli, json, OPS_TOKEN, type Run, type RunningService, serve, SIGN_ONLY_TOKEN, startService } from './fixtures.js';

let serviceA: RunningService;
let serviceB: RunningService;
let oidc: OidcServer;
let env: Record<string, string>;
let jwksBody: { keys: Array<Record<string, unknown>> };
let fake: { url: string; close: () => Promise<void> };

before(async () => {
  [serviceA, serviceB] = await Promise.all([startService(), startService()]);
  oidc = await startOidcServer({
    clients: [
      { clientId: 'app-a', jwksUri: serviceA.jwksUrl },
      { clientId: 'app-b', jwksUri: serviceB.jwksUrl },
    ],
  });
  env = { JWKS_SIGNER_URL: serviceA.internalUrl, JWKS_SIGNER_TOKEN: OPS_TOKEN };
  jwksBody = (await (await fetch(serviceA.jwksUrl)).json()) as typeof jwksBody;
  const jsonHeaders = { 'content-type': 'application/json', 'cache-control': 'max-age=300', etag: '"x"' };
  fake = await serve((req, res) => {
    if (req.url === '/redirect') res.writeHead(302, { location: serviceA.jwksUrl }).end();
    else if (req.url === '/duplicate') res.writeHead(200, jsonHeaders).end(JSON.stringify({ keys: [...jwksBody.keys, jwksBody.keys[0]] }));
    else if (req.url === '/private') res.writeHead(200, jsonHeaders).end(JSON.stringify({ keys: [{ ...jwksBody.keys[0], d: 'AAAA', p: 'AAAA' }] }));
    else if (req.url === '/html') res.writeHead(200, { 'content-type': 'text/html' }).end('<html>login</html>');
    else res.writeHead(404).end();
  });
});
after(async () => {
  await fake?.close();
  await oidc?.close();
  await Promise.all([serviceA?.app.close(), serviceB?.app.close()]);
});

function statuses(run: Run): Record<string, string> {
  const report = json(run);
  assert.equal(typeof report.ok, 'boolean');
  assert.equal(report.ok, run.code === 0, 'ok agrees with the exit code');
  return Object.fromEntries(report.checks.map((c: { id: string; status: string; detail: string }) => [c.id, c.status]));
}

test('a healthy service and authorization server: every check ok, exit 0; the human checklist too', async () => {
  const args = ['doctor', '--jwks-url', serviceA.jwksUrl, '--issuer', oidc.issuer, '--client-id', 'app-a'];
  const [scripted, human] = await Promise.all([cli([...args, '--json'], env), cli(args, env)]);
  assert.equal(scripted.code, 0, scripted.stdout + scripted.stderr);
  const checks = statuses(scripted);
  for (const id of [
    'jwks.redirect', 'jwks.status', 'jwks.size', 'jwks.content_type', 'jwks.valid_jwks', 'jwks.unique_kids', 'jwks.kid_thumbprints',
    'jwks.matches_service', 'jwks.cache_headers', 'jwks.etag', 'issuer.discovery', 'issuer.auth_methods', 'issuer.signing_algs', 'issuer.token_request', 'clock.skew',
  ]) {
    assert.equal(checks[id], 'ok', `${id}: ${JSON.stringify(json(scripted).checks.find((c: { id: string }) => c.id === id))}`);
  }
  // jwks.time is the one check that depends on the machine's load: over 1 s it warns, which does not change the exit code.
  assert.ok(['ok', 'warn'].includes(checks['jwks.time']!));
  assert.deepEqual(Object.entries(checks).filter(([id, s]) => s !== 'ok' && id !== 'jwks.time'), []);
  assert.doesNotMatch(scripted.stdout + human.stdout, /eyJ[\w-]+\.[\w-]+\.|access_token/, 'neither the assertion nor the access token is printed');
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /^ok {4}jwks\.redirect +no redirect$/m);
  assert.match(human.stdout, /^ok: 1[56] ok, [01] warnings, 0 failed, 0 skipped$/m);
});

test('a redirect, an HTML page, duplicate kids, private members: each fails its check, exit 1', async () => {
  const cases: Array<[string, string[]]> = [
    ['/redirect', ['jwks.redirect', 'jwks.status']],
    ['/html', ['jwks.content_type', 'jwks.valid_jwks']],
    ['/duplicate', ['jwks.unique_kids']],
    ['/private', ['jwks.valid_jwks', 'jwks.matches_service']],
  ];
  const runs = await Promise.all(cases.map(([path]) => cli(['doctor', '--jwks-url', `${fake.url}${path}`, '--json'], env)));
  cases.forEach(([path, failing], i) => {
    assert.equal(runs[i]!.code, 1, path);
    const checks = statuses(runs[i]!);
    for (const id of failing) assert.equal(checks[id], 'fail', `${path}: ${id}`);
  });
});

test("another deployment's JWKS fails jwks.matches_service; without the admin scope or a token the comparison is skipped", async () => {
  const [other, signOnly, noToken] = await Promise.all([
    cli(['doctor', '--jwks-url', serviceB.jwksUrl, '--json'], env),
    cli(['doctor', '--jwks-url', serviceA.jwksUrl, '--json'], { ...env, JWKS_SIGNER_TOKEN: SIGN_ONLY_TOKEN }),
    cli(['doctor', '--jwks-url', serviceA.jwksUrl, '--json'], { JWKS_SIGNER_URL: serviceA.internalUrl }),
  ]);
  assert.equal(other.code, 1);
  assert.equal(statuses(other)['jwks.matches_service'], 'fail');
  for (const run of [signOnly, noToken]) {
    assert.equal(run.code, 0, run.stdout + run.stderr);
    assert.equal(statuses(run)['jwks.matches_service'], 'skip');
  }
});

test('a client registered with another JWKS URL: the token request fails and diagnosis.kid names the unknown kid', async () => {
  const run = await cli(['doctor', '--jwks-url', serviceB.jwksUrl, '--issuer', oidc.issuer, '--client-id', 'app-b', '--json'], env);
  assert.equal(run.code, 1);
  const checks = statuses(run);
  assert.equal(checks['issuer.token_request'], 'fail');
  assert.equal(checks['diagnosis.kid'], 'fail');
  assert.equal(checks['diagnosis.audience'], 'ok');
  assert.equal(checks['diagnosis.clock'], 'ok');
  assert.equal(oidc.errors.at(-1)?.error, 'invalid_client');
});

test('an audience with a trailing slash: the token request fails and diagnosis.audience says why', async () => {
  const run = await cli(['doctor', '--jwks-url', serviceA.jwksUrl, '--issuer', oidc.issuer, '--client-id', 'app-a', '--audience', `${oidc.tokenEndpoint}/`, '--json'], env);
  assert.equal(run.code, 1);
  const checks = statuses(run);
  assert.equal(checks['issuer.token_request'], 'fail');
  assert.equal(checks['diagnosis.audience'], 'fail');
  assert.equal(checks['diagnosis.kid'], 'ok');
  assert.equal(checks['diagnosis.jwks_uri'], 'skip');
});

test('a server that wants aud = issuer (strict): no other cause is found, the registered JWKS URL is the hint; --audience ISSUER passes', async (t) => {
  const strict = await startOidcServer({ clients: [{ clientId: 'app-a', jwksUri: serviceA.jwksUrl }], audienceMode: 'strict' });
  t.after(() => strict.close());
  const args = ['doctor', '--jwks-url', serviceA.jwksUrl, '--issuer', strict.issuer, '--client-id', 'app-a', '--json'];
  const [endpointAud, issuerAud] = await Promise.all([cli(args, env), cli([...args, '--audience', strict.issuer], env)]);
  assert.equal(endpointAud.code, 1);
  const checks = statuses(endpointAud);
  assert.equal(checks['issuer.token_request'], 'fail');
  assert.equal(checks['diagnosis.jwks_uri'], 'warn');
  assert.equal(issuerAud.code, 0, issuerAud.stdout);
  assert.equal(statuses(issuerAud)['issuer.token_request'], 'ok');
});

test('usage errors exit 2', async () => {
  const runs = await Promise.all([
    cli(['doctor'], env),
    cli(['doctor', '--jwks-url', 'ftp://example.com/jwks.json'], env),
    cli(['doctor', '--jwks-url', serviceA.jwksUrl, '--client-id', 'app-a'], env),
    cli(['doctor', '--jwks-url', serviceA.jwksUrl, '--issuer', oidc.issuer, '--client-id', 'app-a'], { JWKS_SIGNER_URL: serviceA.internalUrl }),
    cli(['doctor', '--jwks-url', serviceA.jwksUrl, '--issuer', oidc.issuer, '--client-id', 'app-a', '--grant', 'refresh_token'], env),
  ]);
  for (const run of runs) {
    assert.equal(run.code, 2, run.stdout + run.stderr);
    assert.equal(run.stdout, '');
  }
});
