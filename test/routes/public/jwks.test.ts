import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:net';
import { test } from 'node:test';
import { calculateJwkThumbprint, importJWK, type JWK } from 'jose';
import { buildTestApp } from '../../helpers/app.js';

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

function setsFile(): string {
  const dir = mkdtempSync(join(tmpdir(), 'jwks-signer-sets-'));
  const path = join(dir, 'sets.yaml');
  writeFileSync(
    path,
    ['keySets:', '  default: { alg: RS256 }', '  ps: { alg: PS256, rsaBits: 3072 }', '  es256: { alg: ES256 }', '  es384: { alg: ES384 }', '  es512: { alg: ES512 }', '  ed: { alg: EdDSA }', ''].join('\n'),
  );
  return path;
}

test('the JWKS follows CONSUMERS.md rules 1-5 and 9 for every algorithm', async (t) => {
  const { app } = await buildTestApp({ KEY_SETS_FILE: setsFile() });
  t.after(() => app.close());
  const urls = ['/.well-known/jwks.json', '/jwks/default.json', '/jwks/ps.json', '/jwks/es256.json', '/jwks/es384.json', '/jwks/es512.json', '/jwks/ed.json'];
  const expected: Record<string, { kty: string; crv?: string; alg: string }> = {
    '/jwks/ps.json': { kty: 'RSA', alg: 'PS256' },
    '/jwks/es256.json': { kty: 'EC', crv: 'P-256', alg: 'ES256' },
    '/jwks/es384.json': { kty: 'EC', crv: 'P-384', alg: 'ES384' },
    '/jwks/es512.json': { kty: 'EC', crv: 'P-521', alg: 'ES512' },
    '/jwks/ed.json': { kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA' },
  };
  for (const url of urls) {
    const res = await app.public.inject({ method: 'GET', url });
    assert.equal(res.statusCode, 200, url);
    assert.equal(res.headers['content-type'], 'application/json');
    assert.ok(res.body.length < 50_000, 'under 50 KB (nimbus limit)');
    const body = res.json() as { keys: JWK[] };
    assert.deepEqual(Object.keys(body), ['keys']);
    assert.equal(body.keys.length, 2, 'active + next');
    const kids = new Set<string>();
    for (const jwk of body.keys) {
      for (const member of PRIVATE_MEMBERS) assert.equal(member in jwk, false, `${url}: no ${member}`);
      assert.equal(jwk.use, 'sig');
      assert.equal('key_ops' in jwk, false);
      assert.ok(jwk.kty && jwk.alg && jwk.kid);
      assert.equal(jwk.kid, await calculateJwkThumbprint(jwk, 'sha256'), 'kid is the RFC 7638 thumbprint');
      kids.add(jwk.kid!);
      const want = expected[url] ?? { kty: 'RSA', alg: 'RS256' };
      assert.equal(jwk.kty, want.kty);
      assert.equal(jwk.alg, want.alg);
      if (want.crv) assert.equal(jwk.crv, want.crv);
      if (jwk.kty === 'RSA') {
        const bits = createPublicKey({ key: jwk as never, format: 'jwk' }).asymmetricKeyDetails!.modulusLength!;
        assert.ok(bits >= 2048);
        if (url === '/jwks/ps.json') assert.equal(bits, 3072);
      }
      await importJWK(jwk, jwk.alg);
    }
    assert.equal(kids.size, body.keys.length, 'unique kids');
    const set = url === '/.well-known/jwks.json' ? 'default' : url.slice('/jwks/'.length, -'.json'.length);
    assert.equal(body.keys[0]!.kid, app.keys.view(set)!.active.kid, 'the active key is published, first (rule 9)');
  }
});

test('cache headers, ETag and 304, HEAD, CORS, content negotiation', async (t) => {
  const { app } = await buildTestApp({ JWKS_MAX_AGE: '120s', JWKS_STALE_WHILE_REVALIDATE: '30s', JWKS_STALE_IF_ERROR: '2h' });
  t.after(() => app.close());
  const res = await app.public.inject({ method: 'GET', url: '/.well-known/jwks.json' });
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers['cache-control'], 'public, max-age=120, stale-while-revalidate=30, stale-if-error=7200');
  assert.equal(res.headers['access-control-allow-origin'], '*');
  const etag = res.headers.etag as string;
  assert.match(etag, /^"[A-Za-z0-9_-]{32}"$/, 'a strong ETag');
  assert.ok(!Number.isNaN(Date.parse(res.headers['last-modified'] as string)));

  const again = await app.public.inject({ method: 'GET', url: '/.well-known/jwks.json' });
  assert.equal(again.headers.etag, etag, 'stable while the set does not change');

  for (const ifNoneMatch of [etag, `W/${etag}`, `"other", ${etag}`, '*']) {
    const notModified = await app.public.inject({ method: 'GET', url: '/.well-known/jwks.json', headers: { 'if-none-match': ifNoneMatch } });
    assert.equal(notModified.statusCode, 304, ifNoneMatch);
    assert.equal(notModified.body, '');
    assert.equal(notModified.headers.etag, etag);
    assert.ok(notModified.headers['cache-control']);
  }
  const changed = await app.public.inject({ method: 'GET', url: '/.well-known/jwks.json', headers: { 'if-none-match': '"stale"' } });
  assert.equal(changed.statusCode, 200);

  const head = await app.public.inject({ method: 'HEAD', url: '/.well-known/jwks.json' });
  assert.equal(head.statusCode, 200);
  assert.equal(head.body, '');
  assert.equal(head.headers.etag, etag);
  assert.equal(head.headers['content-type'], 'application/json');

  const typed = await app.public.inject({ method: 'GET', url: '/.well-known/jwks.json', headers: { accept: 'application/jwk-set+json' } });
  assert.equal(typed.headers['content-type'], 'application/jwk-set+json');
  assert.notEqual(typed.headers.etag, etag, 'another representation, another strong ETag');
  assert.equal(typed.body, res.body);

  const preflight = await app.public.inject({ method: 'OPTIONS', url: '/.well-known/jwks.json' });
  assert.equal(preflight.statusCode, 204);
  assert.equal(preflight.headers['access-control-allow-origin'], '*');

  await app.keys.rotate('default', { force: true });
  const rotated = await app.public.inject({ method: 'GET', url: '/.well-known/jwks.json', headers: { 'if-none-match': etag } });
  assert.equal(rotated.statusCode, 200, 'a changed set is sent again');
  assert.notEqual(rotated.headers.etag, etag);
});

