// buildApp: the key store, the key manager, and the two Fastify instances (public JWKS, internal signing API).
import { randomBytes } from 'node:crypto';
import rateLimit from '@fastify/rate-limit';
import type { Server } from 'node:http';
import Fastify, {
  type FastifyHttpOptions,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerOptions,
  type HookHandlerDoneFunction,
  LogController,
  type RouteOptions,
} from 'fastify';
import { pino, type DestinationStream, type Logger } from 'pino';
import type { Config } from './config.js';
import { Errors } from './errors.js';
import { createKeyEncryption } from './keys/key-encryption.js';
import { type Clock, createKeyManager, type KeyManager, systemClock } from './keys/key-manager.js';
import { createMemoryKeyStore, type KeyStore } from './keys/key-store.js';
import { connectRedis, createRedisKeyStore, type RedisClient } from './keys/redis-key-store.js';
import { jsonDepth } from './lib/json-depth.js';
import { loggerOptions } from './logger.js';
import { type Audit, type AuditSink, createAudit, createMemoryAuditSink, createRedisAuditSink } from './audit.js';
import { auditRoutes } from './routes/internal/audit.js';
import { createMetrics, type Metrics } from './metrics.js';
import { createWindowCounter, rateLimitStore, type WindowCounter } from './rate-limit.js';
import { registerOpenApi } from './plugins/openapi.js';
import { registerProblemHandlers, sendClientError } from './plugins/problem-errors.js';
import { healthRoutes } from './routes/health.js';
import { authenticate } from './routes/internal/auth.js';
import { keyRoutes } from './routes/internal/keys.js';
import { signingRoutes } from './routes/internal/signing.js';
import { tokenRoutes } from './routes/internal/tokens.js';
import { createTokenBroker } from './oauth/token-broker.js';
import { jwksRoutes } from './routes/public/jwks.js';
import { createSigner } from './keys/signer.js';
import { createTokenService, type TokenService } from './signing/token-service.js';

export interface AppDeps {
  logger?: Logger;
  /** Where logs go when no logger is given (tests capture them to scan for secrets). */
  logStream?: DestinationStream;
  clock?: Clock;
  store?: KeyStore;
  metrics?: Metrics;
  auditSink?: AuditSink;
  onFatal?: (err: Error) => void;
}

export interface App {
  config: Config;
  public: FastifyInstance;
  internal: FastifyInstance;
  keys: KeyManager;
  store: KeyStore;
  tokens: TokenService;
  logger: Logger;
  metrics: Metrics;
  audit: Audit;
  listen(): Promise<{ publicUrl: string; internalUrl: string }>;
  close(): Promise<void>;
}

function createStore(config: Config, logger: Logger): { store: KeyStore; auditSink: AuditSink; client?: RedisClient } {
  const target = config.redis ?? config.redisUrl;
  if (!target) return { store: createMemoryKeyStore(), auditSink: createMemoryAuditSink(config.auditMaxEntries) };
  const { client, subscriber } = connectRedis(target);
  let lastError: string | undefined;
  // Logged once per kind of error: retry delays in Sentinel's messages would make each one look new.
  const onError = (err: Error) => {
    const kind = err.message.replace(/\d+/g, 'N');
    if (kind !== lastError) logger.warn({ err: err.message }, 'redis connection error');
    lastError = kind;
  };
  client.on('error', onError);
  client.on('node error', onError);
  client.on('ready', () => {
    if (lastError !== undefined) logger.info('redis connection ready');
    lastError = undefined;
  });
  subscriber.on('error', () => undefined);
  return {
    client,
    store: createRedisKeyStore({ client, subscriber, prefix: config.redisKeyPrefix, logger }),
    // One stream for every replica, so GET /v1/audit shows what all of them did.
    auditSink: createRedisAuditSink(client, `${config.redisKeyPrefix}audit`, config.auditMaxEntries),
  };
}

