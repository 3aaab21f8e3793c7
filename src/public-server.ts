// The public port (JWKS, health, CORS preflight) as one Fastify instance built from public settings and a
// source of rendered JWKS: the same code runs in the main thread (buildApp's `app.public`) and in the public
// thread (src/public-thread.ts). Nothing that reaches it can sign: no private keys, no key-encryption keys,
// no API client tokens; only rendered public JWKS bodies and public settings.
import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import rateLimit, { normalizeIP } from '@fastify/rate-limit';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyHttpOptions,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerOptions,
  type HookHandlerDoneFunction,
  LogController,
  type RouteOptions,
} from 'fastify';
import type { Config } from './config.js';
import { Errors } from './errors.js';
import type { JwksContentType } from './keys/jwks.js';
import type { StoreState } from './keys/key-store.js';
import type { KeySetView } from './keys/key-manager.js';
import { createWindowCounter, rateLimitStore, type ReconcileClient, type WindowCounter } from './rate-limit.js';
import { registerProblemHandlers, sendClientError } from './plugins/problem-errors.js';
import { healthRoutes } from './routes/health.js';
import { jwksRoutes } from './routes/public/jwks.js';

/** What the public port serves of one key set: its rendered JWKS, as the main thread last saw it. */
export interface PublicJwksView {
  generation: number;
  body: Buffer;
  etags: Record<JwksContentType, string>;
  lastModified: string;
  prepublishPeriodMs: number;
}

export interface JwksSource {
  view(set: string): PublicJwksView | undefined;
  isReady(): boolean;
  storeState(): StoreState;
}

/** The public port's settings: structured-cloneable, so that the public thread can be given them. */
export interface PublicSettings {
  port: number;
  host: string;
  trustProxy: Config['trustProxy'];
  logLevel: string;
  connectionLimits: Config['connectionLimits'];
  jwks: Config['jwks'];
  rateLimit: Config['rateLimit'];
  keySets: string[];
  defaultKeySet: string;
  /**
   * Set when the rate limit is shared through Redis. The public thread reconciles through the main thread's
   * connection (no Redis address or password is given to it).
   */
  redis?: { keyPrefix: string };
}

export function publicSettings(config: Config): PublicSettings {
  const target = config.redis ?? config.redisUrl;
  return {
    port: config.port,
    host: config.host,
    trustProxy: config.trustProxy,
    logLevel: config.logLevel,
    connectionLimits: config.connectionLimits,
    jwks: config.jwks,
    rateLimit: config.rateLimit,
    keySets: [...config.keySets.keys()],
    defaultKeySet: config.defaultKeySet,
    ...(config.rateLimit.max > 0 && config.rateLimit.shared && target !== undefined ? { redis: { keyPrefix: config.redisKeyPrefix } } : {}),
  };
}

export function toPublicView(view: KeySetView): PublicJwksView {
  const { body, etags, lastModified } = view.jwks;
  return { generation: view.generation, body, etags, lastModified, prepublishPeriodMs: view.config.prepublishPeriodMs };
}

/** Where the public port's counts and log lines go: the app's metrics and logger, or the public thread's channel. */
export interface PublicSinks {
  logger: FastifyBaseLogger;
  request(route: string, status: number): void;
  rateLimited(): void;
  now(): number;
  /** The connection that reconciles a shared rate limit (used when `settings.redis` is set). */
  redis?: ReconcileClient;
}

export async function buildPublicServer(settings: PublicSettings, source: JwksSource, sinks: PublicSinks): Promise<{ app: FastifyInstance; limit?: WindowCounter }> {
  const app = Fastify({
    // No Fastify logger: Fastify then makes no child logger and attaches no response listeners per request
    // (together they cost more than the JWKS route itself). Refusal and failure lines go through
    // `sinks.logger`, with the request id (registerProblemHandlers).
    ...fastifyOptions(settings.trustProxy, settings.connectionLimits),
    bodyLimit: 1024,
  });
  countResponses(app, sinks.request);
  const { logger } = sinks;
  let limit: WindowCounter | undefined;
  if (settings.rateLimit.max > 0) {
    const { max, windowMs, syncIntervalMs } = settings.rateLimit;
    limit = createWindowCounter({
      max,
      windowMs,
      now: sinks.now,
      ...(settings.redis && sinks.redis
        ? {
            shared: {
              client: sinks.redis,
              keyPrefix: `${settings.redis.keyPrefix}ratelimit:`,
              intervalMs: syncIntervalMs,
              onError: (err) => logger.warn({ err: err.message }, 'rate limit: cannot reconcile counts with the other replicas; counting locally'),
              onRecovered: () => logger.info('rate limit: reconciling counts with the other replicas again'),
            },
          }
        : {}),
    });
    // Counted in memory by the store, which answers synchronously (src/rate-limit.ts); Redis only reconciles.
    // The plugin answers every refused request (429, Retry-After, onExceeded). An allowed request is counted by
    // a synchronous hook on the same counter and the same key instead of the plugin's async path, which cost
    // ~7-9 µs of a ~50 µs JWKS request (bench/NOTES.md); `limitedBy` only hands the plugin the refusals.
    await app.register(rateLimit, {
      global: false,
      hook: 'onRequest',
      max,
      timeWindow: windowMs,
      store: rateLimitStore(limit),
      addHeadersOnExceeding: { 'x-ratelimit-limit': false, 'x-ratelimit-remaining': false, 'x-ratelimit-reset': false },
      onExceeded: () => sinks.rateLimited(),
      errorResponseBuilder: (_request, context) =>
        Errors.rateLimited(`limit of ${context.max} requests per ${context.after} reached; retry after the Retry-After delay`),
    });
    const hook = limitedBy(limit, max, app.rateLimit());
    addRouteHooks(app, 'onRequest', (route) => (route.config?.rateLimit === false ? undefined : hook));
    // Unknown paths count against the same budget, or a scanner could send them without limit.
    registerProblemHandlers(app, { preHandler: hook, logger });
  } else {
    registerProblemHandlers(app, { logger });
  }
  await app.register(healthRoutes(source));
  await app.register(jwksRoutes(settings, source, sinks.request));
  await app.ready();
  return { app, ...(limit ? { limit } : {}) };
}

