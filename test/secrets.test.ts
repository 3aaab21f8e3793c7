// Private key material never reaches a response, a log line, or Redis unencrypted; API tokens never reach logs.
import assert from 'node:assert/strict';
import { createHash, type KeyObject } from 'node:crypto';
import type { InjectOptions } from 'fastify';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createKeyEncryption } from '../src/keys/key-encryption.js';
import { openPrivateKey } from '../src/keys/key-generation.js';
import type { KeyRecord } from '../src/keys/types.js';
import { publicSettings, toPublicView } from '../src/public-server.js';
import { buildTestApp, TEST_KEK } from './helpers/app.js';
import { TOKENS, clientsFile } from './helpers/clients.js';
import { freePort, startRedis } from './helpers/redis.js';
import { startOidcServer } from './helpers/oidc-server.js';

function secretsOf(key: KeyObject): string[] {
  const jwk = key.export({ format: 'jwk' });
  const der = key.export({ format: 'der', type: 'pkcs8' });
  const pem = key.export({ format: 'pem', type: 'pkcs8' }).toString();
  const members = (['d', 'p', 'q', 'dp', 'dq', 'qi'] as const).map((m) => jwk[m]).filter((v): v is string => typeof v === 'string');
  const std = members.map((v) => Buffer.from(v, 'base64url').toString('base64').replace(/=+$/, ''));
  const pemBody = pem.split('\n')[1]!;
  return [...members, ...std, der.toString('base64').slice(24, 88), der.toString('hex').slice(48, 176), pemBody].map((s) => s.slice(0, 40));
}

