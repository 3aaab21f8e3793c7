// Slow and oversized clients on a real listener: they get a problem+json answer or a closed socket in bounded
// time, and cannot hold a connection; kept-alive connections survive idle periods up to KEEP_ALIVE_TIMEOUT.
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { bearer, buildTestApp, type TestApp } from './helpers/app.js';

let t0: TestApp;
let ports: { public: number; internal: number };
before(async () => {
  t0 = await buildTestApp({ REQUEST_TIMEOUT: '1s', CONNECTION_TIMEOUT: '1s', KEEP_ALIVE_TIMEOUT: '3s', MAX_HEADER_SIZE: '8192', KEY_ALG: 'ES256' });
  const { publicUrl, internalUrl } = await t0.app.listen();
  ports = { public: Number(new URL(publicUrl).port), internal: Number(new URL(internalUrl).port) };
});
after(() => t0.app.close());

interface Conversation {
  socket: Socket;
  /** Everything received so far. */
  received: () => string;
  /** Resolves when the server closes the connection, with the ms since the socket opened; rejects after `limitMs`. */
  closed: (limitMs: number) => Promise<number>;
}

async function open(port: number): Promise<Conversation> {
  const socket = connect({ host: '127.0.0.1', port });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const started = Date.now();
  let data = '';
  socket.on('data', (chunk: Buffer) => (data += chunk.toString('latin1')));
  socket.on('error', () => undefined);
  const ended = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now() - started)));
  return {
    socket,
    received: () => data,
    closed: (limitMs) =>
      Promise.race([
        ended,
        new Promise<number>((_, reject) => setTimeout(() => reject(new Error(`still open after ${limitMs} ms`)), limitMs).unref()),
      ]),
  };
}

function problem(raw: string): { status: number; contentType: string | undefined; body: Record<string, unknown> } {
  const [head, body = ''] = raw.split('\r\n\r\n');
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head!)?.[1]);
  const contentType = /\r\ncontent-type: ([^\r\n]+)/i.exec(head!)?.[1];
  return { status, contentType, body: JSON.parse(body) as Record<string, unknown> };
}

test('headers larger than MAX_HEADER_SIZE get 431 headers_too_large as problem+json, on both ports', async () => {
  for (const port of [ports.public, ports.internal]) {
    const c = await open(port);
    c.socket.write(`GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(10_000)}\r\n\r\n`);
    await c.closed(5_000);
    const answer = problem(c.received());
    assert.equal(answer.status, 431);
    assert.equal(answer.contentType, 'application/problem+json');
    assert.equal(answer.body.code, 'headers_too_large');
  }
  const res = await fetch(`http://127.0.0.1:${ports.public}/.well-known/jwks.json`, { headers: { 'x-fine': 'a'.repeat(4_000) } });
  assert.equal(res.status, 200, 'headers under the limit are served');
});

test('a client that trickles its headers is answered 408 request_timeout and cut off after REQUEST_TIMEOUT', async () => {
  const c = await open(ports.public);
  c.socket.write('GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n');
  // One header byte every 100 ms keeps the socket active, so only the request deadline can stop it.
  const trickle = setInterval(() => c.socket.writable && c.socket.write('X'), 100);
  try {
    const ms = await c.closed(6_000);
    assert.ok(ms >= 900, `closed after ${ms} ms, not before the request timeout`);
  } finally {
    clearInterval(trickle);
  }
  const answer = problem(c.received());
  assert.equal(answer.status, 408);
  assert.equal(answer.body.code, 'request_timeout');
});

test('a request whose body never completes is cut off after REQUEST_TIMEOUT and does not sign', async () => {
  const signed = async () => (await t0.app.audit.read(1000)).filter((e) => e.event === 'sign').length;
  const ok = await fetch(`http://127.0.0.1:${ports.internal}/v1/assertions`, {
    method: 'POST',
    headers: bearer(t0.app.config.devApiToken!),
    body: JSON.stringify({ client_id: 'fast', audience: 'https://idp.example/token' }),
  });
  assert.equal(ok.status, 200, 'a complete request signs');
  const signedBefore = await signed();
  assert.ok(signedBefore > 0, 'signatures are counted');
  const c = await open(ports.internal);
  const body = JSON.stringify({ client_id: 'slow', audience: 'https://idp.example/token' });
  c.socket.write(
    `POST /v1/assertions HTTP/1.1\r\nHost: x\r\nAuthorization: ${bearer(t0.app.config.devApiToken!).authorization}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 10)}`,
  );
  await c.closed(6_000);
  assert.doesNotMatch(c.received(), /HTTP\/1\.1 200/);
  assert.equal(await signed(), signedBefore, 'the incomplete request signed nothing');
});

test('a connection that sends nothing is closed after CONNECTION_TIMEOUT', async () => {
  const c = await open(ports.internal);
  const ms = await c.closed(6_000);
  assert.ok(ms >= 900, `closed after ${ms} ms`);
});

test('a kept-alive connection stays open while idle for less than KEEP_ALIVE_TIMEOUT, then closes', async () => {
  const c = await open(ports.public);
  const request = 'GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n';
  c.socket.write(request);
  await new Promise((resolve) => setTimeout(resolve, 1_800));
  assert.match(c.received(), /^HTTP\/1\.1 200/);
  assert.ok(!c.socket.destroyed && c.socket.readyState === 'open', 'still open after an idle period longer than CONNECTION_TIMEOUT');
  c.socket.write(request);
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(c.received().match(/HTTP\/1\.1 200/g)?.length, 2, 'the second request was served on the same connection');
  const ms = await c.closed(8_000);
  assert.ok(ms >= 3_000, `closed after ${ms} ms`);
});
