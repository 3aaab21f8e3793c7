// One validated configuration, read from the environment (and the files it names) once at start-up.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from './errors.js';
import { isDistinguishedName } from './keys/certificates.js';
import { formatDuration, parseDuration } from './lib/duration.js';

export const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;
export type Algorithm = (typeof ALGORITHMS)[number];
export const RSA_SIZES = [2048, 3072, 4096] as const;
export const SCOPES = ['sign', 'admin', 'tokens'] as const;
export type Scope = (typeof SCOPES)[number];

/** Clock skew that consumers such as IdentityServer allow: retired keys must outlive tokens by this much. */
export const CONSUMER_CLOCK_SKEW_MS = 5 * 60_000;
/** The longest JWKS cache among known consumers (Keycloak, step-ca, Microsoft): CONSUMERS.md rules 7 and 8. */
export const CONSUMER_CACHE_MS = 24 * 3_600_000;
const HARD_MAX_TTL_MS = 24 * 3_600_000;
const NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;

const Duration = Type.Union([Type.String({ minLength: 1 }), Type.Number({ minimum: 0 })]);
const NameList = Type.Array(Type.String({ minLength: 1 }));

export const KeySetFileEntrySchema = Type.Object(
  {
    alg: Type.Optional(Type.Union(ALGORITHMS.map((a) => Type.Literal(a)))),
    rsaBits: Type.Optional(Type.Union(RSA_SIZES.map((n) => Type.Literal(n)))),
    rotationPeriod: Type.Optional(Duration),
    prepublishPeriod: Type.Optional(Duration),
    retireGrace: Type.Optional(Duration),
    defaultTtl: Type.Optional(Duration),
    maxTtl: Type.Optional(Duration),
    publishX5c: Type.Optional(Type.Boolean()),
    certificateSubject: Type.Optional(Type.String({ minLength: 4, maxLength: 256 })),
    certificateValidity: Type.Optional(Duration),
  },
  { additionalProperties: false },
);
export const KeySetsFileSchema = Type.Object(
  { keySets: Type.Record(Type.String(), KeySetFileEntrySchema) },
  { additionalProperties: false },
);

export const ClientFileEntrySchema = Type.Object(
  {
    name: Type.String({ pattern: NAME.source }),
    tokenSha256: Type.Optional(Type.String({ pattern: '^[0-9a-fA-F]{64}$' })),
    scopes: Type.Array(Type.Union(SCOPES.map((s) => Type.Literal(s))), { minItems: 1 }),
    keySets: Type.Optional(NameList),
    clientIds: Type.Optional(NameList),
    subjects: Type.Optional(NameList),
    audiences: Type.Optional(NameList),
    maxTtl: Type.Optional(Duration),
    extraClaims: Type.Optional(Type.Union([Type.Boolean(), NameList])),
    tokenEndpoints: Type.Optional(NameList),
    rateLimit: Type.Optional(Type.Object({ max: Type.Integer({ minimum: 1 }), window: Duration }, { additionalProperties: false })),
  },
  { additionalProperties: false },
);
export const ClientsFileSchema = Type.Object(
  { clients: Type.Array(ClientFileEntrySchema) },
  { additionalProperties: false },
);

export interface KeySetConfig {
  name: string;
  alg: Algorithm;
  rsaBits: number;
  rotationPeriodMs: number;
  prepublishPeriodMs: number;
  retireGraceMs: number;
  defaultTtlMs: number;
  maxTtlMs: number;
  /** Publish x5c and x5t#S256 (from each key's self-signed certificate) in the JWKS. */
  publishX5c: boolean;
  certificateSubject: string;
  certificateValidityMs: number;
}

/** `'*'` allows any value; a set allows only its members. */
export type Allow = '*' | ReadonlySet<string>;

export interface ClientPolicy {
  name: string;
  tokenSha256: Buffer;
  scopes: ReadonlySet<Scope>;
  keySets: Allow;
  clientIds: Allow;
  subjects: Allow;
  audiences: Allow;
  maxTtlMs: number;
  extraClaims: boolean | ReadonlySet<string>;
  /** Token endpoints the broker (POST /v1/tokens) may call for this client: normalised hrefs, compared exactly. */
  tokenEndpoints: ReadonlySet<string>;
  /** Requests per window on the internal API; undefined: unlimited. */
  rateLimit?: { max: number; windowMs: number };
}

export interface EncryptionKey {
  id: string;
  key: Buffer;
}

export interface RedisEndpoint {
  host: string;
  port: number;
}

/** How the store reaches Redis: one server (REDIS_URL), a Sentinel-managed primary, or a Cluster. */
export interface RedisConfig {
  mode: 'standalone' | 'sentinel' | 'cluster';
  /** standalone: REDIS_URL as given (ioredis reads it; its credentials win over username/password below). */
  url?: string;
  /** sentinel: the sentinels; cluster: the seed nodes; standalone: empty. */
  nodes: RedisEndpoint[];
  /** sentinel: the name of the master the sentinels monitor. */
  masterName?: string;
  /** sentinel: the sentinels' own password (REDIS_SENTINEL_PASSWORD). */
  sentinelPassword?: string;
  /** Data-node credentials: REDIS_URL's, else REDIS_USERNAME / REDIS_PASSWORD. */
  username?: string;
  password?: string;
  /** Database number (REDIS_URL's path); always 0 on a Cluster. */
  db: number;
  /** TLS to the data nodes (a rediss:// REDIS_URL). */
  tls: boolean;
}