test('JWKS_CONTENT_TYPE switches the default type; max-age is capped below the pre-publish period', async (t) => {
  const { app } = await buildTestApp({ JWKS_CONTENT_TYPE: 'application/jwk-set+json', KEY_PREPUBLISH_PERIOD: '40s', KEY_ROTATION_PERIOD: '60s', JWKS_MAX_AGE: '1h' });
  t.after(() => app.close());
  const res = await app.public.inject({ method: 'GET', url: '/.well-known/jwks.json' });
  assert.equal(res.headers['content-type'], 'application/jwk-set+json');
  assert.match(res.headers['cache-control'] as string, /max-age=10,/);
});

test('unknown sets and paths are 404 problem+json; the public port has no signing routes', async (t) => {
  const { app } = await buildTestApp();
  t.after(() => app.close());
  for (const url of ['/jwks/nope.json', '/jwks/default', '/jwks/..%2f..%2fetc.json', '/v1/assertions', '/nothing']) {
    const res = await app.public.inject({ method: 'GET', url });
    assert.equal(res.statusCode, 404, url);
    assert.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8');
    assert.ok(['unknown_key_set', 'not_found'].includes(res.json().code), url);
  }
  assert.equal((await app.public.inject({ method: 'GET', url: '/jwks/nope.json' })).json().code, 'unknown_key_set');
  const post = await app.public.inject({ method: 'POST', url: '/v1/assertions', payload: {} });
  assert.equal(post.statusCode, 404);
});

