import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { bearer, buildTestApp } from '../../helpers/app.js';
import { TOKENS, clientsFile } from '../../helpers/clients.js';

const sha = (token: string) => createHash('sha256').update(token).digest('hex');

test('per-client rate limits on signing: 429 for that client only, counted after authentication', async (t) => {
  const path = join(mkdtempSync(join(tmpdir(), 'clients-')), 'clients.yaml');
  writeFileSync(
    path,
    `clients:\n  - { name: slow, tokenSha256: ${sha('slow-token')}, scopes: [sign], clientIds: ["*"], audiences: ["*"], rateLimit: { max: 2, window: 1m } }\n` +
      `  - { name: fast, tokenSha256: ${sha('fast-token')}, scopes: [sign], clientIds: ["*"], audiences: ["*"] }\n`,
  );
  const { app } = await buildTestApp({ API_CLIENTS_FILE: path, KEY_ALG: 'ES256' });
  t.after(() => app.close());
  const sign = (token: string, remoteAddress = '10.0.0.1') =>
    app.internal.inject({ method: 'POST', url: '/v1/assertions', headers: bearer(token), payload: { client_id: 'c', audience: 'a' }, remoteAddress });
  assert.equal((await sign('slow-token')).statusCode, 200);
  assert.equal((await sign('slow-token', '10.0.0.2')).statusCode, 200);
  const limited = await sign('slow-token', '10.0.0.3');
  assert.equal(limited.statusCode, 429, 'the limit follows the client, not the address');
  assert.equal(limited.json().code, 'rate_limited');
  assert.ok(Number(limited.headers['retry-after']) > 0);
  for (let i = 0; i < 5; i++) assert.equal((await sign('fast-token')).statusCode, 200, 'a client without a limit is not limited');
  const metrics = (await app.internal.inject({ url: '/metrics' })).body;
  assert.match(metrics, /jwks_signer_rate_limited_total\{port="internal"\} 1/);
});

test('INTERNAL_RATE_LIMIT_MAX sets a default limit for every client', async (t) => {
  const { app } = await buildTestApp({ API_CLIENTS_FILE: clientsFile(), INTERNAL_RATE_LIMIT_MAX: '1', KEY_ALG: 'ES256' });
  t.after(() => app.close());
  const sign = () => app.internal.inject({ method: 'POST', url: '/v1/assertions', headers: bearer(TOKENS.broad), payload: { client_id: 'c', audience: 'a' } });
  assert.equal((await sign()).statusCode, 200);
  assert.equal((await sign()).statusCode, 429);
});

test('brute force on API tokens: an address that keeps failing is refused for the window, others are not', async (t) => {
  const ctx = await buildTestApp({ API_CLIENTS_FILE: clientsFile(), AUTH_FAILURE_LIMIT: '3', AUTH_FAILURE_WINDOW: '1m', KEY_ALG: 'ES256' });
  t.after(() => ctx.app.close());
  const attempt = (token: string | undefined, remoteAddress: string) =>
    ctx.app.internal.inject({
      method: 'GET',
      url: '/v1/keys',
      headers: token ? { authorization: `Bearer ${token}` } : {},
      remoteAddress,
    });
  assert.equal((await attempt('guess-1', '10.9.9.9')).statusCode, 401);
  assert.equal((await attempt(undefined, '10.9.9.9')).statusCode, 401);
  assert.equal((await attempt('guess-3', '10.9.9.9')).statusCode, 401);
  const locked = await attempt(TOKENS.admin, '10.9.9.9');
  assert.equal(locked.statusCode, 429, 'even a right token is refused from a locked-out address');
  assert.equal(locked.json().code, 'rate_limited');
  assert.ok(Number(locked.headers['retry-after']) >= 1);
  assert.equal((await attempt(TOKENS.admin, '10.9.9.10')).statusCode, 200, 'another address is unaffected');
  assert.ok(ctx.logs.some((line) => line.includes('"audit":"auth_lockout"')), 'the lockout is logged');
  assert.ok(!ctx.logs.some((line) => line.includes('guess-1')), 'presented tokens are not logged');
});