export interface Config {
  port: number;
  internalPort: number;
  host: string;
  internalHost: string;
  logLevel: string;
  trustProxy: boolean | number | string[];
  /**
   * Set whenever the store is Redis: REDIS_URL as given, or (Sentinel or Cluster without REDIS_URL) a
   * description without credentials. Connections are made from `redis`, not from this string.
   */
  redisUrl?: string;
  redis?: RedisConfig;
  redisKeyPrefix: string;
  encryptionKeys: EncryptionKey[];
  keySets: Map<string, KeySetConfig>;
  defaultKeySet: string;
  clients: ClientPolicy[];
  /** Set when no client is configured: a generated token, printed once at start-up. */
  devApiToken?: string;
  /** `shared`: replicas reconcile their counts through Redis every `syncIntervalMs` (false without Redis). */
  rateLimit: { max: number; windowMs: number; shared: boolean; syncIntervalMs: number };
  jwks: { maxAgeMs: number; staleWhileRevalidateMs: number; staleIfErrorMs: number; contentType: string };
  storePollIntervalMs: number;
  /** How long signing goes on with cached keys while the store is unreachable (0: no limit). */
  signWhileStoreDownMs: number;
  /** Expiry of a key set's rotation lock: how long a replica that died holding it blocks the others. */
  rotationLockTtlMs: number;
  shutdownTimeoutMs: number;
  internalBodyLimit: number;
  /** Serve the public port from its own worker thread, so that JWKS requests never wait behind the signing API. */
  publicServerThread: boolean;
  /** Nice value given at start-up to libuv's thread pool, where signatures run (0: the process's priority). */
  signingNice: number;
  /**
   * Nice value given, with SCHED_BATCH, to the main thread (internal API, key management, logs) once the public
   * port's thread runs (0: unchanged; always 0 when PUBLIC_SERVER_THREAD is false). Below signingNice.
   */
  apiThreadNice: number;
  /** Both ports: slow or idle clients cannot hold a connection or a request open. */
  connectionLimits: { requestTimeoutMs: number; keepAliveTimeoutMs: number; connectionTimeoutMs: number; maxHeaderSize: number };
  /** Entries kept in the audit stream (Redis) or ring buffer (memory). */
  auditMaxEntries: number;
  /** Least time between two audit batches written to Redis by one replica (0: one per turn of the event loop). */
  auditFlushIntervalMs: number;
  /** Failed internal API authentications allowed per client address per window, before 429s. */
  authFailureLimit: { max: number; windowMs: number };
  broker: BrokerConfig;
  /** Settings that are legal but weaker than CONSUMERS.md advises; logged at start-up. */
  warnings: string[];
}

/** The token broker (POST /v1/tokens): upstream call limits and the access token cache. */
export interface BrokerConfig {
  /** Timeout of one token request. */
  timeoutMs: number;
  /** Bound on all attempts of one broker call, backoff included. */
  totalTimeoutMs: number;
  /** Retries after a network error, a timeout, a 5xx or a 429. */
  retries: number;
  /** Access tokens kept in memory (least recently used dropped first). */
  cacheMax: number;
}

type Env = Record<string, string | undefined>;

function str(env: Env, name: string, fallback: string): string {
  const value = env[name];
  return value === undefined || value.trim() === '' ? fallback : value.trim();
}

function optional(env: Env, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = optional(env, name);
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `must be a whole number, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

function bool(env: Env, name: string, fallback: boolean): boolean {
  const raw = optional(env, name);
  if (raw === undefined) return fallback;
  if (raw === 'true') return true;
  if (raw === 'false') return false;
  throw new ConfigError(name, `must be true or false, got "${raw}"`);
}

function duration(variable: string, raw: string | number | undefined, fallbackMs: number, minMs = 0, maxMs = Infinity): number {
  if (raw === undefined) return fallbackMs;
  const ms = parseDuration(raw);
  if (ms === undefined) throw new ConfigError(variable, `is not a duration (use e.g. 90s, 15m, 24h, 30d), got "${raw}"`);
  if (ms < minMs) throw new ConfigError(variable, `must be at least ${formatDuration(minMs)}, got ${formatDuration(ms)}`);
  if (ms > maxMs) throw new ConfigError(variable, `must be at most ${formatDuration(maxMs)}, got ${formatDuration(ms)}`);
  return ms;
}

function envDuration(env: Env, name: string, fallbackMs: number, minMs = 0, maxMs = Infinity): number {
  return duration(name, optional(env, name), fallbackMs, minMs, maxMs);
}

function readStructuredFile<T extends TSchema>(variable: string, path: string, schema: T): Static<T> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(variable, `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  return parseStructured(variable, text, schema, path);
}

function parseStructured<T extends TSchema>(variable: string, text: string, schema: T, where: string): Static<T> {
  let data: unknown;
  try {
    data = parseYaml(text);
  } catch (err) {
    throw new ConfigError(variable, `${where} is not valid YAML/JSON: ${(err as Error).message.split('\n')[0]}`);
  }
  if (!Value.Check(schema, data)) {
    const first = [...Value.Errors(schema, data)][0];
    throw new ConfigError(variable, `${where}: ${first?.path || '/'} ${first?.message ?? 'is invalid'}`);
  }
  return data;
}

