import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfig } from '../src/config.js';
import { ConfigError } from '../src/errors.js';
import { parseDuration } from '../src/lib/duration.js';

const kek = (id = 'k1') => `${id}:${randomBytes(32).toString('base64')}`;
const dir = mkdtempSync(join(tmpdir(), 'jwks-signer-config-'));
function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

function failsOn(env: Record<string, string>, variable: string): void {
  assert.throws(
    () => loadConfig(env),
    (err: unknown) => err instanceof ConfigError && err.variable === variable && err.message.startsWith(variable),
    `expected a ConfigError naming ${variable}`,
  );
}

test('durations accept human units and bare seconds', () => {
  assert.equal(parseDuration('90s'), 90_000);
  assert.equal(parseDuration('24h'), 86_400_000);
  assert.equal(parseDuration('30d'), 2_592_000_000);
  assert.equal(parseDuration('1h30m'), 5_400_000);
  assert.equal(parseDuration('500ms'), 500);
  assert.equal(parseDuration('45'), 45_000);
  assert.equal(parseDuration('soon'), undefined);
  assert.equal(parseDuration('-5s'), undefined);
});

test('defaults: embedded store, one RS256 set that satisfies CONSUMERS.md rules 7 and 8, a dev token', () => {
  const config = loadConfig({});
  assert.equal(config.port, 8080);
  assert.equal(config.internalPort, 8081);
  assert.equal(config.host, '0.0.0.0');
  assert.equal(config.redisUrl, undefined);
  const set = config.keySets.get('default')!;
  assert.equal(set.alg, 'RS256');
  assert.equal(set.rsaBits, 2048);
  assert.ok(set.prepublishPeriodMs >= 24 * 3_600_000);
  assert.ok(set.retireGraceMs >= set.maxTtlMs + 5 * 60_000 + 24 * 3_600_000);
  assert.equal(set.defaultTtlMs, 60_000);
  assert.equal(set.maxTtlMs, 600_000);
  assert.deepEqual(config.warnings, []);
  assert.ok(config.devApiToken && config.devApiToken.length >= 40);
  assert.equal(config.clients.length, 1);
  assert.equal(config.signingNice, 10);
  assert.equal(config.apiThreadNice, 5, 'half of SIGNING_NICE');
  assert.equal(config.auditFlushIntervalMs, 5);
  assert.equal(loadConfig({ AUDIT_FLUSH_INTERVAL: '0' }).auditFlushIntervalMs, 0);
  assert.equal(loadConfig({ AUDIT_FLUSH_INTERVAL: '20ms' }).auditFlushIntervalMs, 20);
  assert.ok(config.jwks.maxAgeMs < set.prepublishPeriodMs);
});

test('API_THREAD_NICE: half of SIGNING_NICE by default, below it when set, unused without the public thread', () => {
  assert.equal(loadConfig({ SIGNING_NICE: '5' }).apiThreadNice, 2);
  assert.equal(loadConfig({ SIGNING_NICE: '1' }).apiThreadNice, 0);
  assert.equal(loadConfig({ SIGNING_NICE: '0' }).apiThreadNice, 0);
  assert.equal(loadConfig({ API_THREAD_NICE: '9' }).apiThreadNice, 9);
  assert.equal(loadConfig({ API_THREAD_NICE: '0' }).apiThreadNice, 0);
  assert.equal(loadConfig({ SIGNING_NICE: '0', API_THREAD_NICE: '0' }).apiThreadNice, 0);
  const unthreaded = loadConfig({ PUBLIC_SERVER_THREAD: 'false' });
  assert.equal(unthreaded.apiThreadNice, 0, 'the main thread serves the JWKS');
  assert.deepEqual(unthreaded.warnings, []);
  const ignored = loadConfig({ PUBLIC_SERVER_THREAD: 'false', API_THREAD_NICE: '3' });
  assert.equal(ignored.apiThreadNice, 0);
  assert.equal(ignored.warnings.length, 1);
  assert.match(ignored.warnings[0]!, /API_THREAD_NICE/);
});

