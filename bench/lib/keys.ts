// Key material for the benchmark, written and read with the service's own modules (src/keys), so the
// stored format is exactly the service's.
//
// Growth seeding: 1,000 RSA-2048 key sets need 3,000 key pairs, and generating them takes ~0.1-0.3 s each
// here (minutes). Instead, 80 random 1024-bit primes are made once and every key is the product of a
// different pair of them (3,160 distinct moduli): real, distinct RSA-2048 keys (insecure, as they share
// primes, which only a benchmark may do) that cost the service exactly what generated keys cost.
import { createHash, createPrivateKey, createPublicKey, generatePrime, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import type { EncryptionKey } from '../../src/config.js';
import type { KeyRecord, StoredKeySet } from '../../src/keys/types.js';

/** The service's modules, loaded from the build being measured (types from src/). */
export interface ServiceModules {
  config: typeof import('../../src/config.js');
  encryption: typeof import('../../src/keys/key-encryption.js');
  generation: typeof import('../../src/keys/key-generation.js');
  store: typeof import('../../src/keys/redis-key-store.js');
}

export async function loadServiceModules(dist: string): Promise<ServiceModules> {
  const load = (path: string) => import(pathToFileURL(join(dist, path)).href);
  return {
    config: (await load('config.js')) as ServiceModules['config'],
    encryption: (await load('keys/key-encryption.js')) as ServiceModules['encryption'],
    generation: (await load('keys/key-generation.js')) as ServiceModules['generation'],
    store: (await load('keys/redis-key-store.js')) as ServiceModules['store'],
  };
}

const primeAsync = promisify(generatePrime) as unknown as (bits: number, options: { bigint: true }) => Promise<bigint>;

function modInverse(a: bigint, m: bigint): bigint {
  let [r0, r1] = [a % m, m];
  let [s0, s1] = [1n, 0n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [s0, s1] = [s1, s0 - q * s1];
  }
  if (r0 !== 1n) throw new Error('not invertible');
  return ((s0 % m) + m) % m;
}

function b64u(x: bigint): string {
  let hex = x.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  return Buffer.from(hex, 'hex').toString('base64url');
}

/** `count` distinct RSA-2048 private keys built from pairs of a shared pool of primes. */
export async function rsaKeysFromPrimePool(count: number): Promise<KeyObject[]> {
  let poolSize = 2;
  while ((poolSize * (poolSize - 1)) / 2 < count * 1.05 + 8) poolSize += 1;
  const E = 65537n;
  const primes = (await Promise.all(Array.from({ length: poolSize }, () => primeAsync(1024, { bigint: true })))).filter((p) => (p - 1n) % E !== 0n);
  const keys: KeyObject[] = [];
  for (let i = 0; i < primes.length && keys.length < count; i++) {
    for (let j = i + 1; j < primes.length && keys.length < count; j++) {
      let [p, q] = [primes[i]!, primes[j]!];
      if (p < q) [p, q] = [q, p];
      const n = p * q;
      if (n.toString(2).length !== 2048) continue;
      const d = modInverse(E, (p - 1n) * (q - 1n));
      const jwk = { kty: 'RSA', n: b64u(n), e: b64u(E), d: b64u(d), p: b64u(p), q: b64u(q), dp: b64u(d % (p - 1n)), dq: b64u(d % (q - 1n)), qi: b64u(modInverse(q, p)) };
      keys.push(createPrivateKey({ key: jwk, format: 'jwk' }));
    }
  }
  if (keys.length < count) throw new Error(`only ${keys.length} of ${count} keys from the prime pool`);
  return keys;
}

function storeOf(mods: ServiceModules, redisUrl: string, prefix: string) {
  const client = new Redis(redisUrl);
  const subscriber = new Redis(redisUrl);
  return mods.store.createRedisKeyStore({ client, subscriber, prefix, logger: pino({ level: 'silent' }) });
}

/**
 * Writes the key sets of `keySetsFile` (all RS256) into Redis under `prefix` in their steady state (a retired,
 * an active and a next key, none due for maintenance for about a day), through the service's own modules:
 * records sealed by sealKeyPair (certificate included), committed by the Redis store.
 */
export async function seedRsaKeySets(
  mods: ServiceModules,
  redisUrl: string,
  prefix: string,
  kek: string,
  keySetsFile: string,
  cacheFile?: string,
): Promise<{ sets: number; cached: boolean }> {
  const config = mods.config.loadConfig({ KEY_SETS_FILE: keySetsFile, KEY_ENCRYPTION_KEYS: kek, REDIS_URL: redisUrl, API_TOKEN_SHA256: '0'.repeat(64) });
  const sets = [...config.keySets.values()];
  const store = storeOf(mods, redisUrl, prefix);
  const now = Date.now();
  const hour = 3_600_000;
  // Sealing 3,000 keys (a self-signed certificate each) takes ~30 s here, so the sealed records are kept in
  // `cacheFile` (valid for the same KEK, set names and build of the key modules) and only re-timed.
  if (cacheFile && existsSync(cacheFile)) {
    const cached = JSON.parse(readFileSync(cacheFile, 'utf8')) as Record<string, KeyRecord[]>;
    if (sets.every((cfg) => cached[cfg.name]?.length === 3)) {
      try {
        for (let i = 0; i < sets.length; i += 64) {
          await Promise.all(
            sets.slice(i, i + 64).map(async (cfg) => {
              const keys = cached[cfg.name]!.map((record, k) => ({ ...record, ...states(now, hour)[k]! }));
              if (!(await store.commit(cfg.name, 0, { generation: 1, updatedAt: now - hour, keys }))) throw new Error(`seeding ${cfg.name}: the set already exists`);
            }),
          );
        }
        return { sets: sets.length, cached: true };
      } finally {
        await store.close();
      }
    }
  }
  const keys = await rsaKeysFromPrimePool(sets.length * 3);
  const encryption = mods.encryption.createKeyEncryption(config.encryptionKeys);
  const sealed: Record<string, KeyRecord[]> = {};
  try {
    const seedSet = async (index: number) => {
      const cfg = sets[index]!;
      // sealKeyPair signs each certificate through WebCrypto (the thread pool): many at once use both cores.
      const records: KeyRecord[] = await Promise.all(
        states(now, hour).map(async (times, k) => {
          const privateKey = keys[index * 3 + k]!;
          const record = await mods.generation.sealKeyPair(cfg, 'next', times.createdAt, encryption, { privateKey, publicKey: createPublicKey(privateKey) });
          return { ...record, ...times };
        }),
      );
      sealed[cfg.name] = records;
      const next: StoredKeySet = { generation: 1, updatedAt: now - hour, keys: records };
      if (!(await store.commit(cfg.name, 0, next))) throw new Error(`seeding ${cfg.name}: the set already exists`);
    };
    for (let i = 0; i < sets.length; i += 32) {
      await Promise.all(Array.from({ length: Math.min(32, sets.length - i) }, (_, j) => seedSet(i + j)));
    }
    if (cacheFile) {
      mkdirSync(dirname(cacheFile), { recursive: true });
      writeFileSync(cacheFile, JSON.stringify(sealed), { mode: 0o600 });
    }
    return { sets: sets.length, cached: false };
  } finally {
    await store.close();
  }
}

/** A cache key for sealed records: the build of the modules that make them. */
export function sealedRecordsVersion(dist: string): string {
  const hash = createHash('sha256');
  for (const file of ['keys/key-generation.js', 'keys/certificates.js', 'keys/key-encryption.js', 'keys/jwks.js']) {
    if (existsSync(join(dist, file))) hash.update(readFileSync(join(dist, file)));
  }
  return hash.digest('hex').slice(0, 16);
}

function states(now: number, hour: number) {
  return [
    { state: 'retired' as const, createdAt: now - 31 * 24 * hour, activatedAt: now - 30 * 24 * hour, retiredAt: now - hour },
    { state: 'active' as const, createdAt: now - 2 * 24 * hour, activatedAt: now - hour },
    { state: 'next' as const, createdAt: now - hour },
  ];
}

/** The active private key of a set, read from Redis and decrypted as the service does. */
export async function activeKeyOf(mods: ServiceModules, redisUrl: string, prefix: string, encryptionKeys: EncryptionKey[], set: string): Promise<{ key: KeyObject; record: KeyRecord }> {
  const store = storeOf(mods, redisUrl, prefix);
  try {
    const stored = await store.load(set);
    const record = stored.keys.find((k) => k.state === 'active');
    if (!record) throw new Error(`key set ${set} has no active key in Redis`);
    return { key: await mods.generation.openPrivateKey(record, mods.encryption.createKeyEncryption(encryptionKeys)), record };
  } finally {
    await store.close();
  }
}
