import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeProtectedHeader } from 'jose';
import { bearer, buildTestApp, type TestApp } from '../helpers/app.js';
import { TOKENS, clientsFile } from '../helpers/clients.js';

const SHORT = {
  KEY_ROTATION_PERIOD: '20s',
  KEY_PREPUBLISH_PERIOD: '10s',
  KEY_RETIRE_GRACE: '40s',
  TOKEN_MAX_TTL: '30s',
  TOKEN_DEFAULT_TTL: '10s',
  KEY_ALG: 'ES256',
};

async function published({ app }: TestApp): Promise<string[]> {
  const res = await app.public.inject({ url: '/.well-known/jwks.json' });
  return (res.json().keys as Array<{ kid: string }>).map((k) => k.kid);
}

async function states({ app }: TestApp): Promise<Record<string, string>> {
  const res = await app.internal.inject({ url: '/v1/keys', headers: bearer(TOKENS.admin) });
  assert.equal(res.statusCode, 200);
  const [set] = res.json().key_sets;
  return Object.fromEntries(set.keys.map((k: { kid: string; state: string }) => [k.kid, k.state]));
}

async function signingKid({ app }: TestApp): Promise<string> {
  const res = await app.internal.inject({
    method: 'POST',
    url: '/v1/assertions',
    headers: bearer(TOKENS.broad),
    payload: { client_id: 'c', audience: 'https://a/token' },
  });
  assert.equal(res.statusCode, 200, res.body);
  return decodeProtectedHeader(res.json().client_assertion).kid!;
}

test('a whole lifecycle with short periods: next -> active -> retired -> gone', async (t) => {
  const ctx = await buildTestApp({ ...SHORT, API_CLIENTS_FILE: clientsFile() });
  t.after(() => ctx.app.close());
  const initial = await states(ctx);
  const a = Object.keys(initial).find((kid) => initial[kid] === 'active')!;
  const b = Object.keys(initial).find((kid) => initial[kid] === 'next')!;
  assert.ok(a && b, 'first start makes an active and a next key');
  assert.deepEqual(await published(ctx), [a, b]);
  assert.equal(await signingKid(ctx), a);

  ctx.clock.advance(19_000);
  await ctx.app.keys.tick();
  assert.deepEqual(await states(ctx), initial, 'nothing is due before the rotation period');

  ctx.clock.advance(1_000);
  await ctx.app.keys.tick();
  const second = await states(ctx);
  assert.equal(second[a], 'retired');
  assert.equal(second[b], 'active');
  const c = Object.keys(second).find((kid) => second[kid] === 'next')!;
  assert.ok(c);
  assert.deepEqual(await published(ctx), [b, c, a], 'the retired key stays published');
  const retired = ctx.app.keys.view('default')!.keys.find((k) => k.kid === a)!;
  assert.equal(retired.privateKey, undefined, 'a retired key keeps no private key');
  assert.ok(ctx.app.keys.view('default')!.keys.filter((k) => k.state !== 'retired').every((k) => k.privateKey), 'active and next keep theirs');
  assert.equal(await signingKid(ctx), b, 'the key published for a whole period now signs');

  ctx.clock.advance(20_000);
  await ctx.app.keys.tick();
  const third = await states(ctx);
  assert.equal(third[b], 'retired');
  assert.equal(third[c], 'active');
  assert.equal(third[a], 'retired', 'a is retired for 40 s, until t=60');

  ctx.clock.advance(20_000);
  await ctx.app.keys.tick();
  const fourth = await states(ctx);
  assert.equal(a in fourth, false, 'deleted once its grace ended');
  assert.equal((await published(ctx)).includes(a), false);
  assert.equal(Object.values(fourth).filter((s) => s === 'active').length, 1);
});

