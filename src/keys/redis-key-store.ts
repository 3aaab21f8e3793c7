// The Redis key store: one hash of records and one meta hash per set, under a hash tag so a set lives in one
// Cluster slot; every change is a compare-and-swap on the set's generation, done in one Lua script.
import { randomBytes } from 'node:crypto';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import type { RedisConfig } from '../config.js';
import { type KeyStore, type StoreState, StoreUnavailableError, checkInvariants } from './key-store.js';
import type { KeyRecord, StoredKeySet } from './types.js';

export type RedisClient = Redis | Cluster;

// Atomic because Redis runs a script without interleaving: the generation check, the invariant check and
// the rewrite of the set happen as one step, so two replicas can never both commit from the same generation
// and a set can never be left with zero or two active keys.
const COMMIT_SCRIPT = `
local current = tonumber(redis.call('HGET', KEYS[2], 'generation') or '0')
if current ~= tonumber(ARGV[1]) then return 0 end
local count = tonumber(ARGV[4])
local active = 0
local seen = {}
for i = 0, count - 1 do
  local kid = ARGV[5 + 2 * i]
  if seen[kid] then return redis.error_reply('ERR duplicate kid ' .. kid) end
  seen[kid] = true
  local record = cjson.decode(ARGV[6 + 2 * i])
  if record.kid ~= kid then return redis.error_reply('ERR kid mismatch') end
  if record.state == 'active' then active = active + 1 end
end
if active ~= 1 then return redis.error_reply('ERR a key set needs exactly one active key') end
redis.call('DEL', KEYS[1])
for i = 0, count - 1 do
  redis.call('HSET', KEYS[1], ARGV[5 + 2 * i], ARGV[6 + 2 * i])
end
redis.call('HSET', KEYS[2], 'generation', ARGV[2], 'updatedAt', ARGV[3])
return 1
`;

const UNLOCK_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

interface ScriptedClient {
  jwksCommit(keysKey: string, metaKey: string, ...args: string[]): Promise<number>;
  jwksUnlock(lockKey: string, token: string): Promise<number>;
}

export interface RedisKeyStoreOptions {
  client: RedisClient;
  /** A second connection for pub/sub (a subscribed connection cannot run other commands). */
  subscriber: RedisClient;
  prefix: string;
  logger: Logger;
}

export function createRedisKeyStore({ client, subscriber, prefix, logger }: RedisKeyStoreOptions): KeyStore {
  client.defineCommand('jwksCommit', { numberOfKeys: 2, lua: COMMIT_SCRIPT });
  client.defineCommand('jwksUnlock', { numberOfKeys: 1, lua: UNLOCK_SCRIPT });
  const scripted = client as unknown as ScriptedClient;
  const channel = `${prefix}events`;
  const names = (set: string) => {
    const tag = `${prefix}{${set}}`;
    return { keys: `${tag}:keys`, meta: `${tag}:meta`, lock: `${tag}:lock` };
  };
  const listeners: Array<(set: string, generation: number) => void> = [];

  async function run<T>(what: string, op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (err instanceof Error && /^ERR (a key set|duplicate kid|kid mismatch)/.test(err.message)) throw err;
      throw new StoreUnavailableError(`redis ${what} failed: ${(err as Error).message}`, { cause: err });
    }
  }

  subscriber.on('message', (from: string, message: string) => {
    if (from !== channel) return;
    const space = message.lastIndexOf(' ');
    const set = message.slice(0, space);
    const generation = Number(message.slice(space + 1));
    if (!set || !Number.isInteger(generation)) return;
    for (const listener of listeners) listener(set, generation);
  });
  subscriber.subscribe(channel).catch((err: Error) => {
    logger.warn({ err: err.message }, 'redis subscribe failed; changes are picked up by polling');
  });

  return {
    kind: 'redis',
    load(set) {
      const { keys, meta } = names(set);
      return run('load', async () => {
        const results = await client.multi().hgetall(keys).hmget(meta, 'generation', 'updatedAt').exec();
        if (!results) throw new Error('transaction aborted');
        const [[keysErr, records], [metaErr, metaValues]] = results as [[Error | null, Record<string, string>], [Error | null, (string | null)[]]];
        if (keysErr || metaErr) throw keysErr ?? metaErr;
        return {
          generation: Number(metaValues[0] ?? 0),
          updatedAt: Number(metaValues[1] ?? 0),
          keys: Object.values(records).map((value) => JSON.parse(value) as KeyRecord),
        };
      });
    },
    generation(set) {
      return run('generation', async () => Number((await client.hget(names(set).meta, 'generation')) ?? 0));
    },
    commit(set, expectedGeneration, next: StoredKeySet) {
      checkInvariants(next);
      const { keys, meta } = names(set);
      const args = [String(expectedGeneration), String(next.generation), String(next.updatedAt), String(next.keys.length)];
      for (const record of next.keys) args.push(record.kid, JSON.stringify(record));
      return run('commit', async () => (await scripted.jwksCommit(keys, meta, ...args)) === 1);
    },
    lock(set, ttlMs) {
      const token = randomBytes(16).toString('hex');
      return run('lock', async () => ((await client.set(names(set).lock, token, 'PX', ttlMs, 'NX')) === 'OK' ? token : null));
    },
    async unlock(set, token) {
      await run('unlock', () => scripted.jwksUnlock(names(set).lock, token));
    },
    async publish(set, generation) {
      await run('publish', () => client.publish(channel, `${set} ${generation}`));
    },
    onChange(listener) {
      listeners.push(listener);
    },
    state(): StoreState {
      return client.status === 'ready' ? 'up' : 'down';
    },
    async waitUntilAvailable(timeoutMs) {
      if (client.status === 'ready') return;
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          client.off('ready', done);
          resolve();
        };
        const timer = setTimeout(done, timeoutMs);
        client.once('ready', done);
      });
    },
    async close() {
      await Promise.all([subscriber, client].map(closeConnection));
    },
  };
}

