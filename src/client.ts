// A typed client of the internal signing API for internal apps (`jwks-signer/client`); no dependencies but fetch.

/** Every `code` the service answers with (application/problem+json). */
export const PROBLEM_CODES = [
  'invalid_request',
  'invalid_json',
  'reserved_claim',
  'token_too_large',
  'invalid_key',
  'bad_request',
  'malformed_request',
  'missing_token',
  'invalid_token',
  'scope_denied',
  'key_set_denied',
  'client_id_denied',
  'subject_denied',
  'audience_denied',
  'ttl_denied',
  'extra_claims_denied',
  'token_endpoint_denied',
  'not_found',
  'unknown_key_set',
  'key_not_found',
  'next_key_not_ready',
  'certificate_unavailable',
  'key_exists',
  'rotation_in_progress',
  'request_timeout',
  'payload_too_large',
  'unsupported_media_type',
  'rate_limited',
  'headers_too_large',
  'internal_error',
  'no_active_key',
  'store_unavailable',
  'token_endpoint_error',
  'token_endpoint_unreachable',
  'token_endpoint_invalid_response',
  'token_endpoint_timeout',
] as const;
export type ProblemCode = (typeof PROBLEM_CODES)[number];

/** Codes of failures without an answer from the service: no connection or timeout, or an answer that is not the API's. */
export type ClientErrorCode = 'network_error' | 'invalid_response';

export interface Problem {
  type: string;
  title: string;
  status: number;
  code: ProblemCode;
  detail?: string;
  errors?: Array<{ path: string; message: string }>;
  /** Token broker errors: what the token endpoint answered (its HTTP status and OAuth error). */
  upstream?: { status?: number; error?: string; error_description?: string; error_uri?: string };
}

/** A failed call: `code` is the service's problem code, or a ClientErrorCode when the service did not answer. */
export class JwksSignerError extends Error {
  readonly code: ProblemCode | ClientErrorCode;
  /** HTTP status; undefined for network errors. */
  readonly status: number | undefined;
  readonly problem: Problem | undefined;