test('admin rotation honours the pre-publish period unless forced; if_active_kid makes it idempotent', async (t) => {
  const ctx = await buildTestApp({ ...SHORT, API_CLIENTS_FILE: clientsFile() });
  t.after(() => ctx.app.close());
  const rotate = (payload?: Record<string, unknown>) =>
    ctx.app.internal.inject({ method: 'POST', url: '/v1/keys/rotate', headers: { authorization: `Bearer ${TOKENS.admin}`, ...(payload ? { 'content-type': 'application/json' } : {}) }, ...(payload ? { payload } : {}) });
  const tooEarly = await rotate();
  assert.equal(tooEarly.statusCode, 409);
  assert.equal(tooEarly.json().code, 'next_key_not_ready');

  const before = ctx.app.keys.view('default')!;
  const stale = await rotate({ if_active_kid: 'not-the-active-kid', force: true });
  assert.equal(stale.statusCode, 200);
  assert.equal(stale.json().rotated, false);
  assert.equal(ctx.app.keys.view('default')!.active.kid, before.active.kid);

  const forced = await rotate({ force: true, if_active_kid: before.active.kid });
  assert.equal(forced.statusCode, 200, forced.body);
  assert.equal(forced.json().rotated, true);
  assert.notEqual(forced.json().active_kid, before.active.kid);
  const again = await rotate({ force: true, if_active_kid: before.active.kid });
  assert.equal(again.json().rotated, false, 'the same request twice rotates once');

  ctx.clock.advance(10_000);
  const onTime = await rotate({});
  assert.equal(onTime.statusCode, 200, onTime.body);
  assert.equal(onTime.json().rotated, true);

  const unknownSet = await rotate({ key_set: 'nope' });
  assert.equal(unknownSet.json().code, 'unknown_key_set');
  const signer = await ctx.app.internal.inject({ method: 'POST', url: '/v1/keys/rotate', headers: bearer(TOKENS.app), payload: {} });
  assert.equal(signer.statusCode, 403);
});

test('revoking the active key: gone from the JWKS at once, the next key signs, a new next is made', async (t) => {
  const ctx = await buildTestApp({ ...SHORT, API_CLIENTS_FILE: clientsFile() });
  t.after(() => ctx.app.close());
  const revoke = (kid: string) => ctx.app.internal.inject({ method: 'POST', url: `/v1/keys/${kid}/revoke`, headers: { authorization: `Bearer ${TOKENS.admin}` } });
  const { active } = ctx.app.keys.view('default')!;
  const next = ctx.app.keys.view('default')!.keys.find((k) => k.state === 'next')!;
  const etag = (await ctx.app.public.inject({ url: '/.well-known/jwks.json' })).headers.etag as string;

  const res = await revoke(active.kid);
  assert.equal(res.statusCode, 200, res.body);
  assert.equal(res.json().revoked, true);
  assert.equal(res.json().active_kid, next.kid);
  const kids = await published(ctx);
  assert.equal(kids.includes(active.kid), false, 'revoked: unpublished at once');
  assert.equal(kids[0], next.kid);
  assert.equal(kids.length, 2, 'active + a new next');
  assert.equal(await signingKid(ctx), next.kid);
  const after = await ctx.app.public.inject({ url: '/.well-known/jwks.json', headers: { 'if-none-match': etag } });
  assert.equal(after.statusCode, 200, 'caches revalidating get the new set');

  const listed = (await states(ctx))[active.kid];
  assert.equal(listed, 'revoked', 'still listed (not published) until its grace ends');
  assert.equal((await revoke(active.kid)).json().revoked, false, 'revoking twice is harmless');
  assert.equal((await revoke('unknownkid')).json().code, 'key_not_found');

  ctx.clock.advance(40_000);
  await ctx.app.keys.tick();
  assert.equal(active.kid in (await states(ctx)), false);
});

test('revoking a retired key removes it from the JWKS at once', async (t) => {
  const ctx = await buildTestApp({ ...SHORT, API_CLIENTS_FILE: clientsFile() });
  t.after(() => ctx.app.close());
  const first = ctx.app.keys.view('default')!.active.kid;
  ctx.clock.advance(20_000);
  await ctx.app.keys.tick();
  assert.ok((await published(ctx)).includes(first));
  const res = await ctx.app.internal.inject({ method: 'POST', url: `/v1/keys/${first}/revoke`, headers: bearer(TOKENS.admin), payload: { key_set: 'default' } });
  assert.equal(res.statusCode, 200, res.body);
  assert.equal((await published(ctx)).includes(first), false);
  assert.equal(Object.values(await states(ctx)).filter((s) => s === 'active').length, 1);
});

test('the admin listing never shows private members', async (t) => {
  const ctx = await buildTestApp({ API_CLIENTS_FILE: clientsFile() });
  t.after(() => ctx.app.close());
  const res = await ctx.app.internal.inject({ url: '/v1/keys?key_set=default', headers: bearer(TOKENS.admin) });
  assert.equal(res.statusCode, 200);
  const [set] = res.json().key_sets;
  assert.equal(set.key_set, 'default');
  assert.equal(set.keys.length, 2);
  for (const key of set.keys) {
    for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi']) assert.equal(member in key.public_jwk, false);
  }
  assert.doesNotMatch(res.body, /privateKey|"ct"|"iv"|"tag"|PRIVATE KEY/);
});
