// POST /v1/tokens, the token broker, against a real oidc-provider and small loopback token endpoints.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { decodeJwt } from 'jose';
import type { App } from '../../../src/app.js';
import { bearer, buildTestApp, type FakeClock } from '../../helpers/app.js';
import { type OidcServer, startOidcServer } from '../../helpers/oidc-server.js';
import { freePort } from '../../helpers/redis.js';

const TOKENS = { broker: 'broker-token-0123456789', narrow: 'narrow-token-0123456789', signer: 'signer-token-0123456789' };
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const sha = (token: string) => createHash('sha256').update(token).digest('hex');

/** A token endpoint that records every form it gets and answers by path. */
interface FakeEndpoint {
  base: string;
  forms: Array<{ path: string; form: URLSearchParams }>;
  count(path: string): number;
  close(): Promise<void>;
}

async function startFakeEndpoint(): Promise<FakeEndpoint> {
  const forms: FakeEndpoint['forms'] = [];
  let issued = 0;
  const json = (res: ServerResponse, status: number, body: object, headers: Record<string, string> = {}) =>
    res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      const path = req.url ?? '/';
      forms.push({ path, form: new URLSearchParams(body) });
      const seen = forms.filter((f) => f.path === path).length;
      issued++;
      const token = { access_token: `fake-at-${issued}-${'A'.repeat(24)}`, token_type: 'Bearer', expires_in: 3600, refresh_token: `fake-rt-${issued}-${'R'.repeat(24)}` };
      if (path === '/ok') json(res, 200, token);
      else if (path === '/flaky' && seen === 1) json(res, 503, { error: 'temporarily_unavailable' }, { 'retry-after': '0' });
      else if (path === '/flaky') json(res, 200, token);
      else if (path === '/bad') json(res, 400, { error: 'invalid_grant', error_description: 'the refresh token is expired', error_uri: 'https://idp.example/errors' });
      else if (path === '/busy') json(res, 503, { error: 'temporarily_unavailable' });
      else if (path === '/limited') json(res, 429, { error: 'rate_limited' }, { 'retry-after': '3600' });
      else if (path === '/html') res.writeHead(502, { 'content-type': 'text/html' }).end('<html>bad gateway</html>');
      else if (path === '/no-expiry') json(res, 200, { access_token: `fake-at-${issued}`, token_type: 'Bearer' });
      else if (path === '/slow') setTimeout(() => json(res, 200, token), 3_000).unref();
      else json(res, 404, { error: 'not_found' });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    forms,
    count: (path) => forms.filter((f) => f.path === path).length,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function clientsFile(endpoints: string[]): string {
  const path = join(mkdtempSync(join(tmpdir(), 'jwks-signer-broker-')), 'clients.yaml');
  const list = JSON.stringify(endpoints);
  writeFileSync(
    path,
    `clients:
  - name: broker
    tokenSha256: ${sha(TOKENS.broker)}
    scopes: [tokens]
    clientIds: ["*"]
    subjects: [user-1, user-2]
    audiences: ["*"]
    extraClaims: [scope]
    tokenEndpoints: ${list}
  - name: narrow
    tokenSha256: ${sha(TOKENS.narrow)}
    scopes: [tokens]
    clientIds: [someone-else]
    audiences: ["*"]
    tokenEndpoints: ${list}
  - name: signer
    tokenSha256: ${sha(TOKENS.signer)}
    scopes: [sign]
    clientIds: ["*"]
    audiences: ["*"]
`,
  );
  return path;
}

let app: App;
let clock: FakeClock;
let oidc: OidcServer;
let fake: FakeEndpoint;

before(async () => {
  const port = await freePort();
  const jwksUri = `http://127.0.0.1:${port}/.well-known/jwks.json`;
  oidc = await startOidcServer({
    clients: ['app-1', 'app-2', 'app-3', 'app-4', 'app-5'].map((clientId) => ({ clientId, jwksUri })),
    scopes: ['read', 'write'],
    accessTokenTtl: 40,
  });
  fake = await startFakeEndpoint();
  const endpoints = [oidc.tokenEndpoint, ...['/ok', '/flaky', '/bad', '/busy', '/limited', '/html', '/no-expiry'].map((p) => `${fake.base}${p}`)];
  ({ app, clock } = await buildTestApp({ PORT: String(port), API_CLIENTS_FILE: clientsFile(endpoints), BROKER_TIMEOUT: '5s', BROKER_TOTAL_TIMEOUT: '10s' }));
  await app.listen();
});
after(async () => {
  await app.close();
  await oidc.close();
  await fake.close();
});

const tokens = (payload: object, token = TOKENS.broker) => app.internal.inject({ method: 'POST', url: '/v1/tokens', headers: bearer(token), payload });

test('client_credentials: the token response of oidc-provider, as received, then from the cache', async () => {
  const before = oidc.tokenRequests;
  const first = await tokens({ token_endpoint: oidc.tokenEndpoint, client_id: 'app-1', grant_type: 'client_credentials', scope: 'read' });
  assert.equal(first.statusCode, 200, first.body);
  assert.equal(first.headers['x-cache'], 'miss');
  assert.equal(first.headers['cache-control'], 'no-store');
  assert.match(String(first.headers['content-type']), /^application\/json/);
  const body = first.json();
  assert.equal(body.token_type, 'Bearer');
  assert.equal(body.expires_in, 40);
  assert.equal(body.scope, 'read');
  assert.equal(typeof body.access_token, 'string');
  assert.equal(oidc.tokenRequests, before + 1);

  const second = await tokens({ token_endpoint: oidc.tokenEndpoint, client_id: 'app-1', grant_type: 'client_credentials', scope: 'read' });
  assert.equal(second.headers['x-cache'], 'hit');
  assert.equal(second.json().access_token, body.access_token);
  assert.equal(oidc.tokenRequests, before + 1, 'served from the cache');

  const bypass = await tokens({ token_endpoint: oidc.tokenEndpoint, client_id: 'app-1', grant_type: 'client_credentials', scope: 'read', cache: false });
  assert.equal(bypass.statusCode, 200, bypass.body);
  assert.equal(bypass.headers['x-cache'], 'bypass');
  assert.notEqual(bypass.json().access_token, body.access_token, 'cache: false gets a fresh token');
  assert.equal(oidc.tokenRequests, before + 2);
  const after = await tokens({ token_endpoint: oidc.tokenEndpoint, client_id: 'app-1', grant_type: 'client_credentials', scope: 'read' });
  assert.equal(after.json().access_token, bypass.json().access_token, 'the fresh token replaced the cached one');

  const audit = await app.audit.read(50);
  const entry = audit.find((e) => e.event === 'token_request' && e.client_id === 'app-1');
  assert.ok(entry, 'an audit entry per upstream request');
  assert.equal(entry.outcome, 'success');
  assert.equal(entry.grant, 'client_credentials');
  assert.equal(typeof entry.jti, 'string');
});

test('distinct scopes are distinct cache keys; a token is never served to another API client', async () => {
  const before = oidc.tokenRequests;
  const read = await tokens({ token_endpoint: oidc.tokenEndpoint, client_id: 'app-2', grant_type: 'client_credentials', scope: 'read' });
  const write = await tokens({ token_endpoint: oidc.tokenEndpoint, client_id: 'app-2', grant_type: 'client_credentials', scope: 'write' });
  assert.equal(read.statusCode, 200, read.body);
  assert.equal(write.statusCode, 200, write.body);
  assert.equal(write.headers['x-cache'], 'miss');
  assert.notEqual(read.json().access_token, write.json().access_token);
  assert.equal(write.json().scope, 'write');
  assert.equal(oidc.tokenRequests, before + 2);

  const narrow = await tokens({ token_endpoint: oidc.tokenEndpoint, client_id: 'app-2', grant_type: 'client_credentials', scope: 'read' }, TOKENS.narrow);
  assert.equal(narrow.statusCode, 403);
  assert.equal(narrow.json().code, 'client_id_denied', 'its own policy applies although the token is cached for another client');
  assert.equal(oidc.tokenRequests, before + 2);
});

test('single flight: a burst of 20 identical calls costs one token request', async () => {
  const before = oidc.tokenRequests;
  const responses = await Promise.all(
    Array.from({ length: 20 }, () => tokens({ token_endpoint: oidc.tokenEndpoint, client_id: 'app-3', grant_type: 'client_credentials', scope: 'read write' })),
  );
  assert.ok(responses.every((r) => r.statusCode === 200), responses.map((r) => r.body).join('\n'));
  assert.equal(oidc.tokenRequests, before + 1);
  assert.equal(new Set(responses.map((r) => r.json().access_token)).size, 1);
  assert.deepEqual(responses.map((r) => r.headers['x-cache']).sort(), ['miss', ...Array(19).fill('hit')].sort());
});

test('the cached token is replaced once its lifetime less the margin has passed (app clock)', async () => {
  const before = oidc.tokenRequests;
  const request = { token_endpoint: oidc.tokenEndpoint, client_id: 'app-4', grant_type: 'client_credentials' };
  const first = (await tokens(request)).json().access_token;
  // expires_in 40 s, margin 30 s (the minimum): fresh for 10 s.
  clock.advance(9_000);
  const within = await tokens(request);
  assert.equal(within.headers['x-cache'], 'hit');
  assert.equal(within.json().access_token, first);
  clock.advance(2_000);
  const renewed = await tokens(request);
  assert.equal(renewed.statusCode, 200, renewed.body);
  assert.equal(renewed.headers['x-cache'], 'miss');
  assert.notEqual(renewed.json().access_token, first);
  assert.equal(oidc.tokenRequests, before + 2);
});

test('an OAuth error of the token endpoint is passed through (502, its error code) and not cached', async () => {
  const before = oidc.tokenRequests;
  const unknown = { token_endpoint: oidc.tokenEndpoint, client_id: 'not-registered', grant_type: 'client_credentials' };
  for (let i = 0; i < 2; i++) {
    const res = await tokens(unknown);
    assert.equal(res.statusCode, 502);
    assert.match(String(res.headers['content-type']), /application\/problem\+json/);
    const problem = res.json();
    assert.equal(problem.code, 'token_endpoint_error');
    assert.equal(problem.upstream.status, 401);
    assert.equal(problem.upstream.error, 'invalid_client');
  }
  assert.equal(oidc.tokenRequests, before + 2, 'a failure is not cached, and a 401 is not retried');

  const wrongAudience = await tokens({ token_endpoint: oidc.tokenEndpoint, client_id: 'app-5', grant_type: 'client_credentials', audience: 'https://elsewhere.example/token' });
  assert.equal(wrongAudience.statusCode, 502);
  assert.equal(wrongAudience.json().upstream.error, 'invalid_client');
  assert.equal(oidc.errors.at(-1)?.error, 'invalid_client');
});

test('policy: endpoints not listed, a missing scope, and bad bodies are refused before anything is sent', async () => {
  const sent = fake.forms.length;
  const oidcBefore = oidc.tokenRequests;
  const other = await tokens({ token_endpoint: `${fake.base}/other`, client_id: 'app-1', grant_type: 'client_credentials' });
  assert.equal(other.statusCode, 403);
  assert.equal(other.json().code, 'token_endpoint_denied');
  for (const endpoint of [`${oidc.tokenEndpoint}/`, `${oidc.tokenEndpoint}?x=1`, 'https://attacker.example/token', oidc.issuer]) {
    const res = await tokens({ token_endpoint: endpoint, client_id: 'app-1', grant_type: 'client_credentials' });
    assert.equal(res.json().code, 'token_endpoint_denied', endpoint);
  }
  const noScope = await tokens({ token_endpoint: oidc.tokenEndpoint, client_id: 'app-1', grant_type: 'client_credentials' }, TOKENS.signer);
  assert.equal(noScope.statusCode, 403);
  assert.equal(noScope.json().code, 'scope_denied');

  const valid = { token_endpoint: `${fake.base}/ok`, client_id: 'c', grant_type: 'client_credentials' };
  const bad: object[] = [
    {},
    { ...valid, grant_type: 'implicit' },
    { ...valid, unknown: 1 },
    { ...valid, token_endpoint: 'not a url' },
    { ...valid, parameters: { resource: 1 } },
    { ...valid, parameters: { 'bad name': 'x' } },
    { ...valid, parameters: { client_secret: 's' } },
    { ...valid, scope: '' },
    { ...valid, cache: 'no' },
    { ...valid, grant_type: 'password', parameters: { username: 'u' } },
    { ...valid, grant_type: 'refresh_token' },
    { ...valid, grant_type: JWT_BEARER, parameters: { assertion: 'x.y.z' } },
  ];
  for (const payload of bad) {
    const res = await tokens(payload);
    assert.equal(res.statusCode, 400, JSON.stringify(payload));
    assert.equal(res.json().code, 'invalid_request', JSON.stringify(payload));
  }
  const unsigned = await tokens({ ...valid, client_id: 'app-1', subject: 'not-allowed' });
  assert.equal(unsigned.json().code, 'subject_denied', 'the signing policy applies');
  assert.equal(fake.forms.length, sent, 'nothing was sent to the fake endpoint');
  assert.equal(oidc.tokenRequests, oidcBefore, 'nothing was sent to oidc-provider');
});

test('JWT bearer grant: the signed JWT is the assertion; subjects are distinct cache keys', async () => {
  const ok = `${fake.base}/ok`;
  const request = { token_endpoint: ok, client_id: 'svc@example.com', grant_type: JWT_BEARER, scope: 'api.read', subject: 'user-1' };
  const one = await tokens(request);
  assert.equal(one.statusCode, 200, one.body);
  const form = fake.forms.at(-1)!.form;
  assert.equal(form.get('grant_type'), JWT_BEARER);
  assert.equal(form.get('client_assertion'), null, 'no client assertion: the grant authenticates by its assertion');
  assert.equal(form.get('scope'), 'api.read');
  const claims = decodeJwt(form.get('assertion')!);
  assert.equal(claims.iss, 'svc@example.com');
  assert.equal(claims.sub, 'user-1');
  assert.equal(claims.aud, ok);
  assert.equal(claims.scope, 'api.read', 'Google and DocuSign read scope from the assertion');

  assert.equal((await tokens(request)).headers['x-cache'], 'hit');
  const other = await tokens({ ...request, subject: 'user-2' });
  assert.equal(other.headers['x-cache'], 'miss');
  assert.notEqual(other.json().access_token, one.json().access_token);
  assert.equal(decodeJwt(fake.forms.at(-1)!.form.get('assertion')!).sub, 'user-2');
});

test('password and refresh_token grants are never cached; their parameters are sent with a client assertion', async () => {
  const before = fake.count('/ok');
  const password = { token_endpoint: `${fake.base}/ok`, client_id: 'c@T', grant_type: 'password', scope: 'api offline_access', parameters: { username: 'u', password: 'p w' } };
  for (let i = 0; i < 2; i++) {
    const res = await tokens(password);
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.headers['x-cache'], 'bypass');
    assert.match(res.json().refresh_token, /^fake-rt-/);
  }
  const form = fake.forms.at(-1)!.form;
  assert.equal(form.get('username'), 'u');
  assert.equal(form.get('password'), 'p w');
  assert.equal(form.get('client_assertion_type'), 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
  assert.equal(decodeJwt(form.get('client_assertion')!).aud, `${fake.base}/ok`);
  const refresh = { token_endpoint: `${fake.base}/ok`, client_id: 'c@T', grant_type: 'refresh_token', parameters: { refresh_token: 'rt-1' } };
  assert.equal((await tokens(refresh)).headers['x-cache'], 'bypass');
  assert.equal((await tokens(refresh)).headers['x-cache'], 'bypass');
  assert.equal(fake.forms.at(-1)!.form.get('refresh_token'), 'rt-1');
  assert.equal(fake.count('/ok'), before + 4);

  const noExpiry = { token_endpoint: `${fake.base}/no-expiry`, client_id: 'c', grant_type: 'client_credentials' };
  await tokens(noExpiry);
  assert.equal((await tokens(noExpiry)).headers['x-cache'], 'miss', 'no expires_in: not cached');
});

test('retries: a 503 then a 200 costs two requests, each with a fresh assertion; a 400 is not retried', async () => {
  const flaky = await tokens({ token_endpoint: `${fake.base}/flaky`, client_id: 'c', grant_type: 'client_credentials' });
  assert.equal(flaky.statusCode, 200, flaky.body);
  const attempts = fake.forms.filter((f) => f.path === '/flaky').map((f) => decodeJwt(f.form.get('client_assertion')!).jti);
  assert.equal(attempts.length, 2);
  assert.notEqual(attempts[0], attempts[1], 'every attempt signs a new jti');

  const bad = await tokens({ token_endpoint: `${fake.base}/bad`, client_id: 'c', grant_type: 'refresh_token', parameters: { refresh_token: 'old' } });
  assert.equal(bad.statusCode, 502);
  assert.deepEqual(bad.json().upstream, { status: 400, error: 'invalid_grant', error_description: 'the refresh token is expired', error_uri: 'https://idp.example/errors' });
  assert.equal(fake.count('/bad'), 1);

  const busy = await tokens({ token_endpoint: `${fake.base}/busy`, client_id: 'c', grant_type: 'client_credentials' });
  assert.equal(busy.statusCode, 502);
  assert.equal(busy.json().code, 'token_endpoint_error');
  assert.equal(busy.json().upstream.error, 'temporarily_unavailable');
  assert.equal(fake.count('/busy'), 3, 'two retries by default');

  const limited = await tokens({ token_endpoint: `${fake.base}/limited`, client_id: 'c', grant_type: 'client_credentials' });
  assert.equal(limited.statusCode, 502);
  assert.deepEqual(limited.json().upstream, { status: 429, error: 'rate_limited' });
  assert.equal(fake.count('/limited'), 1, 'a Retry-After beyond BROKER_TOTAL_TIMEOUT is not waited for');

  const html = await tokens({ token_endpoint: `${fake.base}/html`, client_id: 'c', grant_type: 'client_credentials' });
  assert.equal(html.statusCode, 502);
  assert.equal(html.json().code, 'token_endpoint_invalid_response');
  assert.deepEqual(html.json().upstream, { status: 502 });
});

test('a token endpoint that does not answer in time: 504; one that refuses connections: 502 unreachable', async (t) => {
  const closed = await startFakeEndpoint();
  await closed.close();
  const slow = `${fake.base}/slow`;
  const file = clientsFile([slow, `${closed.base}/token`]);
  const { app: quick } = await buildTestApp({ API_CLIENTS_FILE: file, BROKER_TIMEOUT: '200ms', BROKER_TOTAL_TIMEOUT: '1s', BROKER_RETRIES: '1' });
  t.after(() => quick.close());
  const res = await quick.internal.inject({ method: 'POST', url: '/v1/tokens', headers: bearer(TOKENS.broker), payload: { token_endpoint: slow, client_id: 'c', grant_type: 'client_credentials' } });
  assert.equal(res.statusCode, 504);
  assert.equal(res.json().code, 'token_endpoint_timeout');
  assert.equal(fake.count('/slow'), 2, 'a timeout is retried');
  const refused = await quick.internal.inject({
    method: 'POST',
    url: '/v1/tokens',
    headers: bearer(TOKENS.broker),
    payload: { token_endpoint: `${closed.base}/token`, client_id: 'c', grant_type: 'client_credentials' },
  });
  assert.equal(refused.statusCode, 502);
  assert.equal(refused.json().code, 'token_endpoint_unreachable');
});

test('metrics count upstream requests by outcome and cache results', async () => {
  const text = (await app.internal.inject({ url: '/metrics' })).body;
  assert.match(text, /jwks_signer_token_requests_total\{client="broker",grant="client_credentials",outcome="success"\} \d+/);
  assert.match(text, /jwks_signer_token_requests_total\{client="broker",grant="client_credentials",outcome="oauth_error"\} \d+/);
  assert.match(text, /jwks_signer_token_cache_total\{result="hit"\} \d+/);
  assert.match(text, /jwks_signer_token_cache_total\{result="miss"\} \d+/);
});
