// The shared token request: forms per grant, a real token endpoint (oidc-provider), and what an endpoint can do wrong.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { bearer, buildTestApp } from '../helpers/app.js';
import { startOidcServer } from '../helpers/oidc-server.js';
import { isTokenResponse, postTokenRequest, tokenRequestForm, TokenRequestError } from '../../src/oauth/token-request.js';

test('the form of each grant carries the client authentication and refuses missing or reserved parameters', () => {
  const form = tokenRequestForm({ grantType: 'password', clientId: 'c@T', clientAssertion: 'a.b.c', scope: 'api', parameters: { username: 'u', password: 'p' } });
  assert.equal(form.get('grant_type'), 'password');
  assert.equal(form.get('client_id'), 'c@T');
  assert.equal(form.get('client_assertion_type'), 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
  assert.equal(form.get('client_assertion'), 'a.b.c');
  assert.equal(form.get('scope'), 'api');
  assert.equal(form.get('username'), 'u');
  assert.throws(() => tokenRequestForm({ grantType: 'refresh_token', clientId: 'c' }), (err: TokenRequestError) => err.code === 'invalid_grant_parameters' && /refresh_token/.test(err.message));
  assert.throws(() => tokenRequestForm({ grantType: 'authorization_code', clientId: 'c', parameters: { code: 'x' } }), /redirect_uri/);
  assert.throws(() => tokenRequestForm({ grantType: 'client_credentials', clientId: 'c', parameters: { client_secret: 's' } }), (err: TokenRequestError) => err.code === 'invalid_grant_parameters');
});

test('a client_credentials request with our assertion gets a token from oidc-provider; its OAuth error comes back as sent', async (t) => {
  const { app } = await buildTestApp({});
  t.after(() => app.close());
  const { publicUrl } = await app.listen();
  const oidc = await startOidcServer({ clients: [{ clientId: 'app-1', jwksUri: `${publicUrl}/.well-known/jwks.json` }] });
  t.after(() => oidc.close());
  const assertion = async (audience: string) =>
    (await app.internal.inject({ method: 'POST', url: '/v1/assertions', headers: bearer(app.config.devApiToken!), payload: { client_id: 'app-1', audience } })).json().client_assertion as string;

  const ok = await postTokenRequest({ endpoint: oidc.tokenEndpoint, form: tokenRequestForm({ grantType: 'client_credentials', clientId: 'app-1', clientAssertion: await assertion(oidc.tokenEndpoint) }) });
  assert.ok(isTokenResponse(ok), ok.text);
  assert.equal(ok.json.token_type, 'Bearer');

  const refused = await postTokenRequest({ endpoint: oidc.tokenEndpoint, form: tokenRequestForm({ grantType: 'client_credentials', clientId: 'app-1', clientAssertion: await assertion('https://elsewhere.example') }) });
  assert.equal(refused.status, 401);
  assert.equal(refused.json?.error, 'invalid_client');
  assert.equal(JSON.parse(refused.text).error, 'invalid_client', 'the body is kept verbatim');
  assert.ok(!isTokenResponse(refused));
});

async function serve(handler: Parameters<typeof createServer>[1]): Promise<{ url: string; server: Server }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`, server };
}

test('redirects are not followed, Retry-After is read, oversized and slow answers and refused connections are errors', async (t) => {
  let hits = 0;
  const { url, server } = await serve((req, res) => {
    hits++;
    if (req.url === '/token?redirect') res.writeHead(302, { location: '/token' }).end();
    else if (req.url === '/token?busy') res.writeHead(503, { 'retry-after': '7', 'content-type': 'text/plain' }).end('busy');
    else if (req.url === '/token?huge') res.writeHead(200, { 'content-type': 'application/json' }).end(`"${'x'.repeat(300 * 1024)}"`);
    else if (req.url === '/token?slow') setTimeout(() => res.end('{}'), 2_000).unref();
    else res.writeHead(200).end('{}');
  });
  t.after(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }));
  const form = tokenRequestForm({ grantType: 'client_credentials', clientId: 'c' });

  const redirected = await postTokenRequest({ endpoint: `${url}?redirect`, form });
  assert.equal(redirected.status, 302);
  assert.equal(hits, 1, 'the redirect was not followed');

  const busy = await postTokenRequest({ endpoint: `${url}?busy`, form });
  assert.equal(busy.status, 503);
  assert.equal(busy.retryAfterMs, 7000);
  assert.equal(busy.json, undefined);
  assert.equal(busy.text, 'busy');

  await assert.rejects(postTokenRequest({ endpoint: `${url}?huge`, form }), (err: TokenRequestError) => err.code === 'response_too_large');
  await assert.rejects(postTokenRequest({ endpoint: `${url}?slow`, form, timeoutMs: 200 }), (err: TokenRequestError) => err.code === 'timeout');
  const closed = await serve(() => undefined);
  await new Promise<void>((resolve) => closed.server.close(() => resolve()));
  await assert.rejects(postTokenRequest({ endpoint: closed.url, form }), (err: TokenRequestError) => err.code === 'network_error');
});