test('leak scan: a full lifecycle leaves no private key material in responses, logs or raw Redis', async (t) => {
  const redis = await startRedis();
  t.after(() => redis.close());
  const sets = join(mkdtempSync(join(tmpdir(), 'sets-')), 'sets.yaml');
  writeFileSync(sets, 'keySets:\n  default: { rotationPeriod: 20s, prepublishPeriod: 5s, retireGrace: 30s, maxTtl: 30s, defaultTtl: 10s }\n  es: { alg: ES256 }\n  ed: { alg: EdDSA }\n');
  const ctx = await buildTestApp({ REDIS_URL: redis.url, KEY_SETS_FILE: sets, API_CLIENTS_FILE: clientsFile(), LOG_LEVEL: 'trace' });
  t.after(() => ctx.app.close());
  const encryption = createKeyEncryption([{ id: 'test', key: Buffer.from(TEST_KEK.slice('test:'.length), 'base64') }]);
  const material = new Map<string, string[]>();
  async function collectKeys(): Promise<void> {
    for (const name of await redis.client.keys('*:keys')) {
      for (const value of Object.values(await redis.client.hgetall(name))) {
        const record = JSON.parse(value) as KeyRecord;
        if (record.privateKey && !material.has(record.kid)) material.set(record.kid, secretsOf(await openPrivateKey(record, encryption)));
      }
    }
  }
  const responses: string[] = [];
  const call = async (server: 'public' | 'internal', opts: InjectOptions) => {
    const res = await ctx.app[server].inject(opts);
    responses.push(JSON.stringify(res.headers), res.body);
    return res;
  };
  // What the public thread is given (PUBLIC_SERVER_THREAD): public settings and each set's rendered JWKS.
  const toThread: string[] = [];
  const collectThreadData = () => {
    const views = ['default', 'es', 'ed'].map((set) => {
      const view = toPublicView(ctx.app.keys.view(set)!);
      return { ...view, body: view.body.toString() };
    });
    toThread.push(JSON.stringify({ settings: publicSettings(ctx.app.config), views }));
  };
  const admin = { authorization: `Bearer ${TOKENS.admin}`, 'content-type': 'application/json' };
  const signer = { authorization: `Bearer ${TOKENS.broad}`, 'content-type': 'application/json' };

  await collectKeys();
  for (let step = 0; step < 4; step++) {
    for (const set of ['default', 'es', 'ed']) {
      await call('public', { url: `/jwks/${set}.json` });
      await call('internal', { method: 'POST', url: '/v1/assertions', headers: signer, payload: { client_id: 'c', audience: 'a', key_set: set } });
      await call('internal', { method: 'POST', url: '/v1/jwt', headers: signer, payload: { claims: { iss: 'i', aud: 'a', d: 'not-a-key' }, key_set: set } });
      await call('internal', { method: 'POST', url: '/v1/assertions', headers: signer, payload: { client_id: 'c', audience: 'a', key_set: set, kid: 'x' } });
    }
    await call('internal', { url: '/v1/keys', headers: admin });
    await call('internal', { method: 'POST', url: '/v1/keys/rotate', headers: admin, payload: { key_set: 'es', force: true } });
    await collectKeys();
    const active = ctx.app.keys.view('ed')!.active.kid;
    await call('internal', { method: 'POST', url: `/v1/keys/${active}/revoke`, headers: admin, payload: { key_set: 'ed' } });
    await collectKeys();
    ctx.clock.advance(20_000);
    await ctx.app.keys.tick();
    await collectKeys();
    collectThreadData();
  }
  await call('internal', { method: 'POST', url: '/v1/assertions', headers: { authorization: 'Bearer wrong-token' }, payload: {} });
  await call('public', { url: '/readyz' });
  await call('internal', { url: '/metrics' });

  const raw: string[] = [];
  for (const name of await redis.client.keys('*')) {
    const type = await redis.client.type(name);
    const value = type === 'hash' ? await redis.client.hgetall(name) : type === 'stream' ? await redis.client.xrange(name, '-', '+') : await redis.client.get(name);
    raw.push(name, JSON.stringify(value));
  }
  assert.ok(material.size >= 14, `saw ${material.size} keys`);
  assert.ok(raw.includes('jwks-signer:audit'), 'the audit stream was scanned');
  assert.match(responses.at(-1)!, /jwks_signer_signatures_total/, 'the metrics were scanned');
  const haystacks = { responses: responses.join('\n'), logs: ctx.logs.join('\n'), redis: raw.join('\n'), publicThread: toThread.join('\n') };
  const kek = TEST_KEK.slice('test:'.length);
  assert.equal(haystacks.publicThread.includes(kek), false, 'publicThread: no key-encryption key');
  for (const client of ctx.app.config.clients) {
    assert.equal(haystacks.publicThread.includes(client.tokenSha256.toString('hex')), false, `publicThread: no token hash of ${client.name}`);
  }
  assert.ok(ctx.logs.length > 50, 'trace logging produced lines to scan');
  for (const [where, text] of Object.entries(haystacks)) {
    assert.doesNotMatch(text, /-----BEGIN|PRIVATE KEY/, `${where}: no PEM`);
    for (const [kid, secrets] of material) {
      for (const secret of secrets) assert.equal(text.includes(secret), false, `${where}: material of ${kid} leaked`);
    }
    for (const token of Object.values(TOKENS)) assert.equal(text.includes(token), false, `${where}: an API token leaked`);
  }
  assert.ok(ctx.logs.some((l) => l.includes('"audit":"sign"')), 'the audit lines are there');
});

