// Rotating the key-encryption key without downtime: list the new key first, re-encrypt, drop the old one.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { KeyStoreIntegrityError } from '../../src/errors.js';
import type { KeyRecord } from '../../src/keys/types.js';
import { bearer, buildTestApp } from '../helpers/app.js';
import { TOKENS, clientsFile } from '../helpers/clients.js';
import { startRedis } from '../helpers/redis.js';

test('re-encryption moves every stored key to the first KEK; the old KEK can then be removed', async (t) => {
  const redis = await startRedis();
  t.after(() => redis.close());
  const oldKek = `old:${randomBytes(32).toString('base64')}`;
  const newKek = `new:${randomBytes(32).toString('base64')}`;
  const env = (keks: string) => ({ REDIS_URL: redis.url, KEY_ENCRYPTION_KEYS: keks, API_CLIENTS_FILE: clientsFile(), KEY_ALG: 'ES256' });
  const records = async () => Object.values(await redis.client.hgetall('jwks-signer:{default}:keys')).map((v) => JSON.parse(v) as KeyRecord);

  const first = await buildTestApp(env(oldKek));
  await first.app.keys.rotate('default', { force: true });
  await first.app.close();
  assert.deepEqual([...new Set((await records()).filter((r) => r.privateKey).map((r) => r.privateKey!.kek))], ['old']);
  const jwksBefore = (await redis.client.hgetall('jwks-signer:{default}:keys'));

  const both = await buildTestApp(env(`${newKek},${oldKek}`));
  const res = await both.app.internal.inject({ method: 'POST', url: '/v1/keys/reencrypt', headers: { authorization: `Bearer ${TOKENS.admin}` } });
  assert.equal(res.statusCode, 200, res.body);
  assert.deepEqual(res.json(), { encryption_key: 'new', key_sets: [{ key_set: 'default', reencrypted: 2 }] });
  const after = await records();
  assert.equal(after.length, Object.keys(jwksBefore).length, 'no key lost');
  assert.ok(after.filter((r) => r.privateKey).every((r) => r.privateKey!.kek === 'new'));
  const again = await both.app.internal.inject({ method: 'POST', url: '/v1/keys/reencrypt', headers: { authorization: `Bearer ${TOKENS.admin}` } });
  assert.equal(again.json().key_sets[0].reencrypted, 0, 'idempotent');
  const signer = await both.app.internal.inject({ method: 'POST', url: '/v1/keys/reencrypt', headers: bearer(TOKENS.broad), payload: {} });
  assert.equal(signer.json().code, 'scope_denied');
  const active = both.app.keys.view('default')!.active.kid;
  await both.app.close();

  const onlyNew = await buildTestApp(env(newKek));
  t.after(() => onlyNew.app.close());
  assert.equal(onlyNew.app.keys.view('default')!.active.kid, active, 'the same keys, readable with the new KEK alone');
  const signed = await onlyNew.app.internal.inject({ method: 'POST', url: '/v1/assertions', headers: bearer(TOKENS.broad), payload: { client_id: 'c', audience: 'a' } });
  assert.equal(signed.statusCode, 200);
  await assert.rejects(buildTestApp(env(oldKek)), (err: unknown) => err instanceof KeyStoreIntegrityError && err.code === 'unknown_encryption_key');
});
