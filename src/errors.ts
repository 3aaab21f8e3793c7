// The error catalogue: every error a client can see, with its stable code and HTTP status.

export interface ProblemDetails {
  type: string;
  title: string;
  status: number;
  code: string;
  detail?: string;
  errors?: Array<{ path: string; message: string }>;
  /** What a token endpoint answered (token broker errors): its status and OAuth error members. */
  upstream?: UpstreamProblem;
}

export interface UpstreamProblem {
  status?: number;
  error?: string;
  error_description?: string;
  error_uri?: string;
}

export class ServiceError extends Error {
  readonly code: string;
  readonly statusCode: number;
  readonly title: string;
  readonly errors?: Array<{ path: string; message: string }>;
  readonly headers?: Record<string, string>;
  readonly upstream?: UpstreamProblem;

  constructor(
    code: string,
    statusCode: number,
    title: string,
    detail?: string,
    extra?: { errors?: Array<{ path: string; message: string }>; headers?: Record<string, string>; upstream?: UpstreamProblem },
  ) {
    super(detail ?? title);
    this.name = 'ServiceError';
    this.code = code;
    this.statusCode = statusCode;
    this.title = title;
    if (extra?.errors) this.errors = extra.errors;
    if (extra?.headers) this.headers = extra.headers;
    if (extra?.upstream) this.upstream = extra.upstream;
  }

  toProblem(): ProblemDetails {
    const problem: ProblemDetails = {
      type: `urn:jwks-signer:error:${this.code}`,
      title: this.title,
      status: this.statusCode,
      code: this.code,
    };
    if (this.message !== this.title) problem.detail = this.message;
    if (this.errors) problem.errors = this.errors;
    if (this.upstream) problem.upstream = this.upstream;
    return problem;
  }
}

type ErrorFactory = (detail?: string, extra?: ConstructorParameters<typeof ServiceError>[4]) => ServiceError;

function define(code: string, statusCode: number, title: string): ErrorFactory & { code: string } {
  const factory = (detail?: string, extra?: ConstructorParameters<typeof ServiceError>[4]) =>
    new ServiceError(code, statusCode, title, detail, extra);
  return Object.assign(factory, { code });
}

export const Errors = {
  invalidRequest: define('invalid_request', 400, 'The request does not match the schema'),
  invalidJson: define('invalid_json', 400, 'The request body is not valid JSON'),
  reservedClaim: define('reserved_claim', 400, 'A reserved claim cannot be set by the caller'),
  tokenTooLarge: define('token_too_large', 400, 'The signed token would exceed the size limit'),
  invalidKey: define('invalid_key', 400, 'The key or certificate cannot be used'),
  missingToken: define('missing_token', 401, 'An Authorization: Bearer token is required'),
  invalidToken: define('invalid_token', 401, 'The bearer token is not valid'),
  scopeDenied: define('scope_denied', 403, 'The client lacks the scope for this operation'),
  keySetDenied: define('key_set_denied', 403, 'The client may not use this key set'),
  clientIdDenied: define('client_id_denied', 403, 'The client may not sign for this client_id'),
  subjectDenied: define('subject_denied', 403, 'The client may not sign for this subject'),
  audienceDenied: define('audience_denied', 403, 'The client may not sign for this audience'),
  ttlDenied: define('ttl_denied', 403, 'The requested lifetime exceeds the policy'),
  extraClaimsDenied: define('extra_claims_denied', 403, 'The client may not add these claims'),
  tokenEndpointDenied: define('token_endpoint_denied', 403, 'The client may not call this token endpoint'),
  notFound: define('not_found', 404, 'Not found'),
  unknownKeySet: define('unknown_key_set', 404, 'No such key set'),
  keyNotFound: define('key_not_found', 404, 'No such key'),
  nextKeyNotReady: define('next_key_not_ready', 409, 'The next key has not been published long enough'),
  certificateUnavailable: define('certificate_unavailable', 409, 'The key has no certificate'),
  keyExists: define('key_exists', 409, 'The key is already in this key set'),
  rotationInProgress: define('rotation_in_progress', 409, 'Another rotation of this key set is in progress'),
  requestTimeout: define('request_timeout', 408, 'The request was not received in time'),
  payloadTooLarge: define('payload_too_large', 413, 'The request body is too large'),
  unsupportedMediaType: define('unsupported_media_type', 415, 'Content-Type must be application/json'),
  rateLimited: define('rate_limited', 429, 'Too many requests'),
  headersTooLarge: define('headers_too_large', 431, 'The request headers are too large'),
  malformedRequest: define('malformed_request', 400, 'The request is not valid HTTP'),
  internal: define('internal_error', 500, 'Internal error'),
  tokenEndpointError: define('token_endpoint_error', 502, 'The token endpoint refused the request'),
  tokenEndpointUnreachable: define('token_endpoint_unreachable', 502, 'The token endpoint could not be reached'),
  tokenEndpointInvalidResponse: define('token_endpoint_invalid_response', 502, 'The token endpoint did not answer with a token response or an OAuth error'),
  noActiveKey: define('no_active_key', 503, 'No active signing key is available'),
  storeUnavailable: define('store_unavailable', 503, 'The key store is unavailable'),
  tokenEndpointTimeout: define('token_endpoint_timeout', 504, 'The token endpoint did not answer in time'),
} as const;

/** A configuration error: stops start-up, names the variable. */
export class ConfigError extends Error {
  readonly variable: string;
  constructor(variable: string, message: string) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
    this.variable = variable;
  }
}

/** Stored keys cannot be decrypted or read: fatal at start-up, never answered by minting new keys. */
export class KeyStoreIntegrityError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'KeyStoreIntegrityError';
    this.code = code;
  }
}