/** Options both ports share: proxies, request ids, no request logging, connection limits, client errors. */
export function fastifyOptions(trustProxy: Config['trustProxy'], limits: Config['connectionLimits']): FastifyHttpOptions<Server> {
  return {
    // Fastify accepts a hop count at run time although its type omits it.
    trustProxy: trustProxy as FastifyServerOptions['trustProxy'],
    requestIdHeader: 'x-request-id',
    genReqId: requestIds(),
    // No automatic request logging: the public port answers Acumatica on every token request, and on the
    // internal port each signature has its audit line; logResponses() (src/app.ts) writes the other lines.
    logController: new LogController({ disableRequestLogging: true }),
    ...connectionLimits(limits),
    clientErrorHandler: sendClientError,
    return503OnClosing: true,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
  };
}

/** Request ids: a random prefix per process and a counter (a UUID per request cost ~1% of the JWKS path). */
function requestIds(): () => string {
  const prefix = randomBytes(6).toString('hex');
  let next = 0;
  return () => `${prefix}-${(next++).toString(36)}`;
}

// A request (headers and body) must be complete within requestTimeout; Node checks open requests every
// connectionsCheckingInterval, so that is the slack on it. An idle socket closes after connectionTimeout, an
// idle kept-alive one after keepAliveTimeout: by default longer than the idle timeout of common load balancers
// (60 s), so that the balancer, not us, closes a pooled connection, and never mid-request.
function connectionLimits({ requestTimeoutMs, keepAliveTimeoutMs, connectionTimeoutMs, maxHeaderSize }: Config['connectionLimits']): Partial<FastifyHttpOptions<Server>> {
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

type RouteHook = (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => void;

/**
 * The public port's rate-limit hook: counts the request under the key @fastify/rate-limit's default key
 * generator gives (the client address; an IPv6 address by its /64) and lets it through when within the limit.
 * A refused request (not counted again: the counter answers max + 1 without counting) goes to the plugin's own
 * handler, whose store reads the same counter and which answers 429 with Retry-After.
 */
function limitedBy(limit: WindowCounter, max: number, refuse: (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>): RouteHook {
  return (request, reply, done) => {
    const ip = request.ip;
    if (limit.hit(ip.includes(':') ? normalizeIP(ip) : ip) <= max) return done();
    refuse(request, reply).then(() => done(), done);
  };
}
type SendHook = (request: FastifyRequest, reply: FastifyReply, payload: unknown, done: (err: Error | null, payload: unknown) => void) => void;
interface RouteHooks {
  onRequest: RouteHook;
  onResponse: RouteHook;
  onSend: SendHook;
}

/** Adds a hook to every route registered from now on (none when `hookFor` gives none). */
export function addRouteHooks<K extends keyof RouteHooks>(app: FastifyInstance, kind: K, hookFor: (route: RouteOptions) => RouteHooks[K] | undefined): void {
  app.addHook('onRoute', (route) => {
    const hook = hookFor(route);
    if (!hook) return;
    const existing = route[kind] as RouteHooks[K] | RouteHooks[K][] | undefined;
    (route as unknown as Record<K, RouteHooks[K][]>)[kind] = existing === undefined ? [hook] : Array.isArray(existing) ? [...existing, hook] : [existing, hook];
  });
}

export function countResponses(app: FastifyInstance, count: (route: string, status: number) => void): void {
  // In onSend, per route with its URL bound (request.routeOptions builds an object per access), and
  // synchronous: an onResponse hook would make Fastify attach response listeners to every request of the
  // public port, and an async hook costs a promise and a microtask. Unmatched URLs share one label, so that
  // scanners cannot grow the label set without bound.
  addRouteHooks(app, 'onSend', (route) => {
    const url = route.url;
    return (_request, reply, payload, done) => {
      count(url, reply.statusCode);
      done(null, payload);
    };
  });
  app.addHook('onSend', (request, reply, payload, done) => {
    if (request.is404) count('unmatched', reply.statusCode);
    done(null, payload);
  });
}
