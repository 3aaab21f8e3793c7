// The public thread's entry (started by src/public-thread-host.ts): the public port's Fastify instance,
// serving the JWKS views the main thread pushes, so that JWKS requests never queue behind the signing API.
import { parentPort, workerData } from 'node:worker_threads';
import type { FastifyBaseLogger } from 'fastify';
import type { ReconcileClient, ReconcilePipeline } from './rate-limit.js';
import type { StoreState } from './keys/key-store.js';
import { buildPublicServer, type PublicJwksView } from './public-server.js';
import type { FromThread, PublicThreadData, ToThread } from './public-thread-host.js';
import { nameThread, THREAD_NAMES } from './lib/thread-name.js';
import { restoreOwnThread } from './lib/thread-priority.js';

nameThread('thread-self', THREAD_NAMES.publicPort);

const METRICS_INTERVAL_MS = 1000;
const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;

const port = parentPort!;
const data = workerData as PublicThreadData;
// A thread restarted after the main thread was lowered (API_THREAD_NICE) inherits its nice value and policy.
const niceLeft = restoreOwnThread(data.priority);
const post = (message: FromThread) => port.postMessage(message);

const views = new Map<string, PublicJwksView>();
/** Bodies arrive as plain Uint8Arrays (structured clone); Fastify sends Buffers as they are. */
const setView = (set: string, view: PublicJwksView) => views.set(set, { ...view, body: Buffer.from(view.body.buffer, view.body.byteOffset, view.body.byteLength) });
for (const [set, view] of data.views) setView(set, view);
let storeState: StoreState = data.storeState;

/** Lines go to the main thread, which writes them with the app's public logger. */
function postingLogger(level: string): FastifyBaseLogger {
  const threshold = level === 'silent' ? LEVELS.length : LEVELS.indexOf(level as (typeof LEVELS)[number]);
  const noop = () => undefined;
  const method = (name: (typeof LEVELS)[number]) =>
    LEVELS.indexOf(name) < threshold
      ? noop
      : (obj: unknown, msg?: string) => {
          const fields = typeof obj === 'object' && obj !== null ? cloneable(obj as Record<string, unknown>) : {};
          const line = { op: 'log', level: name, msg: typeof obj === 'string' ? obj : (msg ?? '') } as const;
          try {
            post({ ...line, fields });
          } catch {
            // A field that cannot be cloned (a function, a socket): the line goes without its fields.
            post({ ...line, fields: {} });
          }
        };
  const logger = { level, silent: noop, child: () => logger } as unknown as Record<string, unknown>;
  for (const name of LEVELS) logger[name] = method(name);
  return logger as unknown as FastifyBaseLogger;
}

function cloneable(fields: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(fields)) {
    out[name] = value instanceof Error ? { type: value.name, message: value.message, stack: value.stack, code: (value as NodeJS.ErrnoException).code } : value;
  }
  return out;
}

// Response counts per (route, status) and refusals, sent as deltas.
const counts = new Map<string, Map<number, number>>();
let limited = 0;
function flushMetrics(): void {
  if (counts.size === 0 && limited === 0) return;
  const requests: Array<[string, number, number]> = [];
  for (const [route, byStatus] of counts) for (const [status, n] of byStatus) requests.push([route, status, n]);
  post({ op: 'metrics', requests, limited });
  counts.clear();
  limited = 0;
}

// Rate-limit reconciliation goes through the main thread's Redis connection: the thread loads no Redis client
// (about 5 MB of RSS) and is never given the Redis address or password.
const pendingPipelines = new Map<number, (results: Array<[Error | null, unknown]>) => void>();
let nextPipeline = 0;
function mainThreadRedis(): ReconcileClient {
  return {
    // The main thread's store state is the state of its connection ('up' when ready).
    get status() {
      return storeState === 'up' ? 'ready' : 'down';
    },
    pipeline(): ReconcilePipeline {
      const commands: Array<[string, ...Array<string | number>]> = [];
      const pipeline: ReconcilePipeline = {
        hincrby: (key, field, increment) => commands.push(['hincrby', key, field, increment]),
        pexpire: (key, milliseconds) => commands.push(['pexpire', key, milliseconds]),
        exec: () =>
          new Promise((resolve) => {
            const id = nextPipeline++;
            pendingPipelines.set(id, resolve);
            post({ op: 'redis', id, commands });
          }),
      };
      return pipeline;
    },
  };
}

async function main(): Promise<void> {
  const { settings } = data;
  const redis = settings.redis ? mainThreadRedis() : undefined;
  const log = postingLogger(settings.logLevel);
  const { app, limit } = await buildPublicServer(
    settings,
    { view: (set) => views.get(set), isReady: () => settings.keySets.every((set) => views.has(set)), storeState: () => storeState },
    {
      logger: log,
      request(route, status) {
        let byStatus = counts.get(route);
        if (!byStatus) {
          byStatus = new Map();
          counts.set(route, byStatus);
        }
        byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
      },
      rateLimited: () => {
        limited += 1;
      },
      now: () => Date.now(),
      ...(redis ? { redis } : {}),
    },
  );
  const timer = setInterval(flushMetrics, METRICS_INTERVAL_MS);
  timer.unref();

  port.on('message', (message: ToThread) => {
    switch (message.op) {
      case 'view':
        setView(message.set, message.view);
        break;
      case 'store':
        storeState = message.state;
        break;
      case 'redis': {
        const resolve = pendingPipelines.get(message.id);
        pendingPipelines.delete(message.id);
        resolve?.(message.results.map(([err, value]) => [err === null ? null : new Error(err), value]));
        break;
      }
      case 'close':
        void (async () => {
          clearInterval(timer);
          await app.close();
          await limit?.close();
          flushMetrics();
          post({ op: 'closed' });
        })();
        break;
    }
  });

  const url = await app.listen({ port: settings.port, host: settings.host });
  if (niceLeft !== data.priority.nice) {
    log.warn({ nice: niceLeft, processNice: data.priority.nice }, "public port thread runs at the main thread's lowered priority (API_THREAD_NICE): restarted after the main thread was lowered, and raising it back needs CAP_SYS_NICE; restart the process to restore it");
  }
  post({ op: 'listening', url });
}

main().catch((err: Error) => {
  post({ op: 'failed', message: err.message, code: (err as NodeJS.ErrnoException).code });
  process.exit(1);
});