test('bad values stop start-up with an error naming the variable', () => {
  failsOn({ PORT: 'eighty' }, 'PORT');
  failsOn({ PORT: '70000' }, 'PORT');
  failsOn({ PORT: '9000', INTERNAL_PORT: '9000' }, 'INTERNAL_PORT');
  failsOn({ LOG_LEVEL: 'loud' }, 'LOG_LEVEL');
  failsOn({ REDIS_URL: 'http://localhost:6379' }, 'REDIS_URL');
  failsOn({ REDIS_URL: 'redis://localhost:6379' }, 'KEY_ENCRYPTION_KEYS');
  failsOn({ REDIS_URL: 'redis://localhost:6379', KEY_ENCRYPTION_KEYS: 'k1:c2hvcnQ=' }, 'KEY_ENCRYPTION_KEYS');
  failsOn({ KEY_ENCRYPTION_KEYS: `${kek('a')},${kek('a')}` }, 'KEY_ENCRYPTION_KEYS');
  failsOn({ KEY_ALG: 'HS256' }, 'KEY_ALG');
  failsOn({ KEY_RSA_BITS: '1024' }, 'KEY_RSA_BITS');
  failsOn({ KEY_ROTATION_PERIOD: 'monthly' }, 'KEY_ROTATION_PERIOD');
  failsOn({ TOKEN_DEFAULT_TTL: '20m' }, 'TOKEN_DEFAULT_TTL');
  failsOn({ TOKEN_MAX_TTL: '2h', KEY_RETIRE_GRACE: '1h' }, 'KEY_RETIRE_GRACE');
  failsOn({ TRUST_PROXY: 'maybe' }, 'TRUST_PROXY');
  failsOn({ REQUEST_TIMEOUT: '10ms' }, 'REQUEST_TIMEOUT');
  failsOn({ KEEP_ALIVE_TIMEOUT: 'forever' }, 'KEEP_ALIVE_TIMEOUT');
  failsOn({ CONNECTION_TIMEOUT: '-1' }, 'CONNECTION_TIMEOUT');
  failsOn({ MAX_HEADER_SIZE: '100' }, 'MAX_HEADER_SIZE');
  failsOn({ SIGNING_NICE: '20' }, 'SIGNING_NICE');
  failsOn({ SIGNING_NICE: '-5' }, 'SIGNING_NICE');
  failsOn({ API_THREAD_NICE: '20' }, 'API_THREAD_NICE');
  failsOn({ API_THREAD_NICE: '10' }, 'API_THREAD_NICE');
  failsOn({ SIGNING_NICE: '0', API_THREAD_NICE: '3' }, 'API_THREAD_NICE');
  failsOn({ AUDIT_FLUSH_INTERVAL: '2s' }, 'AUDIT_FLUSH_INTERVAL');
  failsOn({ AUDIT_FLUSH_INTERVAL: 'often' }, 'AUDIT_FLUSH_INTERVAL');
  failsOn({ JWKS_CONTENT_TYPE: 'text/plain' }, 'JWKS_CONTENT_TYPE');
  failsOn({ API_TOKEN_SHA256: 'not-a-hash' }, 'API_TOKEN_SHA256');
  failsOn({ KEY_SETS_FILE: join(dir, 'missing.yaml') }, 'KEY_SETS_FILE');
  failsOn({ KEY_SETS_FILE: file('bad.yaml', 'keySets:\n  default: { alg: none }\n') }, 'KEY_SETS_FILE');
  failsOn({ KEY_SETS_FILE: file('sets.yaml', 'keySets:\n  a: {}\n'), DEFAULT_KEY_SET: 'b' }, 'DEFAULT_KEY_SET');
  failsOn({ API_CLIENTS_FILE: file('clients-nohash.yaml', 'clients:\n  - name: billing\n    scopes: [sign]\n') }, 'API_CLIENT_TOKEN_SHA256_BILLING');
  failsOn({ API_CLIENTS_FILE: file('clients-set.yaml', `clients:\n  - name: x\n    tokenSha256: ${'a'.repeat(64)}\n    scopes: [sign]\n    keySets: [nope]\n`) }, 'API_CLIENTS_FILE');
});

test('short periods are accepted (demos and tests) with warnings about consumer caches', () => {
  const config = loadConfig({ KEY_ROTATION_PERIOD: '20s', KEY_PREPUBLISH_PERIOD: '10s', KEY_RETIRE_GRACE: '40s', TOKEN_MAX_TTL: '30s', TOKEN_DEFAULT_TTL: '10s' });
  const set = config.keySets.get('default')!;
  assert.equal(set.rotationPeriodMs, 20_000);
  assert.equal(config.warnings.length, 2);
});

