// The token broker: signs the assertion, calls an allowed token endpoint and returns its token response;
// access tokens of client-only grants are cached in process memory, one upstream call per key at a time.
import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { BrokerConfig, ClientPolicy } from '../config.js';
import { Errors, type ServiceError, type UpstreamProblem } from '../errors.js';
import type { Audit } from '../audit.js';
import type { Clock } from '../keys/key-manager.js';
import type { Metrics } from '../metrics.js';
import { requireScope, type TokenService, type Typ } from '../signing/token-service.js';
import {
  type GrantType,
  isTokenResponse,
  JWT_BEARER_GRANT,
  postTokenRequest,
  type TokenEndpointAnswer,
  TokenRequestError,
  tokenRequestForm,
} from './token-request.js';

export interface TokenBrokerRequest {
  token_endpoint: string;
  client_id: string;
  grant_type: GrantType;
  scope?: string;
  /** The assertion's `aud`; default: token_endpoint as given. */
  audience?: string;
  key_set?: string;
  subject?: string;
  /** The grant's own form parameters (username, password, refresh_token, code, redirect_uri, code_verifier, resource, audience...). */
  parameters?: Record<string, string>;
  /** false: neither read nor join a cached or in-flight token (the fresh token still replaces the cached one). Default true. */
  cache?: boolean;
  typ?: Typ;
  x5t?: 'x5t' | 'x5t#S256';
}

/** `hit`: from the cache or another caller's in-flight request; `miss`: this call asked the endpoint; `bypass`: not cacheable or `cache: false`. */
export type CacheStatus = 'hit' | 'miss' | 'bypass';

export interface BrokeredToken {
  /** The endpoint's token response, as received. */
  body: string;
  cache: CacheStatus;
}

export type UpstreamOutcome = 'success' | 'oauth_error' | 'invalid_response' | 'timeout' | 'network_error';

/** Grants whose token depends only on the client (no user credential, no one-time code): their tokens are shared. */
const CACHEABLE_GRANTS: ReadonlySet<GrantType> = new Set<GrantType>(['client_credentials', JWT_BEARER_GRANT]);
const MIN_MARGIN_MS = 30_000;
const MAX_MARGIN_MS = 300_000;
const BACKOFF_BASE_MS = 250;
/** A retry is only made if at least this much of BROKER_TOTAL_TIMEOUT is left for it after the wait. */
const MIN_ATTEMPT_MS = 100;
const MAX_UPSTREAM_TEXT = 1024;
/** Token responses can reach 256 KiB each (MAX_RESPONSE_BYTES): the cache is bounded in bytes as well as entries. */
const MAX_CACHE_BYTES = 64 * 1024 * 1024;

interface CachedToken {
  body: string;
  freshUntil: number;
}

export interface TokenBrokerOptions {
  config: BrokerConfig;
  tokens: TokenService;
  clock: Clock;
  metrics?: Pick<Metrics, 'tokenRequest' | 'tokenCache'>;
  audit?: Pick<Audit, 'record'>;
  fetch?: typeof globalThis.fetch;
}

/** How long a token is served from the cache: its lifetime less 10% (at least 30 s, at most 5 min); undefined: not at all. */
export function freshForMs(expiresIn: unknown): number | undefined {
  const seconds = typeof expiresIn === 'number' ? expiresIn : typeof expiresIn === 'string' && /^\d+$/.test(expiresIn) ? Number(expiresIn) : NaN;
  if (!Number.isFinite(seconds) || seconds <= 0) return undefined;
  const lifetime = seconds * 1000;
  const fresh = lifetime - Math.min(MAX_MARGIN_MS, Math.max(MIN_MARGIN_MS, lifetime / 10));
  return fresh > 0 ? fresh : undefined;
}

function text(value: unknown): string | undefined {
  return typeof value === 'string' ? value.slice(0, MAX_UPSTREAM_TEXT) : undefined;
}