/** Request ids: a random prefix per process and a counter (a UUID per request cost ~1% of the JWKS path). */
function requestIds(): () => string {
  const prefix = randomBytes(6).toString('hex');
  let next = 0;
  return () => `${prefix}-${(next++).toString(36)}`;
}

function serverOptions(config: Config, logger: Logger, port: 'public' | 'internal'): FastifyHttpOptions<Server> {
  return {
    // The public port has no Fastify logger: Fastify then makes no child logger and attaches no response
    // listeners per request (together they cost more than the JWKS route itself). Its refusal and failure
    // lines go through the app's logger, with the request id (registerProblemHandlers).
    ...(port === 'internal' ? { loggerInstance: logger.child({ port }) } : {}),
    // Fastify accepts a hop count at run time although its type omits it.
    trustProxy: config.trustProxy as FastifyServerOptions['trustProxy'],
    requestIdHeader: 'x-request-id',
    genReqId: requestIds(),
    // No automatic request logging: the public port answers Acumatica on every token request, and on the
    // internal port each signature has its audit line; logResponses() writes the other lines.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: port === 'public' ? 1024 : config.internalBodyLimit,
    ...connectionLimits(config),
    clientErrorHandler: sendClientError,
    return503OnClosing: true,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
  };
}

// A request (headers and body) must be complete within requestTimeout; Node checks open requests every
// connectionsCheckingInterval, so that is the slack on it. An idle socket closes after connectionTimeout, an
// idle kept-alive one after keepAliveTimeout: by default longer than the idle timeout of common load balancers
// (60 s), so that the balancer, not us, closes a pooled connection, and never mid-request.
function connectionLimits(config: Config): Partial<FastifyHttpOptions<Server>> {
  const { requestTimeoutMs, keepAliveTimeoutMs, connectionTimeoutMs, maxHeaderSize } = config.connectionLimits;
  return {
    requestTimeout: requestTimeoutMs,
    keepAliveTimeout: keepAliveTimeoutMs,
    connectionTimeout: connectionTimeoutMs,
    http: {
      maxHeaderSize,
      requestTimeout: requestTimeoutMs,
      headersTimeout: requestTimeoutMs,
      connectionsCheckingInterval: Math.min(1000, Math.max(50, Math.floor(requestTimeoutMs / 4))),
    },
  };
}

const MAX_JSON_DEPTH = 32;

const SIGNING_ROUTES = new Set(['/v1/assertions', '/v1/jwt']);

/** One line per internal request, except successful signatures (their audit line names client, set, kid, jti). */
function logResponses(app: FastifyInstance): void {
  const line = (request: FastifyRequest, reply: FastifyReply) =>
    request.log.info({ method: request.method, url: request.url.split('?')[0]!.slice(0, 200), status: reply.statusCode, ms: Math.round(reply.elapsedTime) }, 'request completed');
  addRouteHooks(app, 'onResponse', (route) =>
    SIGNING_ROUTES.has(route.url)
      ? (request, reply, done) => {
          if (reply.statusCode >= 400) line(request, reply);
          done();
        }
      : (request, reply, done) => {
          line(request, reply);
          done();
        },
  );
  app.addHook('onResponse', (request, reply, done) => {
    if (request.is404) line(request, reply);
    done();
  });
}