  constructor(code: ProblemCode | ClientErrorCode, message: string, options: { status?: number; problem?: Problem; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'JwksSignerError';
    this.code = code;
    this.status = options.status;
    this.problem = options.problem;
  }
}

// The request and key shapes are the service's own (type-only imports: nothing of the service is loaded).
import type { Algorithm } from './config.js';
import type { KeyState, PublicJwk } from './keys/types.js';
import type { AssertionRequest, JwtRequest, Typ } from './signing/token-service.js';
import type { TokenBrokerRequest as TokensRequest } from './oauth/token-broker.js';
import type { GrantType } from './oauth/token-request.js';

export type { Algorithm, AssertionRequest, GrantType, JwtRequest, KeyState, PublicJwk, TokensRequest, Typ };
export type X5tHeader = 'x5t' | 'x5t#S256';



export interface AssertionResult {
  client_assertion: string;
  client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
  kid: string;
  alg: Algorithm;
  jti: string;
  /** Seconds since the epoch. */
  expires_at: number;
}

export interface JwtResult {
  jwt: string;
  kid: string;
  alg: Algorithm;
  jti: string;
  expires_at: number;
}

/** The token endpoint's token response (RFC 6749 section 5.1), as it sent it: other members pass through. */
export interface TokensResult {
  access_token: string;
  token_type: string;
  /** Seconds. */
  expires_in?: number;
  scope?: string;
  refresh_token?: string;
  id_token?: string;
  [member: string]: unknown;
}


export interface KeyDescription {
  kid: string;
  state: KeyState;
  alg: Algorithm;
  published: boolean;
  created_at: string;
  activated_at?: string;
  retired_at?: string;
  revoked_at?: string;
  deleted_at?: string;
  public_jwk: PublicJwk;
  has_certificate: boolean;
}

export interface KeySetDescription {
  key_set: string;
  alg: Algorithm;
  generation: number;
  updated_at: string;
  active_kid: string;
  next_rotation_at?: string;
  keys: KeyDescription[];
}

export interface KeysResult {
  key_sets: KeySetDescription[];
}

export interface RotateRequest {
  key_set?: string;
  /** Rotate although the next key has been published for less than the pre-publish period. */
  force?: boolean;
  /** Rotate only if this key is still the active one, so that a retried call rotates once. */
  if_active_kid?: string;
}

export interface RotateResult extends KeySetDescription {
  rotated: boolean;
  events: string[];
}

export interface RevokeResult extends KeySetDescription {
  revoked: boolean;
  events: string[];
}

export interface ImportRequest {
  key_set?: string;
  /** PEM: PKCS#8, PKCS#1 or SEC1, optionally encrypted. Exactly one of private_key and pkcs12. */
  private_key?: string;
  /** Base64 PKCS#12 file. */
  pkcs12?: string;
  password?: string;
  /** PEM certificate of the key. */
  certificate?: string;
  state?: 'active' | 'next';
}

export interface ImportResult extends KeySetDescription {
  imported_kid: string;
  events: string[];
}

export interface ClientOptions {
  /** The internal port's base URL, e.g. http://jwks-signer.internal:8081 (a path prefix is kept). */
  url: string | URL;
  /** The API client's bearer token. */
  token: string;
  /** A fetch implementation; globalThis.fetch by default. */
  fetch?: typeof globalThis.fetch;
  /** Per-request timeout in milliseconds; 10 s by default. */
  timeoutMs?: number;
  /**
   * Timeout of tokens() calls; by default the larger of timeoutMs and 30 s, because the service may retry the
   * token endpoint for up to BROKER_TOTAL_TIMEOUT (20 s by default).
   */
  tokensTimeoutMs?: number;
}

export interface JwksSignerClient {
  /** POST /v1/assertions: an RFC 7523 client assertion (scope sign). */
  assertion(request: AssertionRequest): Promise<AssertionResult>;
  /** POST /v1/jwt: a general JWT for JWT bearer grants (scope sign). */
  jwt(request: JwtRequest): Promise<JwtResult>;
  /**
   * POST /v1/tokens: an access token from an allowed token endpoint (scope tokens). Token endpoint errors throw
   * JwksSignerError `token_endpoint_error` with the endpoint's OAuth error in `problem.upstream`.
   */
  tokens(request: TokensRequest): Promise<TokensResult>;
  keys: {
    /** GET /v1/keys: the key sets the client may administer (scope admin). */
    list(options?: { key_set?: string }): Promise<KeysResult>;
    /** POST /v1/keys/rotate: the next key becomes active (scope admin). */
    rotate(request?: RotateRequest): Promise<RotateResult>;
    /** POST /v1/keys/{kid}/revoke: the key leaves the JWKS and never signs again (scope admin). */
    revoke(kid: string, options?: { key_set?: string }): Promise<RevokeResult>;
    /** POST /v1/keys/import: adds an existing private key (scope admin). */
    import(request: ImportRequest): Promise<ImportResult>;
    /** GET /v1/keys/{kid}/certificate: the key's X.509 certificate as PEM. */
    certificate(kid: string, options?: { key_set?: string }): Promise<string>;
  };
}

function isProblem(value: unknown): value is Problem {
  const problem = value as Partial<Problem> | null;
  return typeof problem === 'object' && problem !== null && typeof problem.code === 'string' && typeof problem.status === 'number';
}

const query = (options?: { key_set?: string }) => (options?.key_set === undefined ? '' : `?key_set=${encodeURIComponent(options.key_set)}`);

export function createClient(options: ClientOptions): JwksSignerClient {
  const base = new URL(options.url).href.replace(/\/+$/, '');
  const fetchImpl = options.fetch ?? globalThis.fetch;
  const defaultTimeoutMs = options.timeoutMs ?? 10_000;
  const tokensTimeoutMs = options.tokensTimeoutMs ?? Math.max(defaultTimeoutMs, 30_000);

  async function call(method: 'GET' | 'POST', path: string, body?: unknown, timeoutMs = defaultTimeoutMs): Promise<Response> {
    const headers: Record<string, string> = { authorization: `Bearer ${options.token}`, accept: 'application/json, application/problem+json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    let response: Response;
    try {
      response = await fetchImpl(`${base}${path}`, {
        method,
        headers,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      const reason = err instanceof Error && err.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : ((err as Error).cause as Error | undefined)?.message ?? String(err);
      throw new JwksSignerError('network_error', `${method} ${base}${path} failed: ${reason}`, { cause: err });
    }
    if (response.ok) return response;
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    if (isProblem(parsed)) {
      throw new JwksSignerError(parsed.code, parsed.detail ?? parsed.title, { status: response.status, problem: parsed });
    }
    throw new JwksSignerError('invalid_response', `${method} ${path} answered ${response.status} without a problem document`, { status: response.status });
  }

  async function json<T>(method: 'GET' | 'POST', path: string, body?: unknown, timeoutMs?: number): Promise<T> {
    const response = await call(method, path, body, timeoutMs);
    try {
      return (await response.json()) as T;
    } catch (err) {
      throw new JwksSignerError('invalid_response', `${method} ${path} answered ${response.status} with a body that is not JSON`, { status: response.status, cause: err });
    }
  }

  return {
    assertion: (request) => json('POST', '/v1/assertions', request),
    jwt: (request) => json('POST', '/v1/jwt', request),
    tokens: (request) => json('POST', '/v1/tokens', request, tokensTimeoutMs),
    keys: {
      list: (listOptions) => json('GET', `/v1/keys${query(listOptions)}`),
      rotate: (request = {}) => json('POST', '/v1/keys/rotate', request),
      revoke: (kid, revokeOptions = {}) => json('POST', `/v1/keys/${encodeURIComponent(kid)}/revoke`, revokeOptions),
      import: (request) => json('POST', '/v1/keys/import', request),
      certificate: async (kid, certOptions) => (await call('GET', `/v1/keys/${encodeURIComponent(kid)}/certificate${query(certOptions)}`)).text(),
    },
  };
}