test('rate limiting per client address: 429 problem+json with Retry-After; health is exempt', async (t) => {
  const { app } = await buildTestApp({ RATE_LIMIT_MAX: '3', RATE_LIMIT_WINDOW: '1m' });
  t.after(() => app.close());
  const from = (ip: string) => app.public.inject({ method: 'GET', url: '/.well-known/jwks.json', remoteAddress: ip });
  for (let i = 0; i < 3; i++) assert.equal((await from('192.0.2.1')).statusCode, 200);
  const limited = await from('192.0.2.1');
  assert.equal(limited.statusCode, 429);
  assert.equal(limited.json().code, 'rate_limited');
  assert.equal(limited.headers['content-type'], 'application/problem+json; charset=utf-8');
  assert.ok(Number(limited.headers['retry-after']) > 0);
  assert.equal((await from('192.0.2.2')).statusCode, 200, 'another address has its own budget');
  for (let i = 0; i < 5; i++) {
    assert.equal((await app.public.inject({ method: 'GET', url: '/healthz', remoteAddress: '192.0.2.1' })).statusCode, 200);
  }
});

test('rate limiting keys: an IPv6 client by its /64, an IPv4-mapped address as IPv4; preflights are not counted', async (t) => {
  const { app } = await buildTestApp({ RATE_LIMIT_MAX: '2', RATE_LIMIT_WINDOW: '1m' });
  t.after(() => app.close());
  const from = (ip: string, method: 'GET' | 'OPTIONS' = 'GET') => app.public.inject({ method, url: '/.well-known/jwks.json', remoteAddress: ip });
  for (let i = 0; i < 3; i++) assert.equal((await from('2001:db8:1:2::1', 'OPTIONS')).statusCode, 204);
  assert.equal((await from('2001:db8:1:2::1')).statusCode, 200);
  assert.equal((await from('2001:DB8:1:2:ffff::9')).statusCode, 200, 'same /64, another spelling');
  const refused = await from('2001:db8:1:2:abcd::3');
  assert.equal(refused.statusCode, 429, 'the /64 shares one budget');
  assert.equal(refused.json().code, 'rate_limited');
  assert.equal((await from('2001:db8:1:3::1')).statusCode, 200, 'another /64 has its own');
  for (let i = 0; i < 2; i++) assert.equal((await from('::ffff:192.0.2.40')).statusCode, 200);
  assert.equal((await from('192.0.2.40')).statusCode, 429, 'an IPv4-mapped address counts as the IPv4 address');
});

test('behind a proxy the client address comes from X-Forwarded-For only when TRUST_PROXY says so', async (t) => {
  const trusting = await buildTestApp({ RATE_LIMIT_MAX: '2', TRUST_PROXY: '127.0.0.1' });
  const untrusting = await buildTestApp({ RATE_LIMIT_MAX: '2' });
  t.after(() => Promise.all([trusting.app.close(), untrusting.app.close()]));
  const via = (app: typeof trusting.app, client: string) =>
    app.public.inject({ method: 'GET', url: '/.well-known/jwks.json', remoteAddress: '127.0.0.1', headers: { 'x-forwarded-for': client } });
  for (let i = 0; i < 2; i++) assert.equal((await via(trusting.app, '198.51.100.7')).statusCode, 200);
  assert.equal((await via(trusting.app, '198.51.100.7')).statusCode, 429);
  assert.equal((await via(trusting.app, '198.51.100.8')).statusCode, 200, 'trusted proxy: counted per forwarded client');
  for (let i = 0; i < 2; i++) assert.equal((await via(untrusting.app, `198.51.100.${i}`)).statusCode, 200);
  assert.equal((await via(untrusting.app, '198.51.100.99')).statusCode, 429, 'untrusted header: all counted as the proxy');
});

test('health and readiness on both ports', async (t) => {
  const { app } = await buildTestApp();
  t.after(() => app.close());
  for (const server of [app.public, app.internal]) {
    assert.deepEqual((await server.inject({ url: '/healthz' })).json(), { status: 'ok' });
    const ready = await server.inject({ url: '/readyz' });
    assert.equal(ready.statusCode, 200);
    assert.deepEqual(ready.json(), { status: 'ready', store: 'memory' });
  }
});