type RouteHook = (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => void;
type SendHook = (request: FastifyRequest, reply: FastifyReply, payload: unknown, done: (err: Error | null, payload: unknown) => void) => void;
interface RouteHooks {
  onResponse: RouteHook;
  onSend: SendHook;
}

/** Adds a hook to every route registered from now on (none when `hookFor` gives none). */
function addRouteHooks<K extends keyof RouteHooks>(app: FastifyInstance, kind: K, hookFor: (route: RouteOptions) => RouteHooks[K] | undefined): void {
  app.addHook('onRoute', (route) => {
    const hook = hookFor(route);
    if (!hook) return;
    const existing = route[kind] as RouteHooks[K] | RouteHooks[K][] | undefined;
    (route as unknown as Record<K, RouteHooks[K][]>)[kind] = existing === undefined ? [hook] : Array.isArray(existing) ? [...existing, hook] : [existing, hook];
  });
}

function countResponses(app: FastifyInstance, metrics: Metrics, port: 'public' | 'internal'): void {
  // In onSend, per route with its URL bound (request.routeOptions builds an object per access), and
  // synchronous: an onResponse hook would make Fastify attach response listeners to every request of the
  // public port, and an async hook costs a promise and a microtask. Unmatched URLs share one label, so that
  // scanners cannot grow the label set without bound.
  addRouteHooks(app, 'onSend', (route) => {
    const url = route.url;
    return (_request, reply, payload, done) => {
      metrics.request(port, url, reply.statusCode);
      done(null, payload);
    };
  });
  app.addHook('onSend', (request, reply, payload, done) => {
    if (request.is404) metrics.request(port, 'unmatched', reply.statusCode);
    done(null, payload);
  });
}

export async function buildApp(config: Config, deps: AppDeps = {}): Promise<App> {
  const logger = deps.logger ?? pino(loggerOptions(config.logLevel), deps.logStream);
  const clock = deps.clock ?? systemClock;
  const created = deps.store ? undefined : createStore(config, logger);
  const store = deps.store ?? created!.store;
  const encryption = createKeyEncryption(config.encryptionKeys);
  const metrics = deps.metrics ?? createMetrics(config);
  const keys = createKeyManager({
    config,
    store,
    encryption,
    logger,
    clock,
    onEvents: (set, events) => {
      metrics.keyEvents(set, events);
      audit.record({ event: 'key_lifecycle', keySet: set, events }, 'key set changed');
    },
    onStoreError: (operation) => metrics.storeError(operation),
    ...(deps.onFatal ? { onFatal: deps.onFatal } : {}),
  });
  metrics.observe(keys, store, clock);
  const auditSink = deps.auditSink ?? created?.auditSink ?? createMemoryAuditSink(config.auditMaxEntries);
  const audit = createAudit(auditSink, logger, () => metrics.storeError('audit'));
  try {
    await keys.start();
  } catch (err) {
    await keys.close();
    await store.close();
    throw err;
  }
  const signer = createSigner({ onFallback: (err) => logger.warn({ err: err.message }, 'signing workers unavailable; signing on the libuv thread pool') });
  const tokens = createTokenService({ config, keys, logger, clock, metrics, audit, signer });
  const broker = createTokenBroker({ config: config.broker, tokens, clock, metrics, audit });

  const publicApp = Fastify(serverOptions(config, logger, 'public'));
  const publicLog = logger.child({ port: 'public' });
  countResponses(publicApp, metrics, 'public');
  let publicLimit: WindowCounter | undefined;
  if (config.rateLimit.max > 0) {
    const client = created?.client;
    publicLimit = createWindowCounter({
      max: config.rateLimit.max,
      windowMs: config.rateLimit.windowMs,
      now: () => clock.now(),
      ...(config.rateLimit.shared && client
        ? {
            shared: {
              client,
              keyPrefix: `${config.redisKeyPrefix}ratelimit:`,
              intervalMs: config.rateLimit.syncIntervalMs,
              onError: (err) => logger.warn({ err: err.message }, 'rate limit: cannot reconcile counts with the other replicas; counting locally'),
              onRecovered: () => logger.info('rate limit: reconciling counts with the other replicas again'),
            },
          }
        : {}),
    });
    // Counted in memory by the store, which answers synchronously (src/rate-limit.ts); Redis only reconciles.
    await publicApp.register(rateLimit, {
      global: true,
      hook: 'onRequest',
      max: config.rateLimit.max,
      timeWindow: config.rateLimit.windowMs,
      store: rateLimitStore(publicLimit),
      addHeadersOnExceeding: { 'x-ratelimit-limit': false, 'x-ratelimit-remaining': false, 'x-ratelimit-reset': false },
      onExceeded: () => metrics.rateLimited('public'),
      errorResponseBuilder: (_request, context) =>
        Errors.rateLimited(`limit of ${context.max} requests per ${context.after} reached; retry after the Retry-After delay`),
    });
    // Unknown paths count against the same budget, or a scanner could send them without limit.
    registerProblemHandlers(publicApp, { preHandler: publicApp.rateLimit(), logger: publicLog });
  } else {
    registerProblemHandlers(publicApp, { logger: publicLog });
  }
  await publicApp.register(healthRoutes(keys, store));
  await publicApp.register(jwksRoutes(config, keys, metrics));

  const internalApp = Fastify(serverOptions(config, logger, 'internal'));
  // The API speaks JSON only: without this, Fastify's built-in text parser would turn 415s into 400s.
  internalApp.removeContentTypeParser(['text/plain', 'application/json']);
  const parseJson = internalApp.getDefaultJsonParser('error', 'error');
  // Deeply nested claims would exhaust the stack in JSON handling (a 500): refuse them before parsing.
  internalApp.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (jsonDepth(body as string, MAX_JSON_DEPTH) > MAX_JSON_DEPTH) {
      done(Errors.invalidRequest(`the JSON body is nested more than ${MAX_JSON_DEPTH} levels deep`), undefined);
      return;
    }
    parseJson(request, body as string, done);
  });
  registerProblemHandlers(internalApp);
  countResponses(internalApp, metrics, 'internal');
  logResponses(internalApp);
  await registerOpenApi(internalApp);
  await internalApp.register(healthRoutes(keys, store));
  internalApp.get('/metrics', async (_request, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));
  await internalApp.register(async function protectedRoutes(api) {
    api.addHook(
      'onRequest',
      authenticate(config.clients, {
        ...config.authFailureLimit,
        onLimited: () => metrics.rateLimited('internal'),
        onLockout: (address) => audit.record({ event: 'auth_lockout', address }, 'internal API: too many failed authentications; address refused for the window'),
      }),
    );
    // Per-client limits run after authentication, so they count what each client signs, whatever its address.
    // Not registered when no client has a limit: its preHandler would run on every request for nothing.
    if (config.clients.some((client) => client.rateLimit !== undefined)) {
      await api.register(rateLimit, {
        global: true,
        hook: 'preHandler',
        keyGenerator: (request) => `client:${request.apiClient.name}`,
        allowList: (request) => request.apiClient.rateLimit === undefined,
        max: (request) => request.apiClient.rateLimit?.max ?? 0,
        timeWindow: (request) => request.apiClient.rateLimit?.windowMs ?? 60_000,
        addHeadersOnExceeding: { 'x-ratelimit-limit': false, 'x-ratelimit-remaining': false, 'x-ratelimit-reset': false },
        onExceeded: (request) => {
          metrics.rateLimited('internal');
          request.log.warn({ client: request.apiClient.name }, 'client rate limit reached');
        },
        errorResponseBuilder: (_request, context) => Errors.rateLimited(`this client may make ${context.max} requests per ${context.after}`),
      });
    }
    await api.register(signingRoutes(tokens));
    await api.register(tokenRoutes(broker));
    await api.register(keyRoutes(config, keys, audit));
    await api.register(auditRoutes(audit));
  });

  await Promise.all([publicApp.ready(), internalApp.ready()]);

  let closing: Promise<void> | undefined;
  return {
    config,
    public: publicApp,
    internal: internalApp,
    keys,
    store,
    tokens,
    logger,
    metrics,
    audit,
    async listen() {
      const publicUrl = await publicApp.listen({ port: config.port, host: config.host });
      const internalUrl = await internalApp.listen({ port: config.internalPort, host: config.internalHost });
      return { publicUrl, internalUrl };
    },
    close() {
      closing ??= (async () => {
        await Promise.allSettled([publicApp.close(), internalApp.close()]);
        await publicLimit?.close();
        await audit.close();
        await signer.close();
        await keys.close();
        await store.close();
      })();
      return closing;
    },
  };
}