function parseTrustProxy(raw: string | undefined): boolean | number | string[] {
  if (raw === undefined || raw === 'false') return false;
  if (raw === 'true') return true;
  if (/^\d+$/.test(raw)) return Number(raw);
  const list = raw.split(',').map((s) => s.trim()).filter(Boolean);
  const address = /^[0-9a-fA-F:.]+(?:\/\d{1,3})?$/;
  const bad = list.find((entry) => !address.test(entry) && !['loopback', 'linklocal', 'uniquelocal'].includes(entry));
  if (bad !== undefined || list.length === 0) {
    throw new ConfigError('TRUST_PROXY', `must be true, false, a hop count or a comma list of addresses/CIDRs, got "${raw}"`);
  }
  return list;
}

function parseEncryptionKeys(raw: string): EncryptionKey[] {
  const keys: EncryptionKey[] = [];
  for (const entry of raw.split(',').map((s) => s.trim()).filter(Boolean)) {
    const colon = entry.indexOf(':');
    const id = colon > 0 ? entry.slice(0, colon) : '';
    if (!/^[A-Za-z0-9._-]{1,32}$/.test(id)) {
      throw new ConfigError('KEY_ENCRYPTION_KEYS', 'each entry must be "id:base64key" with an id of letters, digits, ".", "_" or "-"');
    }
    const material = entry.slice(colon + 1);
    const key = /^[A-Za-z0-9+/=_-]+$/.test(material) ? Buffer.from(material, 'base64') : Buffer.alloc(0);
    if (key.length !== 32) {
      throw new ConfigError('KEY_ENCRYPTION_KEYS', `key "${id}" must decode from base64 to exactly 32 bytes (openssl rand -base64 32)`);
    }
    if (keys.some((k) => k.id === id)) throw new ConfigError('KEY_ENCRYPTION_KEYS', `key id "${id}" appears twice`);
    keys.push({ id, key });
  }
  if (keys.length === 0) throw new ConfigError('KEY_ENCRYPTION_KEYS', 'names no key');
  return keys;
}

function buildKeySet(
  variable: string,
  name: string,
  entry: Static<typeof KeySetFileEntrySchema>,
  defaults: Omit<KeySetConfig, 'name' | 'certificateSubject' | 'certificateValidityMs'> & { certificateSubject?: string; certificateValidityMs?: number },
  where: (field: string) => string,
  warnings: string[],
): KeySetConfig {
  if (!NAME.test(name)) {
    throw new ConfigError(variable, `key set name "${name}" must match ${NAME.source}`);
  }
  const set: KeySetConfig = {
    name,
    alg: entry.alg ?? defaults.alg,
    rsaBits: entry.rsaBits ?? defaults.rsaBits,
    rotationPeriodMs: duration(where('rotationPeriod'), entry.rotationPeriod, defaults.rotationPeriodMs, 1000),
    prepublishPeriodMs: duration(where('prepublishPeriod'), entry.prepublishPeriod, defaults.prepublishPeriodMs, 0),
    retireGraceMs: duration(where('retireGrace'), entry.retireGrace, defaults.retireGraceMs, 0),
    defaultTtlMs: duration(where('defaultTtl'), entry.defaultTtl, defaults.defaultTtlMs, 1000),
    maxTtlMs: duration(where('maxTtl'), entry.maxTtl, defaults.maxTtlMs, 1000),
    publishX5c: entry.publishX5c ?? defaults.publishX5c,
    certificateSubject: entry.certificateSubject ?? defaults.certificateSubject ?? `CN=jwks-signer ${name}`,
    certificateValidityMs: 0,
  };
  // A key lives at most one period as next, one as active and the grace as retired: its certificate must
  // stay valid all that time, because consumers that take uploads check the certificate's dates.
  const keyLifetime = 2 * set.rotationPeriodMs + set.retireGraceMs;
  set.certificateValidityMs = duration(where('certificateValidity'), entry.certificateValidity, defaults.certificateValidityMs ?? Math.max(365 * 86_400_000, keyLifetime), 60_000);
  if (set.certificateValidityMs < keyLifetime) {
    throw new ConfigError(where('certificateValidity'), `(${formatDuration(set.certificateValidityMs)}) is shorter than a key's life (2 x rotation period + retire grace = ${formatDuration(keyLifetime)})`);
  }
  if (!isDistinguishedName(set.certificateSubject)) {
    throw new ConfigError(where('certificateSubject'), `"${set.certificateSubject}" is not a distinguished name (e.g. "CN=jwks-signer, O=Example")`);
  }
  if (set.maxTtlMs > HARD_MAX_TTL_MS) {
    throw new ConfigError(where('maxTtl'), `must be at most ${formatDuration(HARD_MAX_TTL_MS)}`);
  }
  if (set.defaultTtlMs > set.maxTtlMs) {
    throw new ConfigError(where('defaultTtl'), `(${formatDuration(set.defaultTtlMs)}) exceeds maxTtl (${formatDuration(set.maxTtlMs)})`);
  }
  if (set.retireGraceMs < set.maxTtlMs) {
    throw new ConfigError(
      where('retireGrace'),
      `(${formatDuration(set.retireGraceMs)}) must be at least the longest token lifetime (${formatDuration(set.maxTtlMs)}), or tokens outlive their key`,
    );
  }
  const advisedGrace = set.maxTtlMs + CONSUMER_CLOCK_SKEW_MS + CONSUMER_CACHE_MS;
  if (set.retireGraceMs < advisedGrace) {
    warnings.push(
      `key set "${name}": retire grace ${formatDuration(set.retireGraceMs)} is below the advised ${formatDuration(advisedGrace)} (max token lifetime + 5m skew + 24h consumer cache)`,
    );
  }
  if (set.prepublishPeriodMs < CONSUMER_CACHE_MS) {
    warnings.push(
      `key set "${name}": pre-publish period ${formatDuration(set.prepublishPeriodMs)} is below the advised 24h; consumers that cache the JWKS (Keycloak, step-ca) may not know a new key when it starts signing`,
    );
  }
  return set;
}