test('on a real socket: keep-alive, Content-Length, HEAD and 304 of the directly written answer; responses counted', async (t) => {
  const { app } = await buildTestApp();
  t.after(() => app.close());
  const { publicUrl } = await app.listen();
  const { port } = new URL(publicUrl);
  // Several requests on one kept-alive connection, read raw so that every byte of the framing is checked.
  const socket = connect({ host: '127.0.0.1', port: Number(port) });
  t.after(() => socket.destroy());
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  let received = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => (received = Buffer.concat([received, chunk])));
  const ask = async (request: string, responses: number): Promise<string> => {
    const before = received.length;
    socket.write(request);
    const deadline = Date.now() + 5000;
    const count = () => (received.subarray(before).toString('latin1').match(/HTTP\/1\.1 \d{3} /g) ?? []).length;
    while (count() < responses || !/\r\n\r\n/.test(received.subarray(before).toString('latin1'))) {
      if (Date.now() > deadline) throw new Error(`no complete answer: ${received.subarray(before).toString('latin1')}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
    return received.subarray(before).toString('latin1');
  };
  const body = (await app.public.inject({ url: '/.well-known/jwks.json' })).body;
  const etag = app.keys.view('default')!.jwks.etags['application/json'];

  const get = await ask('GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n', 1);
  const [head, rest] = get.split('\r\n\r\n');
  assert.match(head!, /^HTTP\/1\.1 200 OK/);
  assert.match(head!, /\r\nconnection: keep-alive/i);
  assert.match(head!, new RegExp(`\\r\\ncontent-length: ${Buffer.byteLength(body)}\\r\\n`, 'i'));
  assert.match(head!, /\r\ncontent-type: application\/json\r\n/i);
  assert.equal(rest, body, 'exactly the body, nothing after it');

  const headOnly = await ask('HEAD /jwks/default.json HTTP/1.1\r\nHost: x\r\n\r\n', 1);
  assert.match(headOnly, /^HTTP\/1\.1 200 OK/);
  assert.match(headOnly, new RegExp(`\\r\\ncontent-length: ${Buffer.byteLength(body)}\\r\\n`, 'i'));
  assert.ok(headOnly.endsWith('\r\n\r\n'), 'HEAD: no body');

  const notModified = await ask(`GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nIf-None-Match: ${etag}\r\n\r\n`, 1);
  assert.match(notModified, /^HTTP\/1\.1 304 Not Modified/);
  assert.doesNotMatch(notModified, /content-type|content-length: [1-9]/i);
  assert.ok(notModified.endsWith('\r\n\r\n'), '304: no body');

  // Pipelined on the same connection: both answered in order, the connection still open.
  const twice = await ask('GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\nGET /jwks/default.json HTTP/1.1\r\nHost: x\r\n\r\n', 2);
  assert.equal(twice.split(body).length - 1, 2);
  assert.equal(socket.destroyed, false);

  // The public thread (PUBLIC_SERVER_THREAD) reports its counts at least every second: bounded wait for them.
  let metrics = await app.internal.inject({ url: '/metrics' });
  const count = (route: string, status: number) =>
    Number(new RegExp(`jwks_signer_http_requests_total\\{port="public",route="${route.replace(/[./]/g, '\\$&')}",status="${status}"\\} (\\d+)`).exec(metrics.body)?.[1] ?? 0);
  for (let i = 0; i < 60 && (count('/.well-known/jwks.json', 200) < 3 || count('/.well-known/jwks.json', 304) < 1 || count('/jwks/:file', 200) < 2); i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    metrics = await app.internal.inject({ url: '/metrics' });
  }
  assert.equal(count('/.well-known/jwks.json', 200), 3, 'the inject and two socket GETs');
  assert.equal(count('/.well-known/jwks.json', 304), 1);
  assert.equal(count('/jwks/:file', 200), 2, 'HEAD and GET');
});
