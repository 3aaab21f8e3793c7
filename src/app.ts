// buildApp: the key store, the key manager, and the two Fastify instances (public JWKS, internal signing API).
import rateLimit from '@fastify/rate-limit';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
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
import { registerOpenApi } from './plugins/openapi.js';
import { registerProblemHandlers } from './plugins/problem-errors.js';
import { addRouteHooks, buildPublicServer, countResponses, fastifyOptions, type PublicJwksView, publicSettings, toPublicView } from './public-server.js';
import { type PublicThread, startPublicThread } from './public-thread-host.js';
import { healthRoutes } from './routes/health.js';
import { authenticate } from './routes/internal/auth.js';
import { keyRoutes } from './routes/internal/keys.js';
import { signingRoutes } from './routes/internal/signing.js';
import { tokenRoutes } from './routes/internal/tokens.js';
import { createTokenBroker } from './oauth/token-broker.js';
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
  /** The thread serving the public port, while listen() has one running (PUBLIC_SERVER_THREAD). */
  readonly publicThread: PublicThread | undefined;
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
    auditSink: createRedisAuditSink(client, `${config.redisKeyPrefix}audit`, config.auditMaxEntries, { minIntervalMs: config.auditFlushIntervalMs }),
  };
}

const MAX_JSON_DEPTH = 32;

const SIGNING_ROUTES = new Set(['/v1/assertions', '/v1/jwt']);

/**
 * One line per internal request, except successful signatures (their audit line names client, set, kid, jti).
 * Signing routes and unknown URLs log in onSend: an onResponse hook makes Fastify attach listeners to every
 * response of its routes.
 */
function logResponses(app: FastifyInstance, log: Logger): void {
  const line = (request: FastifyRequest, reply: FastifyReply) =>
    log.info({ reqId: request.id, method: request.method, url: request.url.split('?')[0]!.slice(0, 200), status: reply.statusCode, ms: Math.round(reply.elapsedTime) }, 'request completed');
  addRouteHooks(app, 'onSend', (route) =>
    SIGNING_ROUTES.has(route.url)
      ? (request, reply, payload, done) => {
          if (reply.statusCode >= 400) line(request, reply);
          done(null, payload);
        }
      : undefined,
  );
  addRouteHooks(app, 'onResponse', (route) =>
    SIGNING_ROUTES.has(route.url)
      ? undefined
      : (request, reply, done) => {
          line(request, reply);
          done();
        },
  );
  app.addHook('onSend', (request, reply, payload, done) => {
    if (request.is404) line(request, reply);
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
  // What the public port serves: each set's rendered JWKS, kept here for the in-process instance and the thread.
  const publicViews = new Map<string, PublicJwksView>();
  let publicThread: PublicThread | undefined;
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
    onViewChange: (set, view) => {
      const previous = publicViews.get(set);
      const next = toPublicView(view);
      // Maintenance re-applies an unchanged set: only a change reaches the public thread.
      if (previous && previous.generation === next.generation && previous.etags['application/json'] === next.etags['application/json'] && previous.lastModified === next.lastModified) return;
      publicViews.set(set, next);
      publicThread?.pushView(set, next);
    },
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
  const tokens = createTokenService({ config, keys, logger, clock, metrics, audit });
  const broker = createTokenBroker({ config: config.broker, tokens, clock, metrics, audit });

  const publicLog = logger.child({ port: 'public' });
  const publicSource = { view: (set: string) => publicViews.get(set), isReady: () => keys.isReady(), storeState: () => store.state() };
  const { app: publicApp, limit: publicLimit } = await buildPublicServer(publicSettings(config), publicSource, {
    logger: publicLog,
    request: (route, status) => metrics.request('public', route, status),
    rateLimited: () => metrics.rateLimited('public'),
    now: () => clock.now(),
    ...(created?.client ? { redis: created.client } : {}),
  });
  // No Fastify logger, as on the public port: a child logger per request cost ~10 us (a bare Fastify JSON
  // POST: 71 -> 81 us of CPU); the lines below carry the request id themselves.
  const internalLog = logger.child({ port: 'internal' });
  const internalApp = Fastify({ ...fastifyOptions(config.trustProxy, config.connectionLimits), bodyLimit: config.internalBodyLimit });
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
  registerProblemHandlers(internalApp, { logger: internalLog });
  countResponses(internalApp, (route, status) => metrics.request('internal', route, status));
  logResponses(internalApp, internalLog);
  await registerOpenApi(internalApp);
  await internalApp.register(healthRoutes(publicSource));
  internalApp.get('/metrics', async (_request, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));
  await internalApp.register(async function protectedRoutes(api) {
    api.addHook(
      'onRequest',
      authenticate(config.clients, {
        ...config.authFailureLimit,
        onLimited: () => metrics.rateLimited('internal'),
        onLockout: (address) => audit.record({ event: 'auth_lockout', address }, 'internal API: too many failed authentications; address refused for the window'),
      }, internalLog),
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
          internalLog.warn({ client: request.apiClient.name, reqId: request.id }, 'client rate limit reached');
        },
        errorResponseBuilder: (_request, context) => Errors.rateLimited(`this client may make ${context.max} requests per ${context.after}`),
      });
    }
    await api.register(signingRoutes(tokens, (route, status) => metrics.request('internal', route, status)));
    await api.register(tokenRoutes(broker));
    await api.register(keyRoutes(config, keys, audit));
    await api.register(auditRoutes(audit));
  });

  await internalApp.ready();

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
    get publicThread() {
      return publicThread;
    },
    async listen() {
      let publicUrl: string;
      if (config.publicServerThread) {
        publicThread = await startPublicThread({
          settings: publicSettings(config),
          views: () => publicViews.entries(),
          storeState: () => store.state(),
          logger: publicLog,
          metrics,
          closeTimeoutMs: config.shutdownTimeoutMs,
          ...(created?.client ? { redis: created.client } : {}),
        });
        publicUrl = publicThread.url;
      } else {
        publicUrl = await publicApp.listen({ port: config.port, host: config.host });
      }
      const internalUrl = await internalApp.listen({ port: config.internalPort, host: config.internalHost });
      return { publicUrl, internalUrl };
    },
    close() {
      closing ??= (async () => {
        await Promise.allSettled([publicApp.close(), internalApp.close(), publicThread?.close()]);
        await publicLimit?.close();
        await audit.close();
        await keys.close();
        await store.close();
      })();
      return closing;
    },
  };
}