function upstreamError(endpoint: string, answer: TokenEndpointAnswer): ServiceError {
  const error = text(answer.json?.error);
  if (error === undefined) {
    return Errors.tokenEndpointInvalidResponse(`${endpoint} answered ${answer.status} (${answer.contentType || 'no content type'}) without a token response or an OAuth error`, {
      upstream: { status: answer.status },
    });
  }
  const upstream: UpstreamProblem = { status: answer.status, error };
  const description = text(answer.json?.error_description);
  const uri = text(answer.json?.error_uri);
  if (description !== undefined) upstream.error_description = description;
  if (uri !== undefined) upstream.error_uri = uri;
  return Errors.tokenEndpointError(`${endpoint} answered ${answer.status} ${error}`, { upstream });
}

function requestError(err: TokenRequestError): ServiceError {
  if (err.code === 'timeout') return Errors.tokenEndpointTimeout(err.message);
  if (err.code === 'network_error') return Errors.tokenEndpointUnreachable(err.message);
  return Errors.tokenEndpointInvalidResponse(err.message);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

export function createTokenBroker({ config, tokens, clock, metrics, audit, fetch }: TokenBrokerOptions) {
  const cache = new LRUCache<string, CachedToken>({ max: config.cacheMax, maxSize: MAX_CACHE_BYTES, sizeCalculation: (entry) => Math.max(1, entry.body.length) });
  const flights = new Map<string, Promise<string>>();

  function allowedEndpoint(client: ClientPolicy, raw: string): string {
    let href: string;
    try {
      href = new URL(raw).href;
    } catch {
      throw Errors.invalidRequest(`token_endpoint "${raw.slice(0, 200)}" is not a URL`);
    }
    if (!client.tokenEndpoints.has(href)) throw Errors.tokenEndpointDenied(`client "${client.name}" may not call ${href.slice(0, 300)}`);
    return href;
  }

  function grantParameters(req: TokenBrokerRequest, assertion: string): Record<string, string> {
    const parameters = req.parameters ?? {};
    return req.grant_type === JWT_BEARER_GRANT ? { ...parameters, assertion } : parameters;
  }

  function form(req: TokenBrokerRequest, assertion: string): URLSearchParams {
    try {
      return tokenRequestForm({
        grantType: req.grant_type,
        clientId: req.client_id,
        ...(req.grant_type === JWT_BEARER_GRANT ? {} : { clientAssertion: assertion }),
        ...(req.scope !== undefined ? { scope: req.scope } : {}),
        parameters: grantParameters(req, assertion),
      });
    } catch (err) {
      if (err instanceof TokenRequestError) throw Errors.invalidRequest(err.message);
      throw err;
    }
  }

  function cacheKey(client: ClientPolicy, endpoint: string, req: TokenBrokerRequest): string {
    const parameters = Object.entries(req.parameters ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const parts = [client.name, endpoint, req.client_id, req.grant_type, req.scope, req.subject, req.audience, req.key_set, req.typ, req.x5t, parameters];
    return createHash('sha256').update(JSON.stringify(parts)).digest('base64url');
  }

  /** One upstream call with retries; every attempt signs a fresh assertion (a new jti: servers reject replays). */
  async function requestToken(client: ClientPolicy, endpoint: string, req: TokenBrokerRequest): Promise<{ answer: TokenEndpointAnswer; sentAt: number }> {
    const deadline = performance.now() + config.totalTimeoutMs;
    for (let attempt = 0; ; attempt++) {
      const signed = await tokens.assertion(
        client,
        {
          client_id: req.client_id,
          audience: req.audience ?? req.token_endpoint,
          ...(req.subject !== undefined ? { subject: req.subject } : {}),
          ...(req.key_set !== undefined ? { key_set: req.key_set } : {}),
          ...(req.typ !== undefined ? { typ: req.typ } : {}),
          ...(req.x5t !== undefined ? { x5t: req.x5t } : {}),
          // Google and DocuSign read the scope from the JWT bearer assertion; RFC 7523 servers from the form (sent too).
          ...(req.grant_type === JWT_BEARER_GRANT && req.scope !== undefined ? { claims: { scope: req.scope } } : {}),
        },
        'tokens',
      );
      const record = (outcome: UpstreamOutcome, extra: { status?: number; error?: string } = {}) => {
        metrics?.tokenRequest(client.name, req.grant_type, outcome);
        audit?.record(
          { event: 'token_request', client: client.name, endpoint, client_id: req.client_id, grant: req.grant_type, attempt: attempt + 1, outcome, ...extra, jti: signed.jti },
          'token request',
        );
      };
      const sentAt = clock.now();
      let answer: TokenEndpointAnswer;
      try {
        answer = await postTokenRequest({
          endpoint,
          form: form(req, signed.token),
          timeoutMs: Math.max(1, Math.min(config.timeoutMs, deadline - performance.now())),
          ...(fetch ? { fetch } : {}),
        });
      } catch (err) {
        if (!(err instanceof TokenRequestError)) throw err;
        const retryable = err.code === 'timeout' || err.code === 'network_error';
        record(retryable ? (err.code as UpstreamOutcome) : 'invalid_response');
        if (!retryable || attempt >= config.retries) throw requestError(err);
        await backoff(attempt, 0, deadline, requestError(err));
        continue;
      }
      if (isTokenResponse(answer)) {
        record('success', { status: answer.status });
        return { answer, sentAt };
      }
      const error = text(answer.json?.error);
      record(error === undefined ? 'invalid_response' : 'oauth_error', { status: answer.status, ...(error !== undefined ? { error } : {}) });
      // A 4xx is the server's considered answer (invalid_client, invalid_grant...): asking again changes nothing.
      const retryable = answer.status === 429 || answer.status >= 500;
      if (!retryable || attempt >= config.retries) throw upstreamError(endpoint, answer);
      await backoff(attempt, answer.retryAfterMs ?? 0, deadline, upstreamError(endpoint, answer));
    }
  }

  /** Waits before the next attempt, or throws `failure` when that attempt could not be answered before the deadline. */
  async function backoff(attempt: number, retryAfterMs: number, deadline: number, failure: ServiceError): Promise<void> {
    const delay = Math.max(BACKOFF_BASE_MS * 2 ** attempt * (0.5 + Math.random() / 2), retryAfterMs);
    if (performance.now() + delay + MIN_ATTEMPT_MS >= deadline) throw failure;
    await sleep(delay);
  }

  async function fetchAndStore(client: ClientPolicy, endpoint: string, req: TokenBrokerRequest, key: string | undefined): Promise<string> {
    const { answer, sentAt } = await requestToken(client, endpoint, req);
    const fresh = key === undefined ? undefined : freshForMs(answer.json?.expires_in);
    if (key !== undefined && fresh !== undefined) cache.set(key, { body: answer.text, freshUntil: sentAt + fresh });
    return answer.text;
  }

  return {
    async token(client: ClientPolicy, req: TokenBrokerRequest): Promise<BrokeredToken> {
      requireScope(client, 'tokens');
      const endpoint = allowedEndpoint(client, req.token_endpoint);
      if (req.grant_type === JWT_BEARER_GRANT && req.parameters?.assertion !== undefined) {
        throw Errors.invalidRequest('"assertion" is signed by jwks-signer, not passed as a grant parameter');
      }
      form(req, 'unsigned');
      if (!CACHEABLE_GRANTS.has(req.grant_type)) {
        metrics?.tokenCache('bypass');
        return { body: await fetchAndStore(client, endpoint, req, undefined), cache: 'bypass' };
      }
      // The API client is part of the key: a token is only ever served to a caller whose policy signed for it.
      const key = cacheKey(client, endpoint, req);
      if (req.cache === false) {
        metrics?.tokenCache('bypass');
        return { body: await fetchAndStore(client, endpoint, req, key), cache: 'bypass' };
      }
      const cached = cache.get(key);
      if (cached && cached.freshUntil > clock.now()) {
        metrics?.tokenCache('hit');
        return { body: cached.body, cache: 'hit' };
      }
      if (cached) cache.delete(key);
      const inFlight = flights.get(key);
      if (inFlight) {
        metrics?.tokenCache('hit');
        return { body: await inFlight, cache: 'hit' };
      }
      metrics?.tokenCache('miss');
      const flight = fetchAndStore(client, endpoint, req, key).finally(() => flights.delete(key));
      flights.set(key, flight);
      return { body: await flight, cache: 'miss' };
    },
  };
}

export type TokenBroker = ReturnType<typeof createTokenBroker>;
