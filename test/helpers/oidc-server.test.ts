// Proves the oidc-provider test helper works: a real token endpoint that fetches the client's JWKS
// over HTTP from 127.0.0.1 and accepts / rejects RFC 7523 client assertions.
// The behaviour asserted here is oidc-provider v9's own (see the notes in oidc-server.ts).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { KeyObject, randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT, type JWK, type JWTPayload } from 'jose';
import { startOidcServer, type OidcServer } from './oidc-server.js';

type Alg = 'RS256' | 'PS256' | 'ES256';

interface TestKey {
  alg: Alg;
  kid: string;
  /** a KeyObject rather than the CryptoKey, which Web Crypto binds to one algorithm (RS256 vs PS256) */
  privateKey: KeyObject;
  /** public JWK with kid, alg and use */
  jwk: JWK;
}

async function makeKey(alg: Alg, kid = `${alg.toLowerCase()}-${randomUUID()}`): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg);
  return { alg, kid, privateKey: KeyObject.from(privateKey), jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

interface JwksServer {
  url: string;
  /** number of JWKS requests served */
  readonly hits: number;
  setKeys(keys: JWK[]): void;
  close(): Promise<void>;
}

async function startJwksServer(keys: JWK[]): Promise<JwksServer> {
  let current = keys;
  let hits = 0;
  const server: Server = createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/jwks.json') {
      hits += 1;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: current }));
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/jwks.json`,
    get hits() {
      return hits;
    },
    setKeys(next) {
      current = next;
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections(); // the provider's fetch keeps connections alive
      }),
  };
}

interface AssertionOptions {
  key: TestKey;
  clientId: string;
  aud: string | string[];
  /** header alg; defaults to key.alg */
  alg?: string;
  typ?: string;
  /** seconds from now; null omits exp */
  expIn?: number | null;
  /** null omits jti */
  jti?: string | null;
}

function signAssertion(opts: AssertionOptions): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const payload: JWTPayload = { iss: opts.clientId, sub: opts.clientId, aud: opts.aud, iat: now };
  if (opts.jti !== null) payload.jti = opts.jti ?? randomUUID();
  if (opts.expIn !== null) payload.exp = now + (opts.expIn ?? 60);
  return new SignJWT(payload)
    .setProtectedHeader({ alg: opts.alg ?? opts.key.alg, kid: opts.key.kid, ...(opts.typ ? { typ: opts.typ } : {}) })
    .sign(opts.key.privateKey);
}

function assertAccepted(res: { status: number; body: any }): void {
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(typeof res.body.access_token, 'string');
  assert.ok(res.body.access_token.length > 0);
  assert.equal(res.body.token_type, 'Bearer');
  assert.equal(typeof res.body.expires_in, 'number');
}

/** oidc-provider answers every failed client authentication with 401 invalid_client. */
function assertRejected(server: OidcServer, res: { status: number; body: any }, detail?: string | RegExp): void {
  assert.equal(res.status, 401, JSON.stringify(res.body));
  assert.equal(res.body.error, 'invalid_client');
  assert.equal(res.body.error_description, 'client authentication failed');
  if (detail !== undefined) {
    const last = server.errors.at(-1);
    assert.ok(last, 'the helper recorded the error');
    if (typeof detail === 'string') assert.equal(last.detail, detail);
    else assert.match(last.detail ?? '', detail);
  }
}

test('oidc-provider helper: private_key_jwt client_credentials with an http loopback jwks_uri', async (t) => {
  const rsa = await makeKey('RS256');
  const es = await makeKey('ES256');
  const ps = await makeKey('PS256');
  const rsaJwks = await startJwksServer([rsa.jwk]);
  t.after(() => rsaJwks.close());
  const ecJwks = await startJwksServer([es.jwk]);
  t.after(() => ecJwks.close());
  const psJwks = await startJwksServer([ps.jwk]);
  t.after(() => psJwks.close());

  const server = await startOidcServer({
    clients: [
      { clientId: 'rs-client', jwksUri: rsaJwks.url },
      { clientId: 'es-client', jwksUri: ecJwks.url, alg: 'ES256' },
      { clientId: 'ps-client', jwksUri: psJwks.url, alg: 'PS256' },
      { clientId: 'down-client', jwksUri: 'http://127.0.0.1:9/jwks.json' },
    ],
    scopes: ['jwks:read'],
  });
  t.after(() => server.close());

  await t.test('discovers the endpoints', () => {
    assert.match(server.issuer, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(server.tokenEndpoint, `${server.issuer}/token`);
  });

  await t.test('accepts an RS256 assertion with aud = token endpoint, fetching the JWKS over HTTP', async () => {
    const assertion = await signAssertion({ key: rsa, clientId: 'rs-client', aud: server.tokenEndpoint });
    assertAccepted(await server.clientCredentials({ clientId: 'rs-client', assertion }));
    assert.ok(rsaJwks.hits >= 1, 'the provider fetched the jwks_uri');
  });

  await t.test('rejects a replayed assertion (same jti)', async () => {
    const assertion = await signAssertion({ key: rsa, clientId: 'rs-client', aud: server.tokenEndpoint });
    assertAccepted(await server.clientCredentials({ clientId: 'rs-client', assertion }));
    assertRejected(
      server,
      await server.clientCredentials({ clientId: 'rs-client', assertion }),
      'client assertion tokens must only be used once',
    );
  });

  await t.test('rejects an assertion signed by a key that is not published', async () => {
    const unpublished = await makeKey('RS256');
    const assertion = await signAssertion({ key: unpublished, clientId: 'rs-client', aud: server.tokenEndpoint });
    assertRejected(server, await server.clientCredentials({ clientId: 'rs-client', assertion }), /no applicable key found/i);
    // same kid as the published key, different key material
    const impostor = { ...unpublished, kid: rsa.kid };
    const forged = await signAssertion({ key: impostor, clientId: 'rs-client', aud: server.tokenEndpoint });
    assertRejected(server, await server.clientCredentials({ clientId: 'rs-client', assertion: forged }));
  });

  await t.test('audience values: token endpoint or issuer, exact match; arrays need one of them', async () => {
    const { issuer, tokenEndpoint } = server;
    const cases: Array<[aud: string | string[], accepted: boolean]> = [
      [tokenEndpoint, true],
      [issuer, true],
      [`${tokenEndpoint}/`, false],
      [`${issuer}/`, false],
      [tokenEndpoint.replace('127.0.0.1', 'localhost'), false],
      ['https://other.example/token', false],
      [[tokenEndpoint, 'https://other.example'], true], // extra audiences are tolerated
      [['https://other.example'], false],
    ];
    for (const [aud, accepted] of cases) {
      const assertion = await signAssertion({ key: rsa, clientId: 'rs-client', aud });
      const res = await server.clientCredentials({ clientId: 'rs-client', assertion });
      if (accepted) assertAccepted(res);
      else assertRejected(server, res, /aud/);
    }
  });

  await t.test('accepts ES256 and PS256 clients with a registered signing alg, and enforces it', async () => {
    const esAssertion = await signAssertion({ key: es, clientId: 'es-client', aud: server.tokenEndpoint });
    assertAccepted(await server.clientCredentials({ clientId: 'es-client', assertion: esAssertion }));
    const psAssertion = await signAssertion({ key: ps, clientId: 'ps-client', aud: server.tokenEndpoint });
    assertAccepted(await server.clientCredentials({ clientId: 'ps-client', assertion: psAssertion }));
    // same RSA key, but RS256 instead of the registered PS256
    const wrongAlg = await signAssertion({ key: ps, alg: 'RS256', clientId: 'ps-client', aud: server.tokenEndpoint });
    assertRejected(server, await server.clientCredentials({ clientId: 'ps-client', assertion: wrongAlg }), 'alg mismatch');
  });

  await t.test('jti and exp are required; no maximum lifetime; 15 s clock tolerance', async () => {
    const aud = server.tokenEndpoint;
    const noJti = await signAssertion({ key: rsa, clientId: 'rs-client', aud, jti: null });
    assertRejected(server, await server.clientCredentials({ clientId: 'rs-client', assertion: noJti }), /jti/);
    const noExp = await signAssertion({ key: rsa, clientId: 'rs-client', aud, expIn: null });
    assertRejected(server, await server.clientCredentials({ clientId: 'rs-client', assertion: noExp }), /expiration/);
    const expired = await signAssertion({ key: rsa, clientId: 'rs-client', aud, expIn: -30 });
    assertRejected(server, await server.clientCredentials({ clientId: 'rs-client', assertion: expired }), /expired/);
    const withinTolerance = await signAssertion({ key: rsa, clientId: 'rs-client', aud, expIn: -5 });
    assertAccepted(await server.clientCredentials({ clientId: 'rs-client', assertion: withinTolerance }));
    const oneYear = await signAssertion({ key: rsa, clientId: 'rs-client', aud, expIn: 365 * 24 * 3600 });
    assertAccepted(await server.clientCredentials({ clientId: 'rs-client', assertion: oneYear }));
  });

  await t.test('typ client-authentication+jwt (RFC 7523bis) is accepted', async () => {
    const assertion = await signAssertion({
      key: rsa,
      clientId: 'rs-client',
      aud: server.tokenEndpoint,
      typ: 'client-authentication+jwt',
    });
    assertAccepted(await server.clientCredentials({ clientId: 'rs-client', assertion }));
  });

  await t.test('grants a configured scope', async () => {
    const assertion = await signAssertion({ key: rsa, clientId: 'rs-client', aud: server.tokenEndpoint });
    const res = await server.clientCredentials({ clientId: 'rs-client', assertion, scope: 'jwks:read' });
    assertAccepted(res);
    assert.equal(res.body.scope, 'jwks:read');
  });

  await t.test('a key published after the JWKS was cached is used only once the cache expires', async () => {
    const next = await makeKey('RS256');
    rsaJwks.setKeys([rsa.jwk, next.jwk]);
    const hitsBefore = rsaJwks.hits;
    const early = await signAssertion({ key: next, clientId: 'rs-client', aud: server.tokenEndpoint });
    assertRejected(server, await server.clientCredentials({ clientId: 'rs-client', assertion: early }));
    assert.equal(rsaJwks.hits, hitsBefore, 'still cached: no refetch');

    await server.expireJwksCache('rs-client');
    const later = await signAssertion({ key: next, clientId: 'rs-client', aud: server.tokenEndpoint });
    assertAccepted(await server.clientCredentials({ clientId: 'rs-client', assertion: later }));
    assert.equal(rsaJwks.hits, hitsBefore + 1, 'refetched the JWKS');
  });

  await t.test('an unreachable jwks_uri fails client authentication', async () => {
    const assertion = await signAssertion({ key: rsa, clientId: 'down-client', aud: server.tokenEndpoint });
    assertRejected(server, await server.clientCredentials({ clientId: 'down-client', assertion }));
    assert.ok(server.errors.at(-1)?.causes.some((c) => c.includes('failed to be refreshed')));
  });
});

test("oidc-provider helper: 'strict' audience mode (RFC 7523bis: aud = issuer, single string)", async (t) => {
  const key = await makeKey('ES256');
  const jwks = await startJwksServer([key.jwk]);
  t.after(() => jwks.close());
  const server = await startOidcServer({
    clients: [{ clientId: 'strict-client', jwksUri: jwks.url }],
    audienceMode: 'strict',
  });
  t.after(() => server.close());

  const attempt = async (aud: string | string[]) =>
    server.clientCredentials({
      clientId: 'strict-client',
      assertion: await signAssertion({ key, clientId: 'strict-client', aud }),
    });

  assertAccepted(await attempt(server.issuer));
  const strictDetail = 'audience (aud) must be a single string equal to the issuer identifier';
  assertRejected(server, await attempt(server.tokenEndpoint), strictDetail);
  assertRejected(server, await attempt([server.issuer]), strictDetail);
  assertRejected(server, await attempt([server.issuer, server.tokenEndpoint]), strictDetail);
  assertRejected(server, await attempt(`${server.issuer}/`), /aud/);
});

test('oidc-provider helper: close() releases the port', async () => {
  const key = await makeKey('ES256');
  const jwks = await startJwksServer([key.jwk]);
  const server = await startOidcServer({ clients: [{ clientId: 'c', jwksUri: jwks.url }] });
  try {
    // leave a keep-alive connection open in our client's pool and in the provider's
    const assertion = await signAssertion({ key, clientId: 'c', aud: server.tokenEndpoint });
    assertAccepted(await server.clientCredentials({ clientId: 'c', assertion }));
  } finally {
    await server.close();
    await server.close(); // idempotent
    await jwks.close();
  }
  const port = Number(new URL(server.issuer).port);
  const probe = createNetServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', reject);
    probe.listen(port, '127.0.0.1', () => resolve());
  });
  await new Promise<void>((resolve) => probe.close(() => resolve()));
});
