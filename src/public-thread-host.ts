// The main thread's side of the public thread (PUBLIC_SERVER_THREAD): starts it, pushes every JWKS view and
// store state change to it, turns its metric deltas and log lines into the app's, and restarts it if it dies.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { StoreState } from './keys/key-store.js';
import type { RedisClient } from './keys/redis-key-store.js';
import type { Metrics } from './metrics.js';
import type { PublicJwksView, PublicSettings } from './public-server.js';
import { ownPriority, type ThreadPriority } from './lib/thread-priority.js';

export interface PublicThreadData {
  settings: PublicSettings;
  views: Array<[string, PublicJwksView]>;
  storeState: StoreState;
  /** The process's priority before server.ts lowered the main thread (API_THREAD_NICE): what a restarted thread restores. */
  priority: ThreadPriority;
}

export type ToThread =
  | { op: 'view'; set: string; view: PublicJwksView }
  | { op: 'store'; state: StoreState }
  /** The answer to a `redis` pipeline: per command, an error message or null, and the reply. */
  | { op: 'redis'; id: number; results: Array<[string | null, unknown]> }
  | { op: 'close' };

export type FromThread =
  | { op: 'listening'; url: string }
  | { op: 'failed'; message: string; code?: string | undefined }
  | { op: 'metrics'; requests: Array<[string, number, number]>; limited: number }
  | { op: 'log'; level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'; fields: Record<string, unknown>; msg: string }
  /** Rate-limit reconciliation, run on the main thread's connection (only HINCRBY and PEXPIRE are accepted). */
  | { op: 'redis'; id: number; commands: Array<[string, ...Array<string | number>]> }
  | { op: 'closed' };

export interface PublicThread {
  readonly url: string;
  /** Times the thread was started again after dying. */
  readonly restarts: number;
  pushView(set: string, view: PublicJwksView): void;
  /** Stops accepting connections, lets requests in flight finish, then ends the thread. */
  close(): Promise<void>;
  /** Tests: ends the thread as a crash would (it is then restarted). */
  terminateForTest(): Promise<void>;
}

export interface PublicThreadOptions {
  settings: PublicSettings;
  views(): Iterable<[string, PublicJwksView]>;
  storeState(): StoreState;
  /** The public logger: the thread's lines are written with it. */
  logger: Logger;
  metrics: Metrics;
  /** How long close() waits for requests in flight before ending the thread anyway. */
  closeTimeoutMs: number;
  /** The main thread's connection, through which the thread reconciles a shared rate limit. */
  redis?: RedisClient;
}

const RECONCILE_COMMANDS = new Set(['hincrby', 'pexpire']);

/**
 * A body of a few KB is a slice of Node's shared 8 KB Buffer pool, and structured cloning copies a typed array's
 * whole ArrayBuffer: without an exact-size copy, each set would cost the thread 8 KB (8 MB with 1,000 sets).
 */
function forThread(view: PublicJwksView): PublicJwksView {
  return { ...view, body: Buffer.from(new Uint8Array(view.body).buffer) };
}

/** Runs the thread's reconciliation pipeline on the main thread's connection; every failure becomes a per-command error. */
async function runPipeline(redis: RedisClient | undefined, commands: Array<[string, ...Array<string | number>]>): Promise<Array<[string | null, unknown]>> {
  const failAll = (message: string) => commands.map((): [string, null] => [message, null]);
  if (!redis) return failAll('no Redis connection');
  if (!commands.every(([name]) => RECONCILE_COMMANDS.has(name))) return failAll('only HINCRBY and PEXPIRE are accepted from the public thread');
  try {
    const results = (await redis.pipeline(commands).exec()) ?? [];
    return commands.map((_, i) => {
      const [err, value] = results[i] ?? [new Error('no reply'), null];
      return [err ? err.message : null, value];
    });
  } catch (err) {
    return failAll((err as Error).message);
  }
}

const STORE_STATE_POLL_MS = 250;
const RESTART_MIN_MS = 100;
const RESTART_MAX_MS = 5000;
/** A thread that served this long before dying restarts after the shortest delay again. */
const STABLE_MS = 60_000;

// Under tsx (tests, npm start) the entry is TypeScript, which a Worker cannot load by itself on Node 20 (the
// parent's --import hooks do not reach it): tsx's require hook compiles it. From dist/ it is plain ESM.
const SELF = import.meta.url;
const UNDER_TSX = SELF.endsWith('.ts');
const TSX_BOOTSTRAP = `const { workerData } = require('node:worker_threads'); require(workerData.tsxLoader); require(workerData.entry);`;

function spawn(data: PublicThreadData): Worker {
  const entry = new URL(UNDER_TSX ? './public-thread.ts' : './public-thread.js', SELF);
  // Small heaps: the thread holds rendered JWKS bodies and short-lived request objects; the default young
  // generation alone would add tens of MB of RSS under load.
  const options = { name: 'jwks-signer-public', resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 128 } };
  if (!UNDER_TSX) return new Worker(entry, { ...options, workerData: data });
  const tsxLoader = createRequire(SELF).resolve('tsx/cjs');
  return new Worker(TSX_BOOTSTRAP, { ...options, eval: true, workerData: { ...data, tsxLoader, entry: fileURLToPath(entry) } });
}