/** QUIT when Redis answers, but never wait on a server that is gone: shutdown must not hang on it. */
async function closeConnection(connection: RedisClient): Promise<void> {
  if (connection.status === 'ready') {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      connection.quit().catch(() => undefined),
      new Promise((resolve) => {
        timer = setTimeout(resolve, CLOSE_TIMEOUT_MS);
      }),
    ]);
    clearTimeout(timer);
  }
  connection.disconnect();
}

const CLOSE_TIMEOUT_MS = 1000;

const retryDelay = (attempt: number) => Math.min(100 * 2 ** Math.min(attempt, 5), 2000);

/**
 * After a failover the old primary, demoted to a replica, answers writes with READONLY while the connection
 * stays up. Reconnecting makes Sentinel name the new primary. Without an offline queue the failed command is
 * not replayed: it fails (a StoreUnavailableError for the caller, who retries), and the next one reaches the
 * new primary.
 */
export function reconnectOnReadonly(err: Error): 2 | false {
  return err.message.startsWith('READONLY') ? 2 : false;
}

/**
 * Connections for a store that must fail fast (never queue commands while Redis is away), to one server
 * (a URL), a Sentinel-managed primary or a Cluster. The subscriber keeps its queue: its SUBSCRIBE is issued
 * before the connection is ready, and re-issued by ioredis after every reconnection or failover.
 */
export function connectRedis(target: string | RedisConfig): { client: RedisClient; subscriber: RedisClient } {
  const redis: RedisConfig = typeof target === 'string' ? { mode: 'standalone', url: target, nodes: [], db: 0, tls: false } : target;
  const credentials = { ...(redis.username !== undefined ? { username: redis.username } : {}), ...(redis.password !== undefined ? { password: redis.password } : {}) };
  const failFast = { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: COMMAND_TIMEOUT_MS } as const;
  const queued = { enableOfflineQueue: true, maxRetriesPerRequest: null, commandTimeout: undefined } as const;

  if (redis.mode === 'cluster') {
    const client = new Cluster(redis.nodes, {
      // Reads go to the primaries too: a replica may lag behind a commit, and the CAS relies on fresh reads.
      scaleReads: 'master',
      enableOfflineQueue: false,
      clusterRetryStrategy: retryDelay,
      slotsRefreshTimeout: COMMAND_TIMEOUT_MS,
      redisOptions: {
        ...credentials,
        ...(redis.tls ? { tls: {} } : {}),
        connectTimeout: COMMAND_TIMEOUT_MS,
        maxRetriesPerRequest: 1,
        commandTimeout: COMMAND_TIMEOUT_MS,
        connectionName: 'jwks-signer',
      },
    });
    // The subscriber is one plain connection to any node: a PUBLISH reaches every node of a Cluster. (A Cluster
    // subscriber, in ioredis 5.11, reconnects to a dead node without any delay, hundreds of times a second, for
    // as long as the cluster is down.) At each retry this one waits and moves on to the next known node.
    let cursor = 0;
    const knownNodes = () => {
      const nodes = [...redis.nodes];
      for (const node of client.nodes('all')) {
        const { host, port } = node.options;
        if (host && port && !nodes.some((n) => n.host === host && n.port === port)) nodes.push({ host, port });
      }
      return nodes;
    };
    const subscriber: Redis = new Redis({
      host: redis.nodes[0]!.host,
      port: redis.nodes[0]!.port,
      ...credentials,
      ...(redis.tls ? { tls: {} } : {}),
      lazyConnect: false,
      connectTimeout: COMMAND_TIMEOUT_MS,
      ...queued,
      connectionName: 'jwks-signer-sub',
      retryStrategy: (attempt) => {
        const nodes = knownNodes();
        const next = nodes[++cursor % nodes.length]!;
        // Read by ioredis at the next connection attempt.
        Object.assign(subscriber.options, { host: next.host, port: next.port });
        return retryDelay(attempt);
      },
    });
    return { client, subscriber };
  }

  const common: RedisOptions = {
    lazyConnect: false,
    connectTimeout: COMMAND_TIMEOUT_MS,
    retryStrategy: retryDelay,
    reconnectOnError: reconnectOnReadonly,
    ...credentials,
  };
  if (redis.mode === 'sentinel') {
    const sentinel: RedisOptions = {
      ...common,
      sentinels: redis.nodes,
      name: redis.masterName!,
      role: 'master',
      ...(redis.sentinelPassword !== undefined ? { sentinelPassword: redis.sentinelPassword } : {}),
      sentinelCommandTimeout: COMMAND_TIMEOUT_MS,
      sentinelRetryStrategy: retryDelay,
      db: redis.db,
      ...(redis.tls ? { tls: {}, enableTLSForSentinelMode: true } : {}),
    };
    return {
      client: new Redis({ ...sentinel, ...failFast, connectionName: 'jwks-signer' }),
      subscriber: new Redis({ ...sentinel, ...queued, connectionName: 'jwks-signer-sub' }),
    };
  }
  // The URL's own credentials win over `credentials` (ioredis fills options in from the URL first).
  const url = redis.url!;
  return {
    client: new Redis(url, { ...common, ...failFast, connectionName: 'jwks-signer' }),
    subscriber: new Redis(url, { ...common, ...queued, connectionName: 'jwks-signer-sub' }),
  };
}

const COMMAND_TIMEOUT_MS = 2000;
