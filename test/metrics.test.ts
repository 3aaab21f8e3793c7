import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bearer, buildTestApp } from './helpers/app.js';
import { TOKENS, clientsFile } from './helpers/clients.js';
import { startRedis } from './helpers/redis.js';

function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test('metrics: responses by route and status, rate limiting, signatures, key events, key ages', async (t) => {
  const ctx = await buildTestApp({ API_CLIENTS_FILE: clientsFile(), RATE_LIMIT_MAX: '3', KEY_ROTATION_PERIOD: '1h', KEY_PREPUBLISH_PERIOD: '10m', KEY_RETIRE_GRACE: '2h' });
  t.after(() => ctx.app.close());
  const { app, clock } = ctx;
  const first = await app.public.inject({ url: '/.well-known/jwks.json' });
  await app.public.inject({ url: '/.well-known/jwks.json', headers: { 'if-none-match': first.headers.etag as string } });
  await app.public.inject({ url: '/.well-known/jwks.json' });
  await app.public.inject({ url: '/.well-known/jwks.json' });
  await app.public.inject({ url: '/no/such/path/1' });
  await app.public.inject({ url: '/no/such/path/2' });
  for (let i = 0; i < 2; i++) {
    await app.internal.inject({ method: 'POST', url: '/v1/assertions', headers: bearer(TOKENS.broad), payload: { client_id: 'c', audience: 'a' } });
  }
  await app.internal.inject({ method: 'POST', url: '/v1/jwt', headers: bearer(TOKENS.broad), payload: { claims: { iss: 'i', aud: 'a' } } });
  clock.advance(3_600_000);
  await app.keys.tick();
  clock.advance(60_000);

  const res = await app.internal.inject({ url: '/metrics' });
  assert.equal(res.statusCode, 200);
  assert.match(res.headers['content-type'] as string, /^text\/plain; version=0.0.4/);
  const text = res.body;
  const route = (status: number) => `jwks_signer_http_requests_total{port="public",route="/.well-known/jwks.json",status="${status}"}`;
  assert.equal(value(text, route(200)), 2);
  assert.equal(value(text, route(304)), 1);
  assert.equal(value(text, route(429)), 1);
  assert.equal(value(text, 'jwks_signer_rate_limited_total{port="public"}'), 3, 'the two 404s past the limit are refused too');
  assert.equal(value(text, 'jwks_signer_http_requests_total{port="public",route="unmatched",status="429"}'), 2, 'unknown paths share one label');
  assert.equal(value(text, 'jwks_signer_signatures_total{key_set="default",alg="RS256",client="broad",kind="assertion"}'), 2);
  assert.equal(value(text, 'jwks_signer_signatures_total{key_set="default",alg="RS256",client="broad",kind="jwt"}'), 1);
  assert.equal(value(text, 'jwks_signer_signing_duration_seconds_count{alg="RS256"}'), 3);
  assert.equal(value(text, 'jwks_signer_key_events_total{key_set="default",event="activated"}'), 1);
  assert.equal(value(text, 'jwks_signer_key_events_total{key_set="default",event="retired"}'), 1);
  assert.equal(value(text, 'jwks_signer_key_events_total{key_set="default",event="created_next"}'), 2);
  assert.equal(value(text, 'jwks_signer_active_key_age_seconds{key_set="default"}'), 60);
  assert.equal(value(text, 'jwks_signer_next_rotation_seconds{key_set="default"}'), 3540);
  assert.equal(value(text, 'jwks_signer_published_keys{key_set="default"}'), 3);
  assert.equal(value(text, 'jwks_signer_store_up'), 1);
  assert.equal(value(text, 'jwks_signer_ready'), 1);
  assert.ok(value(text, 'jwks_signer_process_resident_memory_bytes')! > 0, 'process metrics too');
  assert.equal((await app.public.inject({ url: '/metrics', remoteAddress: '192.0.2.9' })).statusCode, 404, 'not on the public port');
});

test('metrics: the store going down shows as store_up 0 and counted errors', async (t) => {
  const redis = await startRedis();
  t.after(() => redis.close());
  const { app } = await buildTestApp({ REDIS_URL: redis.url, API_CLIENTS_FILE: clientsFile(), KEY_ALG: 'ES256' });
  t.after(() => app.close());
  await redis.stop();
  const deadline = Date.now() + 5000;
  while (app.store.state() !== 'down' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  await app.keys.tick();
  await app.internal.inject({ method: 'POST', url: '/v1/keys/rotate', headers: bearer(TOKENS.admin), payload: { force: true } });
  const text = (await app.internal.inject({ url: '/metrics' })).body;
  assert.equal(value(text, 'jwks_signer_store_up'), 0);
  assert.equal(value(text, 'jwks_signer_ready'), 1, 'still serving from memory');
  assert.ok(value(text, 'jwks_signer_store_errors_total{operation="maintenance"}')! >= 1);
  assert.equal(value(text, 'jwks_signer_store_errors_total{operation="admin"}'), 1);
});
