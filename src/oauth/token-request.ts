// One OAuth 2.0 token request (RFC 6749 section 4, RFC 7523 client authentication): the form for each grant,
// and a POST that returns the endpoint's answer as it came. Shared by the token broker and the CLI.
import { fetchFailure, readBounded } from '../lib/bounded-fetch.js';
import { CLIENT_ASSERTION_TYPE } from '../signing/token-service.js';

export const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
export const GRANT_TYPES = ['client_credentials', 'password', 'refresh_token', 'authorization_code', JWT_BEARER_GRANT] as const;
export type GrantType = (typeof GRANT_TYPES)[number];

/** Form parameters each grant requires besides grant_type and the client authentication. */
export const GRANT_PARAMETERS: Record<GrantType, readonly string[]> = {
  client_credentials: [],
  password: ['username', 'password'],
  refresh_token: ['refresh_token'],
  authorization_code: ['code', 'redirect_uri'],
  [JWT_BEARER_GRANT]: ['assertion'],
};

/** Answers larger than this are cut off: no token response comes near it. */
export const MAX_RESPONSE_BYTES = 256 * 1024;

export class TokenRequestError extends Error {
  /** 'invalid_grant_parameters' | 'timeout' | 'network_error' | 'response_too_large' */
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TokenRequestError';
    this.code = code;
  }
}

export interface GrantInput {
  grantType: GrantType;
  clientId: string;
  /** The signed client assertion (private_key_jwt). Omitted for a JWT bearer grant that authenticates by its assertion alone. */
  clientAssertion?: string;
  scope?: string;
  /** The grant's own parameters (username, password, refresh_token, code, redirect_uri, code_verifier, assertion, resource, audience...). */
  parameters?: Record<string, string>;
}

/** The application/x-www-form-urlencoded body of a token request; throws if a parameter the grant needs is missing. */
export function tokenRequestForm(input: GrantInput): URLSearchParams {
  const parameters = input.parameters ?? {};
  const missing = GRANT_PARAMETERS[input.grantType].filter((name) => !parameters[name]);
  if (missing.length > 0) {
    throw new TokenRequestError('invalid_grant_parameters', `grant ${input.grantType} needs ${missing.join(', ')}`);
  }
  const form = new URLSearchParams({ grant_type: input.grantType });
  for (const [name, value] of Object.entries(parameters)) {
    if (['grant_type', 'client_id', 'client_assertion', 'client_assertion_type', 'client_secret', 'scope'].includes(name)) {
      throw new TokenRequestError('invalid_grant_parameters', `"${name}" is set by jwks-signer, not passed as a grant parameter`);
    }
    form.set(name, value);
  }
  if (input.scope) form.set('scope', input.scope);
  form.set('client_id', input.clientId);
  if (input.clientAssertion !== undefined) {
    form.set('client_assertion_type', CLIENT_ASSERTION_TYPE);
    form.set('client_assertion', input.clientAssertion);
  }
  return form;
}

export interface TokenEndpointAnswer {
  status: number;
  /** The parsed JSON body, when the body is a JSON object. */
  json?: Record<string, unknown>;
  /** The body as received (for printing an error verbatim). */
  text: string;
  contentType: string;
  /** Retry-After, in milliseconds, when the endpoint sent one (429, 503). */
  retryAfterMs?: number;
}

export interface PostTokenRequestOptions {
  endpoint: string | URL;
  form: URLSearchParams;
  timeoutMs?: number;
  fetch?: typeof globalThis.fetch;
  headers?: Record<string, string>;
}

function retryAfter(value: string | null): number | undefined {
  if (value === null) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

async function readLimited(response: Response): Promise<string> {
  const { body, truncated } = await readBounded(response, MAX_RESPONSE_BYTES);
  if (truncated) throw new TokenRequestError('response_too_large', `the token endpoint answered more than ${MAX_RESPONSE_BYTES} bytes`);
  return body.toString('utf8');
}

/**
 * POSTs the form and returns whatever the endpoint answered, success or OAuth error alike. Redirects are
 * not followed (a token endpoint that redirects is misconfigured, and following would resend the assertion).
 * Throws TokenRequestError only when there is no answer to return.
 */
export async function postTokenRequest(options: PostTokenRequestOptions): Promise<TokenEndpointAnswer> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const fetchImpl = options.fetch ?? globalThis.fetch;
  const endpoint = new URL(options.endpoint).href;
  let response: Response;
  let text: string;
  try {
    response = await fetchImpl(endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', ...options.headers },
      body: options.form.toString(),
      redirect: 'manual',
      signal: AbortSignal.timeout(timeoutMs),
    });
    text = await readLimited(response);
  } catch (err) {
    if (err instanceof TokenRequestError) throw err;
    const { code, reason } = fetchFailure(err);
    if (code === 'timeout') throw new TokenRequestError('timeout', `${endpoint} did not answer within ${timeoutMs} ms`, { cause: err });
    throw new TokenRequestError('network_error', `POST ${endpoint} failed: ${reason}`, { cause: err });
  }
  let json: Record<string, unknown> | undefined;
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) json = parsed as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  const answer: TokenEndpointAnswer = { status: response.status, text, contentType: response.headers.get('content-type') ?? '' };
  if (json) answer.json = json;
  const after = retryAfter(response.headers.get('retry-after'));
  if (after !== undefined) answer.retryAfterMs = after;
  return answer;
}

/** True when the answer is a successful token response (RFC 6749 section 5.1). */
export function isTokenResponse(answer: TokenEndpointAnswer): answer is TokenEndpointAnswer & { json: { access_token: string } } {
  return answer.status === 200 && typeof answer.json?.access_token === 'string';
}