export async function startPublicThread(options: PublicThreadOptions): Promise<PublicThread> {
  const { logger, metrics } = options;
  let settings = options.settings;
  let worker: Worker | undefined;
  let url = '';
  let restarts = 0;
  let failures = 0;
  let closing = false;
  /** Set once a thread has listened: only then is a dead thread restarted (a first start that fails is an error). */
  let served = false;
  let restartTimer: NodeJS.Timeout | undefined;
  let storeState = options.storeState();
  // Read before the first thread starts, hence before server.ts lowers the main thread (after listen()).
  const priority = ownPriority();

  const send = (message: ToThread) => worker?.postMessage(message);

  function onMessage(message: FromThread): void {
    switch (message.op) {
      case 'metrics':
        for (const [route, status, n] of message.requests) metrics.request('public', route, status, n);
        if (message.limited > 0) metrics.rateLimited('public', message.limited);
        break;
      case 'log':
        logger[message.level](message.fields, message.msg);
        break;
      case 'redis': {
        const from = worker;
        void runPipeline(options.redis, message.commands).then((results) => from?.postMessage({ op: 'redis', id: message.id, results } satisfies ToThread));
        break;
      }
      default:
        break;
    }
  }

  /** Starts a thread; resolves with its URL once it listens, rejects if it fails first. */
  function start(): Promise<string> {
    storeState = options.storeState();
    const current = spawn({ settings, views: [...options.views()].map(([set, view]) => [set, forThread(view)]), storeState, priority });
    worker = current;
    const startedAt = Date.now();
    let listening = false;
    return new Promise((resolve, reject) => {
      current.on('message', (message: FromThread) => {
        if (message.op === 'listening') {
          listening = true;
          resolve(message.url);
        } else if (message.op === 'failed') {
          reject(Object.assign(new Error(`public port: ${message.message}`), { code: message.code }));
        } else onMessage(message);
      });
      current.on('error', (err) => {
        if (!listening) reject(err);
        else logger.error({ err }, 'public thread failed');
      });
      current.on('exit', (code) => {
        if (!listening) reject(new Error(`public thread exited with code ${code} before listening`));
        if (worker !== current || closing || !served) return;
        worker = undefined;
        if (Date.now() - startedAt >= STABLE_MS) failures = 0;
        const delay = Math.min(RESTART_MAX_MS, RESTART_MIN_MS * 2 ** failures);
        failures += 1;
        logger.error({ code, restartInMs: delay }, 'public thread stopped; restarting it');
        restartTimer = setTimeout(restart, delay);
      });
    });
  }

  function restart(): void {
    restartTimer = undefined;
    if (closing) return;
    start().then(
      () => {
        restarts += 1;
        logger.info('public thread serving again');
      },
      // Its exit handler schedules the next attempt.
      (err: Error) => logger.error({ err: err.message }, 'public thread could not start'),
    );
  }

  url = await start();
  served = true;
  // A restarted thread listens where the first one did, port 0 included.
  settings = { ...settings, port: Number(new URL(url).port) };

  const poll = setInterval(() => {
    const state = options.storeState();
    if (state !== storeState) {
      storeState = state;
      send({ op: 'store', state });
    }
  }, STORE_STATE_POLL_MS);
  poll.unref();

  return {
    get url() {
      return url;
    },
    get restarts() {
      return restarts;
    },
    pushView: (set, view) => send({ op: 'view', set, view: forThread(view) }),
    async close() {
      closing = true;
      clearInterval(poll);
      if (restartTimer) clearTimeout(restartTimer);
      const current = worker;
      if (!current) return;
      await new Promise<void>((resolve) => {
        const timeout = setTimeout(resolve, options.closeTimeoutMs);
        current.on('message', (message: FromThread) => {
          if (message.op !== 'closed') return;
          clearTimeout(timeout);
          resolve();
        });
        current.once('exit', () => {
          clearTimeout(timeout);
          resolve();
        });
        current.postMessage({ op: 'close' } satisfies ToThread);
      });
      await current.terminate();
    },
    async terminateForTest() {
      await worker?.terminate();
    },
  };
}