test('leak scan: the token broker keeps access, refresh and id tokens, assertions and grant passwords out of logs, metrics, audit and errors', async (t) => {
  const redis = await startRedis();
  t.after(() => redis.close());
  const port = await freePort();
  const oidc = await startOidcServer({ clients: [{ clientId: 'leak-app', jwksUri: `http://127.0.0.1:${port}/.well-known/jwks.json` }] });
  t.after(() => oidc.close());
  const secrets: string[] = ['user-password-do-not-log'];
  let calls = 0;
  const endpoint = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      const form = new URLSearchParams(body);
      for (const name of ['client_assertion', 'assertion', 'refresh_token']) if (form.get(name)) secrets.push(form.get(name)!);
      calls++;
      if (req.url === '/error') {
        res.writeHead(calls % 2 ? 503 : 400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'invalid_grant', error_description: 'expired' }));
        return;
      }
      const issued = { access_token: `at-${calls}-${'x'.repeat(30)}`, refresh_token: `rt-${calls}-${'y'.repeat(30)}`, id_token: `it-${calls}-${'z'.repeat(30)}` };
      secrets.push(...Object.values(issued));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ...issued, token_type: 'Bearer', expires_in: 3600 }));
    });
  });
  await new Promise<void>((resolve) => endpoint.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => { endpoint.closeAllConnections(); endpoint.close(() => resolve()); }));
  const base = `http://127.0.0.1:${(endpoint.address() as AddressInfo).port}`;
  const ctx = await buildTestApp({ PORT: String(port), REDIS_URL: redis.url, API_TOKEN_SHA256: createHash('sha256').update(TOKENS.broad).digest('hex'), BROKER_TOKEN_ENDPOINTS: `${base}/token,${base}/error,${oidc.tokenEndpoint}`, LOG_LEVEL: 'trace' });
  t.after(() => ctx.app.close());
  await ctx.app.listen();

  const leakable: string[] = [];
  const call = async (payload: object) => {
    const res = await ctx.app.internal.inject({ method: 'POST', url: '/v1/tokens', headers: { authorization: `Bearer ${TOKENS.broad}`, 'content-type': 'application/json' }, payload });
    if (res.statusCode === 200) secrets.push(...Object.values(res.json() as Record<string, unknown>).filter((v): v is string => typeof v === 'string' && v.length > 20));
    else leakable.push(res.body);
    leakable.push(JSON.stringify(res.headers));
    return res;
  };
  for (let i = 0; i < 2; i++) {
    assert.equal((await call({ token_endpoint: oidc.tokenEndpoint, client_id: 'leak-app', grant_type: 'client_credentials' })).statusCode, 200);
    assert.equal((await call({ token_endpoint: `${base}/token`, client_id: 'svc', grant_type: 'client_credentials' })).statusCode, 200);
    await call({ token_endpoint: `${base}/token`, client_id: 'svc', grant_type: 'password', parameters: { username: 'u', password: 'user-password-do-not-log' } });
    await call({ token_endpoint: `${base}/token`, client_id: 'svc', grant_type: 'refresh_token', parameters: { refresh_token: `rt-1-${'y'.repeat(30)}` } });
    await call({ token_endpoint: `${base}/token`, client_id: 'svc', grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', subject: 'user-1', scope: 's' });
    assert.equal((await call({ token_endpoint: `${base}/error`, client_id: 'svc', grant_type: 'client_credentials', cache: false })).statusCode, 502);
    await call({ token_endpoint: `${base}/token`, client_id: 'svc', grant_type: 'password', parameters: { username: 'u' } });
  }
  await new Promise((resolve) => setTimeout(resolve, 100));
  const metrics = (await ctx.app.internal.inject({ url: '/metrics' })).body;
  assert.match(metrics, /jwks_signer_token_requests_total/);
  const audit = JSON.stringify(await redis.client.xrange(`jwks-signer:audit`, '-', '+'));
  assert.match(audit, /token_request/, 'the audit stream was scanned');
  const haystacks = { errors: leakable.join('\n'), logs: ctx.logs.join('\n'), metrics, audit };
  assert.ok(secrets.length > 20, `collected ${secrets.length} secrets`);
  for (const [where, text] of Object.entries(haystacks)) {
    for (const secret of new Set(secrets)) assert.equal(text.includes(secret), false, `${where}: a secret leaked (${secret.slice(0, 12)}...)`);
    assert.equal(text.includes(TOKENS.broad), false, `${where}: the API token leaked`);
  }
});