test('key sets and clients from files; client token hashes from the environment', () => {
  const token = 'secret-token';
  const hash = createHash('sha256').update(token).digest('hex');
  const config = loadConfig({
    REDIS_URL: 'rediss://user:pw@redis.example:6380/2',
    KEY_ENCRYPTION_KEYS: `${kek('new')},${kek('old')}`,
    KEY_SETS_FILE: file('sets2.yaml', 'keySets:\n  acumatica: { alg: PS256, rsaBits: 3072 }\n  okta: { alg: ES256, rotationPeriod: 7d }\n'),
    DEFAULT_KEY_SET: 'okta',
    API_CLIENTS_FILE: file(
      'clients.json',
      JSON.stringify({ clients: [{ name: 'billing-app', scopes: ['sign'], keySets: ['acumatica'], clientIds: ['*'], audiences: ['https://a/identity/connect/token'], maxTtl: '120s' }] }),
    ),
    API_CLIENT_TOKEN_SHA256_BILLING_APP: hash,
    TRUST_PROXY: '10.0.0.0/8,127.0.0.1',
  });
  assert.equal(config.encryptionKeys[0]!.id, 'new');
  assert.equal(config.encryptionKeys.length, 2);
  assert.deepEqual([...config.keySets.keys()], ['acumatica', 'okta']);
  assert.equal(config.keySets.get('acumatica')!.alg, 'PS256');
  assert.equal(config.keySets.get('acumatica')!.rsaBits, 3072);
  assert.equal(config.keySets.get('okta')!.rotationPeriodMs, 7 * 86_400_000);
  assert.equal(config.defaultKeySet, 'okta');
  assert.equal(config.devApiToken, undefined);
  const client = config.clients[0]!;
  assert.equal(client.tokenSha256.toString('hex'), hash);
  assert.equal(client.maxTtlMs, 120_000);
  assert.equal(client.clientIds, '*');
  assert.deepEqual(config.trustProxy, ['10.0.0.0/8', '127.0.0.1']);
});

test('token broker: endpoints are exact https URLs (http on loopback only), per client or BROKER_TOKEN_ENDPOINTS', () => {
  const hash = createHash('sha256').update('broker-token').digest('hex');
  const clients = (endpoints: unknown) =>
    file(`broker-${randomBytes(4).toString('hex')}.json`, JSON.stringify({ clients: [{ name: 'b', tokenSha256: hash, scopes: ['tokens'], tokenEndpoints: endpoints }] }));
  const config = loadConfig({ API_CLIENTS_FILE: clients(['https://IdP.example.com/oauth2/token', 'http://127.0.0.1:8443/token', 'http://localhost/t']) });
  assert.deepEqual([...config.clients[0]!.tokenEndpoints], ['https://idp.example.com/oauth2/token', 'http://127.0.0.1:8443/token', 'http://localhost/t']);
  assert.deepEqual(config.broker, { timeoutMs: 10_000, totalTimeoutMs: 20_000, retries: 2, cacheMax: 10_000 });
  assert.equal(loadConfig({}).clients[0]!.tokenEndpoints.size, 0, 'no endpoint by default');
  assert.ok(loadConfig({}).clients[0]!.scopes.has('tokens'), 'full-access clients have the tokens scope');

  for (const bad of [['http://idp.example.com/token'], ['*'], ['https://user:pw@idp.example.com/token'], ['ftp://127.0.0.1/x'], 'https://x']) {
    failsOn({ API_CLIENTS_FILE: clients(bad) }, 'API_CLIENTS_FILE');
  }
  const single = loadConfig({ API_TOKEN_SHA256: hash, BROKER_TOKEN_ENDPOINTS: ' https://a.example/token , https://b.example/token ' });
  assert.deepEqual([...single.clients[0]!.tokenEndpoints], ['https://a.example/token', 'https://b.example/token']);
  assert.deepEqual([...loadConfig({ BROKER_TOKEN_ENDPOINTS: 'http://[::1]:9000/token' }).clients[0]!.tokenEndpoints], ['http://[::1]:9000/token']);
  failsOn({ BROKER_TOKEN_ENDPOINTS: 'http://10.0.0.1/token' }, 'BROKER_TOKEN_ENDPOINTS');
  failsOn({ BROKER_TOKEN_ENDPOINTS: 'not a url' }, 'BROKER_TOKEN_ENDPOINTS');
  failsOn({ API_CLIENTS_FILE: clients([]), BROKER_TOKEN_ENDPOINTS: 'https://a.example/token' }, 'BROKER_TOKEN_ENDPOINTS');
  failsOn({ BROKER_TIMEOUT: '30s', BROKER_TOTAL_TIMEOUT: '10s' }, 'BROKER_TOTAL_TIMEOUT');
  failsOn({ BROKER_RETRIES: '11' }, 'BROKER_RETRIES');
  failsOn({ BROKER_CACHE_MAX: '0' }, 'BROKER_CACHE_MAX');
  failsOn({ BROKER_TIMEOUT: 'soon' }, 'BROKER_TIMEOUT');
});