function allow(list: string[] | undefined, fallback: Allow): Allow {
  if (list === undefined) return fallback;
  return list.includes('*') ? '*' : new Set(list);
}

function tokenEnvName(clientName: string): string {
  return `API_CLIENT_TOKEN_SHA256_${clientName.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
}

function buildClients(
  env: Env,
  keySets: Map<string, KeySetConfig>,
  defaultLimit: ClientPolicy['rateLimit'],
): { clients: ClientPolicy[]; devApiToken?: string } {
  const clients: ClientPolicy[] = [];
  const longestTtl = Math.max(...[...keySets.values()].map((s) => s.maxTtlMs));
  const file = optional(env, 'API_CLIENTS_FILE');
  if (file !== undefined) {
    const parsed = readStructuredFile('API_CLIENTS_FILE', file, ClientsFileSchema);
    for (const [index, entry] of parsed.clients.entries()) {
      const where = `API_CLIENTS_FILE (clients[${index}] "${entry.name}")`;
      const envName = tokenEnvName(entry.name);
      const hash = entry.tokenSha256 ?? optional(env, envName);
      if (hash === undefined) throw new ConfigError(envName, `${where} has no tokenSha256 and ${envName} is not set`);
      if (!/^[0-9a-fA-F]{64}$/.test(hash)) throw new ConfigError(envName, 'must be the hex SHA-256 of the client token (64 hex digits)');
      if (clients.some((c) => c.name === entry.name)) throw new ConfigError('API_CLIENTS_FILE', `client name "${entry.name}" appears twice`);
      const keySetNames = allow(entry.keySets, '*');
      if (keySetNames !== '*') {
        const unknown = [...keySetNames].find((n) => !keySets.has(n));
        if (unknown) throw new ConfigError('API_CLIENTS_FILE', `${where} names unknown key set "${unknown}"`);
      }
      clients.push({
        name: entry.name,
        tokenSha256: Buffer.from(hash, 'hex'),
        scopes: new Set(entry.scopes),
        keySets: keySetNames,
        clientIds: allow(entry.clientIds, new Set()),
        subjects: allow(entry.subjects, new Set()),
        audiences: allow(entry.audiences, new Set()),
        maxTtlMs: duration(`${where} maxTtl`, entry.maxTtl, longestTtl, 1000),
        extraClaims: Array.isArray(entry.extraClaims) ? new Set(entry.extraClaims) : (entry.extraClaims ?? false),
        tokenEndpoints: tokenEndpoints('API_CLIENTS_FILE', `${where} tokenEndpoints`, entry.tokenEndpoints ?? []),
        ...(entry.rateLimit
          ? { rateLimit: { max: entry.rateLimit.max, windowMs: duration(`${where} rateLimit.window`, entry.rateLimit.window, 60_000, 1000) } }
          : defaultLimit
            ? { rateLimit: defaultLimit }
            : {}),
      });
    }
  }
  const rawEndpoints = optional(env, 'BROKER_TOKEN_ENDPOINTS');
  const singleEndpoints = tokenEndpoints('BROKER_TOKEN_ENDPOINTS', 'an entry', rawEndpoints === undefined ? [] : rawEndpoints.split(',').map((s) => s.trim()).filter(Boolean));
  const single = optional(env, 'API_TOKEN_SHA256');
  if (single !== undefined) {
    if (!/^[0-9a-fA-F]{64}$/.test(single)) throw new ConfigError('API_TOKEN_SHA256', 'must be the hex SHA-256 of the API token (64 hex digits)');
    clients.push({ ...fullAccessClient('default', Buffer.from(single, 'hex'), longestTtl, singleEndpoints), ...(defaultLimit ? { rateLimit: defaultLimit } : {}) });
  }
  const hashes = new Set(clients.map((c) => c.tokenSha256.toString('hex')));
  if (hashes.size !== clients.length) throw new ConfigError('API_CLIENTS_FILE', 'two clients share one token');
  if (single === undefined && clients.length > 0 && singleEndpoints.size > 0) {
    throw new ConfigError('BROKER_TOKEN_ENDPOINTS', 'applies to the API_TOKEN_SHA256 client only (unset here): give API_CLIENTS_FILE clients their own tokenEndpoints');
  }
  if (clients.length > 0) return { clients };
  const devApiToken = randomBytes(32).toString('base64url');
  return {
    clients: [fullAccessClient('development', createHash('sha256').update(devApiToken).digest(), longestTtl, singleEndpoints)],
    devApiToken,
  };
}

const LOOPBACK_HOST = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/;

/**
 * Token endpoints as exact, normalised hrefs (`new URL().href`): https, or http on a loopback host only
 * (tests, local development). No wildcards: the broker is never an open proxy.
 */
function tokenEndpoints(variable: string, where: string, list: string[]): ReadonlySet<string> {
  const endpoints = new Set<string>();
  for (const raw of list) {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new ConfigError(variable, `${where}: "${raw}" is not a URL`);
    }
    if (!(url.protocol === 'https:' || (url.protocol === 'http:' && LOOPBACK_HOST.test(url.hostname)))) {
      throw new ConfigError(variable, `${where}: "${raw}" must be an https URL (http only on a loopback host)`);
    }
    if (url.username || url.password || url.hash) throw new ConfigError(variable, `${where}: "${raw}" must not carry credentials or a fragment`);
    endpoints.add(url.href);
  }
  return endpoints;
}

function fullAccessClient(name: string, tokenSha256: Buffer, maxTtlMs: number, endpoints: ReadonlySet<string>): ClientPolicy {
  return {
    name,
    tokenSha256,
    scopes: new Set(SCOPES),
    keySets: '*',
    clientIds: '*',
    subjects: '*',
    audiences: '*',
    maxTtlMs,
    extraClaims: true,
    tokenEndpoints: endpoints,
  };
}

/** Reads and validates the whole configuration; throws ConfigError naming the offending variable. */
export function loadConfig(env: Env = process.env): Config {
  const warnings: string[] = [];
  const port = int(env, 'PORT', 8080, 0, 65535);
  const internalPort = int(env, 'INTERNAL_PORT', 8081, 0, 65535);
  if (port === internalPort && port !== 0) throw new ConfigError('INTERNAL_PORT', `must differ from PORT (${port})`);
  const host = str(env, 'HOST', '0.0.0.0');
  const logLevel = str(env, 'LOG_LEVEL', 'info');
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(logLevel)) {
    throw new ConfigError('LOG_LEVEL', `must be one of fatal, error, warn, info, debug, trace, silent, got "${logLevel}"`);
  }

  const redisTarget = parseRedis(env);
  const rawKeks = optional(env, 'KEY_ENCRYPTION_KEYS');
  if (redisTarget !== undefined && rawKeks === undefined) {
    const via = { standalone: 'REDIS_URL', sentinel: 'Redis Sentinel', cluster: 'REDIS_CLUSTER_NODES' }[redisTarget.redis.mode];
    throw new ConfigError('KEY_ENCRYPTION_KEYS', `is required with ${via} (e.g. "k1:$(openssl rand -base64 32)")`);
  }
  const encryptionKeys = rawKeks !== undefined ? parseEncryptionKeys(rawKeks) : [{ id: 'ephemeral', key: randomBytes(32) }];

  const defaults: Parameters<typeof buildKeySet>[3] = {
    alg: 'RS256',
    rsaBits: 2048,
    rotationPeriodMs: envDuration(env, 'KEY_ROTATION_PERIOD', 30 * 86_400_000, 1000),
    prepublishPeriodMs: envDuration(env, 'KEY_PREPUBLISH_PERIOD', CONSUMER_CACHE_MS),
    retireGraceMs: envDuration(env, 'KEY_RETIRE_GRACE', 25 * 3_600_000),
    defaultTtlMs: envDuration(env, 'TOKEN_DEFAULT_TTL', 60_000, 1000),
    maxTtlMs: envDuration(env, 'TOKEN_MAX_TTL', 600_000, 1000),
    publishX5c: bool(env, 'KEY_PUBLISH_X5C', false),
  };
  const subject = optional(env, 'KEY_CERT_SUBJECT');
  if (subject !== undefined) defaults.certificateSubject = subject;
  const validity = optional(env, 'KEY_CERT_VALIDITY');
  if (validity !== undefined) defaults.certificateValidityMs = envDuration(env, 'KEY_CERT_VALIDITY', 0, 60_000);
  const alg = optional(env, 'KEY_ALG');
  if (alg !== undefined) {
    if (!(ALGORITHMS as readonly string[]).includes(alg)) throw new ConfigError('KEY_ALG', `must be one of ${ALGORITHMS.join(', ')}, got "${alg}"`);
    defaults.alg = alg as Algorithm;
  }
  const bits = optional(env, 'KEY_RSA_BITS');
  if (bits !== undefined) {
    if (!(RSA_SIZES as readonly number[]).includes(Number(bits))) throw new ConfigError('KEY_RSA_BITS', `must be one of ${RSA_SIZES.join(', ')}, got "${bits}"`);
    defaults.rsaBits = Number(bits);
  }

  const keySets = new Map<string, KeySetConfig>();
  const keySetsFile = optional(env, 'KEY_SETS_FILE');
  if (keySetsFile !== undefined) {
    const parsed = readStructuredFile('KEY_SETS_FILE', keySetsFile, KeySetsFileSchema);
    for (const [name, entry] of Object.entries(parsed.keySets)) {
      keySets.set(name, buildKeySet('KEY_SETS_FILE', name, entry, defaults, (f) => `KEY_SETS_FILE (keySets.${name}.${f})`, warnings));
    }
    if (keySets.size === 0) throw new ConfigError('KEY_SETS_FILE', 'defines no key set');
  }
  const defaultKeySet = str(env, 'DEFAULT_KEY_SET', keySetsFile !== undefined ? [...keySets.keys()][0]! : 'default');
  if (keySetsFile === undefined) {
    keySets.set(defaultKeySet, buildKeySet('DEFAULT_KEY_SET', defaultKeySet, {}, defaults, envNameForField, warnings));
  } else if (!keySets.has(defaultKeySet)) {
    throw new ConfigError('DEFAULT_KEY_SET', `names "${defaultKeySet}", which KEY_SETS_FILE does not define`);
  }

  const jwks = {
    maxAgeMs: envDuration(env, 'JWKS_MAX_AGE', 300_000),
    staleWhileRevalidateMs: envDuration(env, 'JWKS_STALE_WHILE_REVALIDATE', 60_000),
    staleIfErrorMs: envDuration(env, 'JWKS_STALE_IF_ERROR', 3_600_000),
    contentType: str(env, 'JWKS_CONTENT_TYPE', 'application/json'),
  };
  if (!['application/json', 'application/jwk-set+json'].includes(jwks.contentType)) {
    throw new ConfigError('JWKS_CONTENT_TYPE', 'must be application/json or application/jwk-set+json');
  }

  const publicServerThread = bool(env, 'PUBLIC_SERVER_THREAD', true);
  const signingNice = int(env, 'SIGNING_NICE', 10, 0, 19);
  return {
    port,
    internalPort,
    host,
    internalHost: str(env, 'INTERNAL_HOST', host),
    logLevel,
    trustProxy: parseTrustProxy(optional(env, 'TRUST_PROXY')),
    ...(redisTarget !== undefined ? { redisUrl: redisTarget.redisUrl, redis: redisTarget.redis } : {}),
    redisKeyPrefix: str(env, 'REDIS_KEY_PREFIX', 'jwks-signer:'),
    encryptionKeys,
    keySets,
    defaultKeySet,
    ...buildClients(env, keySets, internalRateLimit(env)),
    auditMaxEntries: int(env, 'AUDIT_MAX_ENTRIES', 100_000, 100, 100_000_000),
    auditFlushIntervalMs: envDuration(env, 'AUDIT_FLUSH_INTERVAL', 5, 0, 1000),
    authFailureLimit: {
      max: int(env, 'AUTH_FAILURE_LIMIT', 10, 1, 1_000_000),
      windowMs: envDuration(env, 'AUTH_FAILURE_WINDOW', 60_000, 1000),
    },
    rateLimit: {
      max: int(env, 'RATE_LIMIT_MAX', 1200, 0, 10_000_000),
      windowMs: envDuration(env, 'RATE_LIMIT_WINDOW', 60_000, 1000),
      shared: bool(env, 'RATE_LIMIT_SHARED', true) && redisTarget !== undefined,
      syncIntervalMs: envDuration(env, 'RATE_LIMIT_SYNC_INTERVAL', 200, 20),
    },
    jwks,
    storePollIntervalMs: envDuration(env, 'STORE_POLL_INTERVAL', 5000, 100),
    rotationLockTtlMs: envDuration(env, 'ROTATION_LOCK_TTL', 30_000, 1000),
    signWhileStoreDownMs: envDuration(env, 'SIGN_WHILE_STORE_DOWN', 24 * 3_600_000),
    shutdownTimeoutMs: envDuration(env, 'SHUTDOWN_TIMEOUT', 10_000, 0),
    internalBodyLimit: int(env, 'INTERNAL_BODY_LIMIT', 16_384, 1024, 1_048_576),
    publicServerThread,
    signingNice,
    apiThreadNice: apiThreadNice(env, signingNice, publicServerThread, warnings),
    connectionLimits: {
      requestTimeoutMs: envDuration(env, 'REQUEST_TIMEOUT', 10_000, 100),
      keepAliveTimeoutMs: envDuration(env, 'KEEP_ALIVE_TIMEOUT', 72_000, 100),
      connectionTimeoutMs: envDuration(env, 'CONNECTION_TIMEOUT', 15_000, 100),
      maxHeaderSize: int(env, 'MAX_HEADER_SIZE', 16_384, 1024, 1_048_576),
    },
    broker: brokerConfig(env),
    warnings,
  };
}

/** Default: half of SIGNING_NICE, so that the API thread always ranks between the JWKS thread and the signatures. */
function apiThreadNice(env: Env, signingNice: number, publicServerThread: boolean, warnings: string[]): number {
  const set = optional(env, 'API_THREAD_NICE') !== undefined;
  const nice = int(env, 'API_THREAD_NICE', Math.floor(signingNice / 2), 0, 19);
  if (nice === 0) return 0;
  if (nice >= signingNice) {
    throw new ConfigError('API_THREAD_NICE', `(${nice}) must be below SIGNING_NICE (${signingNice}): the API thread must not yield to the signatures (0 leaves it unchanged)`);
  }
  if (!publicServerThread) {
    if (set) warnings.push('API_THREAD_NICE is ignored with PUBLIC_SERVER_THREAD=false: the main thread then serves the JWKS and keeps the process priority');
    return 0;
  }
  return nice;
}

function brokerConfig(env: Env): BrokerConfig {
  const timeoutMs = envDuration(env, 'BROKER_TIMEOUT', 10_000, 100);
  const totalTimeoutMs = envDuration(env, 'BROKER_TOTAL_TIMEOUT', 2 * timeoutMs, 100);
  if (totalTimeoutMs < timeoutMs) throw new ConfigError('BROKER_TOTAL_TIMEOUT', `(${formatDuration(totalTimeoutMs)}) must be at least BROKER_TIMEOUT (${formatDuration(timeoutMs)})`);
  return {
    timeoutMs,
    totalTimeoutMs,
    retries: int(env, 'BROKER_RETRIES', 2, 0, 10),
    cacheMax: int(env, 'BROKER_CACHE_MAX', 10_000, 1, 10_000_000),
  };
}

function internalRateLimit(env: Env): ClientPolicy['rateLimit'] {
  const max = int(env, 'INTERNAL_RATE_LIMIT_MAX', 0, 0, 10_000_000);
  return max === 0 ? undefined : { max, windowMs: envDuration(env, 'INTERNAL_RATE_LIMIT_WINDOW', 60_000, 1000) };
}

/** A secret as given: not trimmed (a password may end in a space), empty as unset. */
function secret(env: Env, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value === '' ? undefined : value;
}

function decodeUrlPart(variable: string, raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new ConfigError(variable, 'has a malformed percent-encoding in its credentials');
  }
}

/** `host:port[,host:port...]`; IPv6 addresses in brackets; a missing port is `defaultPort`. */
function parseEndpoints(variable: string, raw: string, defaultPort: number): RedisEndpoint[] {
  const endpoints: RedisEndpoint[] = [];
  for (const entry of raw.split(',').map((s) => s.trim()).filter(Boolean)) {
    const match = /^\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?$/.exec(entry) ?? /^([A-Za-z0-9._-]+)(?::(\d{1,5}))?$/.exec(entry);
    const port = match?.[2] === undefined ? defaultPort : Number(match[2]);
    if (!match || port < 1 || port > 65535) throw new ConfigError(variable, `entry "${entry}" is not host:port`);
    if (!endpoints.some((e) => e.host === match[1] && e.port === port)) endpoints.push({ host: match[1]!, port });
  }
  if (endpoints.length === 0) throw new ConfigError(variable, 'names no host:port');
  return endpoints;
}

interface ParsedRedisUrl {
  sentinel?: { nodes: RedisEndpoint[]; masterName: string };
  username?: string;
  password?: string;
  /** Undefined when the path is not a database number (a plain URL keeps working: ioredis reads it). */
  db: number | undefined;
  tls: boolean;
}

// redis+sentinel://[[user]:password@]host1:port1,host2:port2/mastername[/db]: the password is the data nodes'.
const SENTINEL_URL = /^(rediss?)\+sentinel:\/\/(?:([^@/]*)@)?([^/@]+)\/([^/]+)(?:\/(\d+))?\/?$/;

function parseRedisUrl(raw: string): ParsedRedisUrl {
  const credentials = (userinfo: string | undefined) => {
    if (!userinfo) return {};
    const colon = userinfo.indexOf(':');
    const username = decodeUrlPart('REDIS_URL', colon < 0 ? userinfo : userinfo.slice(0, colon));
    const password = colon < 0 ? '' : decodeUrlPart('REDIS_URL', userinfo.slice(colon + 1));
    return { ...(username ? { username } : {}), ...(password ? { password } : {}) };
  };
  if (/^rediss?\+sentinel:/i.test(raw)) {
    const match = SENTINEL_URL.exec(raw);
    if (!match) throw new ConfigError('REDIS_URL', 'must be redis+sentinel://[:password@]host:port[,host:port...]/mastername[/db]');
    return {
      sentinel: { nodes: parseEndpoints('REDIS_URL', match[3]!, 26379), masterName: decodeUrlPart('REDIS_URL', match[4]!) },
      ...credentials(match[2]),
      db: Number(match[5] ?? 0),
      tls: match[1] === 'rediss',
    };
  }
  let url: URL | undefined;
  try {
    url = new URL(raw);
  } catch {
    url = undefined;
  }
  if (!url || !['redis:', 'rediss:'].includes(url.protocol)) {
    throw new ConfigError('REDIS_URL', 'must be a redis://, rediss:// or redis+sentinel:// URL');
  }
  const path = /^\/?(\d*)\/?$/.exec(url.pathname);
  return {
    ...credentials(url.username || url.password ? `${url.username}:${url.password}` : undefined),
    db: path ? Number(path[1] || 0) : undefined,
    tls: url.protocol === 'rediss:',
  };
}

/**
 * The Redis topology: exactly one of REDIS_URL (one server, or a redis+sentinel:// URL), REDIS_SENTINELS
 * and REDIS_CLUSTER_NODES names the servers. With REDIS_SENTINELS or REDIS_CLUSTER_NODES, REDIS_URL only
 * gives the data nodes' credentials, database and TLS (its host is not used).
 */
function parseRedis(env: Env): { redis: RedisConfig; redisUrl: string } | undefined {
  const rawUrl = optional(env, 'REDIS_URL');
  const rawSentinels = optional(env, 'REDIS_SENTINELS');
  const rawCluster = optional(env, 'REDIS_CLUSTER_NODES');
  const rawMaster = optional(env, 'REDIS_SENTINEL_MASTER');
  const sentinelPassword = secret(env, 'REDIS_SENTINEL_PASSWORD');
  const url = rawUrl !== undefined ? parseRedisUrl(rawUrl) : undefined;
  const username = url?.username ?? optional(env, 'REDIS_USERNAME');
  const password = url?.password ?? secret(env, 'REDIS_PASSWORD');
  const credentials = { ...(username !== undefined ? { username } : {}), ...(password !== undefined ? { password } : {}) };
  const db = () => {
    if (url !== undefined && url.db === undefined) throw new ConfigError('REDIS_URL', 'path must be a database number (e.g. /0)');
    return url?.db ?? 0;
  };
  const list = (nodes: RedisEndpoint[]) => nodes.map((n) => (n.host.includes(':') ? `[${n.host}]:${n.port}` : `${n.host}:${n.port}`)).join(',');

  if (rawSentinels !== undefined && rawCluster !== undefined) {
    throw new ConfigError('REDIS_CLUSTER_NODES', 'cannot be combined with REDIS_SENTINELS: set the one that matches the Redis topology');
  }
  if (rawCluster !== undefined) {
    if (url?.sentinel) throw new ConfigError('REDIS_URL', 'is a redis+sentinel:// URL, but REDIS_CLUSTER_NODES selects a Cluster: give credentials as redis:// or rediss://, or leave REDIS_URL unset');
    for (const name of ['REDIS_SENTINEL_MASTER', 'REDIS_SENTINEL_PASSWORD']) {
      if (secret(env, name) !== undefined) throw new ConfigError(name, 'applies to Redis Sentinel, but REDIS_CLUSTER_NODES selects a Cluster');
    }
    const nodes = parseEndpoints('REDIS_CLUSTER_NODES', rawCluster, 6379);
    if (db() !== 0) throw new ConfigError('REDIS_URL', `names database ${db()}, but a Redis Cluster has only database 0`);
    if (/[{}]/.test(str(env, 'REDIS_KEY_PREFIX', ''))) {
      throw new ConfigError('REDIS_KEY_PREFIX', 'must not contain "{" or "}" with REDIS_CLUSTER_NODES: the service adds the {<set>} hash tag that keeps a set in one slot');
    }
    return {
      redis: { mode: 'cluster', nodes, ...credentials, db: 0, tls: url?.tls ?? false },
      redisUrl: rawUrl ?? `redis+cluster://${list(nodes)}`,
    };
  }
  if (rawSentinels !== undefined || url?.sentinel) {
    const nodes = rawSentinels !== undefined ? parseEndpoints('REDIS_SENTINELS', rawSentinels, 26379) : url!.sentinel!.nodes;
    const masterName = rawMaster ?? url?.sentinel?.masterName;
    if (masterName === undefined) throw new ConfigError('REDIS_SENTINEL_MASTER', 'is required with REDIS_SENTINELS (the name of the master the sentinels monitor)');
    if (/\s/.test(masterName)) throw new ConfigError('REDIS_SENTINEL_MASTER', `"${masterName}" is not a master name`);
    if (url?.sentinel && url.sentinel.masterName !== masterName) {
      throw new ConfigError('REDIS_SENTINEL_MASTER', `("${masterName}") differs from the master named in REDIS_URL ("${url.sentinel.masterName}")`);
    }
    return {
      redis: {
        mode: 'sentinel',
        nodes,
        masterName,
        ...(sentinelPassword !== undefined ? { sentinelPassword } : {}),
        ...credentials,
        db: db(),
        tls: url?.tls ?? false,
      },
      redisUrl: rawUrl ?? `redis+sentinel://${list(nodes)}/${encodeURIComponent(masterName)}/${db()}`,
    };
  }
  for (const name of ['REDIS_SENTINEL_MASTER', 'REDIS_SENTINEL_PASSWORD']) {
    if (secret(env, name) !== undefined) throw new ConfigError(name, 'is set, but no sentinel is: set REDIS_SENTINELS (host:port,...) or a redis+sentinel:// REDIS_URL');
  }
  if (rawUrl === undefined || url === undefined) return undefined;
  return { redis: { mode: 'standalone', url: rawUrl, nodes: [], ...credentials, db: url.db ?? 0, tls: url.tls }, redisUrl: rawUrl };
}

function envNameForField(field: string): string {
  const names: Record<string, string> = {
    rotationPeriod: 'KEY_ROTATION_PERIOD',
    prepublishPeriod: 'KEY_PREPUBLISH_PERIOD',
    retireGrace: 'KEY_RETIRE_GRACE',
    certificateSubject: 'KEY_CERT_SUBJECT',
    certificateValidity: 'KEY_CERT_VALIDITY',
    defaultTtl: 'TOKEN_DEFAULT_TTL',
    maxTtl: 'TOKEN_MAX_TTL',
  };
  return names[field] ?? field;
}
