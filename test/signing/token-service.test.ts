// The token service's own checks, called directly (the HTTP routes' JSON parser refuses some inputs first).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { type ClientPolicy, loadConfig } from '../../src/config.js';
import { type KeyManager, systemClock } from '../../src/keys/key-manager.js';
import { createTokenService } from '../../src/signing/token-service.js';

const client: ClientPolicy = {
  name: 'direct',
  tokenSha256: Buffer.alloc(32),
  scopes: new Set(['sign']),
  keySets: '*',
  clientIds: '*',
  subjects: '*',
  audiences: '*',
  maxTtlMs: 300_000,
  extraClaims: true,
  tokenEndpoints: new Set(),
};

// A `__proto__` claim (an own property, as JSON.parse makes it) is refused before anything is signed: the claims
// are merged with Object.assign, which would set the merged object's prototype instead of copying the claim.
test('an own "__proto__" claim is a reserved claim for assertions and JWTs, refused before any key is used', async () => {
  const config = loadConfig({ LOG_LEVEL: 'silent' });
  // No key is reached: every check runs before the key lookup, so an empty key manager makes a reached lookup fail.
  const tokens = createTokenService({ config, keys: {} as KeyManager, logger: pino({ level: 'silent' }), clock: systemClock });
  const claims = JSON.parse('{"__proto__": {"admin": true}, "tenant": "t"}') as Record<string, unknown>;
  assert.ok(Object.hasOwn(claims, '__proto__'));
  await assert.rejects(tokens.assertion(client, { client_id: 'c', audience: 'https://as.example/token', claims }), { code: 'reserved_claim' });
  await assert.rejects(tokens.jwt(client, { claims: { ...claims, iss: 'c', aud: 'https://as.example/token' } }), { code: 'reserved_claim' });
});
