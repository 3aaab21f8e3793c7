// Test helper: a real OAuth 2.0 authorization server (panva's oidc-provider v9) on 127.0.0.1,
// used to prove that the client assertions (RFC 7523, private_key_jwt) we sign are accepted.
//
// What oidc-provider v9 does with a client assertion at the token endpoint
// (node_modules/oidc-provider/lib/shared/jwt_client_auth.js):
//   - header.alg must equal the client's token_endpoint_auth_signing_alg (if registered), otherwise
//     be one of enabledJWA.clientAuthSigningAlgValues (default RS256, PS256, ES256, Ed25519, EdDSA);
//   - exp and jti are required, iss must equal client_id; sub (also required) selects the client;
//   - aud must be, or (if an array) contain, one of: the issuer, the token endpoint URL, the URL of
//     the endpoint being called. Exact string comparison, so trailing-slash variants are rejected;
//     an array with extra, unrelated audiences is accepted;
//   - signature checked against the client's JWKS (fetched from jwks_uri), then exp/nbf/iat with
//     clockTolerance (default 15 s); no maximum lifetime, iat is optional; typ is not checked;
//   - the hook `assertJwtClientAuthClaimsAndHeader` runs (by default it only enforces aud === issuer
//     under the FAPI 2.0 profile);
//   - finally the jti is recorded (ReplayDetection, keyed by iss + jti, kept until exp + clockTolerance)
//     and a reused one fails with 401 invalid_client.
// v9 has no built-in "strict audience" (RFC 7523bis) setting for client assertions; the 'strict'
// audienceMode below is implemented by this helper through the `assertJwtClientAuthClaimsAndHeader`
// hook.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair } from 'jose';

export interface OidcServerClient {
  clientId: string;
  /** URL the provider fetches the client's public JWKS from (http://127.0.0.1:... is fine). */
  jwksUri: string;
  /** token_endpoint_auth_signing_alg; when set, assertions signed with any other alg are rejected. */
  alg?: string;
}

export type AudienceMode = 'token-endpoint' | 'strict';

export interface StartOidcServerOptions {
  clients: OidcServerClient[];
  /**
   * 'token-endpoint' (default): oidc-provider's own rule. aud must be (or, as an array, contain)
   *   the token endpoint URL or the issuer, compared exactly.
   * 'strict': RFC 7523bis rule, applied by this helper (oidc-provider v9 has no such setting):
   *   aud must be a single string equal to the issuer; the token endpoint URL and arrays are rejected.
   */
  audienceMode?: AudienceMode;
  /**
   * Extra scope values the provider recognises (added to its defaults, openid and offline_access).
   * Requested scopes the provider does not recognise are silently left out of the token.
   */
  scopes?: string[];
  /** Lifetime (expires_in) of client_credentials access tokens, in seconds; default 600. */
  accessTokenTtl?: number;
}

/** A rejected token request as oidc-provider reported it internally (the detail is not in the response). */
export interface OidcServerError {
  error: string;
  description?: string;
  /** e.g. 'client assertion tokens must only be used once' */
  detail?: string;
  /** Messages of the error's cause chain, e.g. a failed JWKS fetch. */
  causes: string[];
}

export interface OidcServer {
  /** e.g. http://127.0.0.1:PORT (no trailing slash) */
  issuer: string;
  /** token_endpoint from the provider's discovery document */
  tokenEndpoint: string;
  /** POST a client_credentials grant with client_assertion; returns status and parsed JSON body */
  clientCredentials(opts: { clientId: string; assertion: string; scope?: string }): Promise<{ status: number; body: any }>;
  /** Token endpoint errors seen so far, oldest first (useful to assert why an assertion failed). */
  readonly errors: readonly OidcServerError[];
  /** POSTs to the token endpoint received so far (answered or not). */
  readonly tokenRequests: number;
  /**
   * Marks the client's cached JWKS as stale. oidc-provider caches a fetched JWKS for
   * max(60 s, Cache-Control max-age, Expires) and refetches it only when an assertion's key is
   * not found (or does not verify) AND the cache is stale; so within those 60 s a key that was
   * not published at the first fetch is rejected. Call this to simulate the cache expiring.
   * (Sets the internal `freshUntil` of the client's key store: an oidc-provider internal.)
   */
  expireJwksCache(clientId: string): Promise<void>;
  close(): Promise<void>;
}

// ---- the small part of oidc-provider's API used here (the package ships no type declarations) ----

interface ProviderError extends Error {
  error?: string;
  error_description?: string;
  error_detail?: string;
}

interface ProviderClient {
  /** Lazily created, cached key store of the client's jwks_uri keys. */
  readonly asymmetricKeyStore: { freshUntil?: number };
}

interface ProviderInstance {
  readonly issuer: string;
  readonly Client: { find(clientId: string): Promise<ProviderClient | undefined> };
  /** Koa's flag: do not print errors that reach the application's default error handler. */
  silent: boolean;
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
  on(event: 'grant.error' | 'server_error', listener: (ctx: unknown, err: ProviderError) => void): this;
}

interface OidcProviderModule {
  Provider: new (issuer: string, configuration: Record<string, unknown>) => ProviderInstance;
  errors: { InvalidClientAuth: new (detail: string) => ProviderError };
}

type ProviderFetch = (url: string | URL, options: RequestInit & { dispatcher?: unknown }) => Promise<Response>;

/** oidc-provider prints its notices with console.info / console.warn, prefixed like this. */
const PROVIDER_NOTICE = /oidc-provider (NOTICE|WARNING):/;

/**
 * Runs fn with oidc-provider's console notices dropped (other console output passes through).
 * Used around the import (on Node 20 it warns "Unsupported runtime. Use Node.js v22.x LTS", once
 * per process) and the constructor (it warns about the development-only in-memory adapter, which
 * is what we want here).
 */
async function withoutProviderNotices<T>(fn: () => T | Promise<T>): Promise<T> {
  const { info, warn } = console;
  const filter = (original: (...args: unknown[]) => void) => (...args: unknown[]): void => {
    if (typeof args[0] === 'string' && PROVIDER_NOTICE.test(args[0])) return;
    original.apply(console, args);
  };
  console.info = filter(info);
  console.warn = filter(warn);
  try {
    return await fn();
  } finally {
    console.info = info;
    console.warn = warn;
  }
}

let providerModule: Promise<OidcProviderModule> | undefined;

function loadOidcProvider(): Promise<OidcProviderModule> {
  // A non-literal specifier: the package has no .d.ts, and this keeps it typed through the local
  // OidcProviderModule interface rather than an implicit any (or stale @types for older versions).
  const specifier: string = 'oidc-provider';
  providerModule ??= withoutProviderNotices(() => import(specifier) as Promise<OidcProviderModule>);
  return providerModule;
}

function isLoopback(url: string | URL): boolean {
  const { hostname } = new URL(url);
  return hostname === 'localhost' || hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(hostname);
}

/**
 * oidc-provider fetches jwks_uri (and other client URLs) through a `fetch` hook, passing an undici
 * `dispatcher` that destroys every connection to a special-use address, 127.0.0.0/8 and ::1
 * included (SSRF protection, lib/helpers/fetch_request.js); the JWKS fetch then fails with
 * "client JSON Web Key Set failed to be refreshed". The http: scheme itself is allowed for
 * jwks_uri (it only has to be a web URI). So, for loopback URLs only, drop that dispatcher and
 * use Node's default one; everything else keeps the protection. The provider's options (its
 * 2.5 s timeout signal, headers) are kept.
 */
const loopbackFetch: ProviderFetch = (url, options) => {
  if (!isLoopback(url)) return globalThis.fetch(url, options);
  const init: RequestInit & { dispatcher?: unknown } = { ...options };
  delete init.dispatcher;
  return globalThis.fetch(url, init);
};

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!server.listening) {
      resolve();
      return;
    }
    server.close((err) => (err ? reject(err) : resolve()));
    // Keep-alive connections (our fetch client's pool) would otherwise hold close() open.
    server.closeAllConnections();
  });
}

function causeMessages(err: unknown): string[] {
  const out: string[] = [];
  let cause = err instanceof Error ? err.cause : undefined;
  while (cause instanceof Error && out.length < 10) {
    const { error_description: description } = cause as ProviderError;
    out.push(description === undefined ? cause.message : `${cause.message}: ${description}`);
    cause = cause.cause;
  }
  return out;
}

export async function startOidcServer(opts: StartOidcServerOptions): Promise<OidcServer> {
  const audienceMode: AudienceMode = opts.audienceMode ?? 'token-endpoint';
  const { Provider, errors: providerErrors } = await loadOidcProvider();

  // The provider's own signing key (it signs nothing here that we check, but without one it falls
  // back to development keys with a console warning). RS256 because the default
  // id_token_signed_response_alg of every client is RS256 and client validation requires a key for it.
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const providerJwk = { ...(await exportJWK(privateKey)), kid: `op-${randomUUID()}`, alg: 'RS256', use: 'sig' };

  // Listen first: the issuer must contain the port.
  const server = createServer();
  const port = await listen(server);
  const issuer = `http://127.0.0.1:${port}`;

  const configuration: Record<string, unknown> = {
    clients: opts.clients.map((client) => ({
      client_id: client.clientId,
      token_endpoint_auth_method: 'private_key_jwt',
      ...(client.alg === undefined ? {} : { token_endpoint_auth_signing_alg: client.alg }),
      jwks_uri: client.jwksUri,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    })),
    jwks: { keys: [providerJwk] },
    features: {
      clientCredentials: { enabled: true },
      // Not needed (no end-user flows) and it warns when used.
      devInteractions: { enabled: false },
    },
    fetch: loopbackFetch,
    // Set explicitly: the defaults print a notice the first time they are used.
    ...(opts.scopes === undefined ? {} : { scopes: ['openid', 'offline_access', ...opts.scopes] }),
    ttl: { AccessToken: 600, ClientCredentials: opts.accessTokenTtl ?? 600 },
    clientBasedCORS: () => false,
    // The default in-memory adapter (a fresh store per Provider) is kept; it also holds the
    // ReplayDetection entries (seen jti values). Note it is an LRU of 1000 entries in total.
    ...(audienceMode === 'strict'
      ? {
          // RFC 7523bis: the audience of a client assertion is the issuer identifier, a single string.
          // Runs after oidc-provider's own aud check (issuer | token endpoint) and the signature check.
          assertJwtClientAuthClaimsAndHeader: async (_ctx: unknown, claims: { aud?: unknown }): Promise<void> => {
            if (typeof claims.aud !== 'string' || claims.aud !== issuer) {
              throw new providerErrors.InvalidClientAuth('audience (aud) must be a single string equal to the issuer identifier');
            }
          },
        }
      : {}),
  };

  let provider: ProviderInstance;
  try {
    provider = await withoutProviderNotices(() => new Provider(issuer, configuration));
  } catch (err) {
    await closeServer(server);
    throw err;
  }
  provider.silent = true;

  const seenErrors: OidcServerError[] = [];
  const record = (_ctx: unknown, err: ProviderError): void => {
    const entry: OidcServerError = { error: err.error ?? err.message, causes: causeMessages(err) };
    if (err.error_description !== undefined) entry.description = err.error_description;
    if (err.error_detail !== undefined) entry.detail = err.error_detail;
    seenErrors.push(entry);
  };
  provider.on('grant.error', record);
  provider.on('server_error', record);

  const handle = provider.callback();
  let tokenPath: string | undefined;
  let tokenRequests = 0;
  server.on('request', (req, res) => {
    if (req.method === 'POST' && tokenPath !== undefined && req.url?.split('?')[0] === tokenPath) tokenRequests++;
    handle(req, res);
  });

  let tokenEndpoint: string;
  try {
    // Static clients are only validated when first looked up; do it now so a bad registration
    // fails here rather than as an opaque error on the first token request.
    for (const { clientId } of opts.clients) {
      if ((await provider.Client.find(clientId)) === undefined) throw new Error(`client ${clientId} not registered`);
    }

    const res = await fetch(`${issuer}/.well-known/openid-configuration`, { headers: { accept: 'application/json' } });
    const discovery = (await res.json()) as { issuer?: unknown; token_endpoint?: unknown };
    if (res.status !== 200 || discovery.issuer !== issuer || typeof discovery.token_endpoint !== 'string') {
      throw new Error(`unexpected discovery response (${res.status}): ${JSON.stringify(discovery)}`);
    }
    tokenEndpoint = discovery.token_endpoint;
    tokenPath = new URL(tokenEndpoint).pathname;
  } catch (err) {
    await closeServer(server);
    throw err;
  }

  let closing: Promise<void> | undefined;

  return {
    issuer,
    tokenEndpoint,
    errors: seenErrors,
    get tokenRequests() {
      return tokenRequests;
    },
    async clientCredentials({ clientId, assertion, scope }) {
      const form = new URLSearchParams({
        grant_type: 'client_credentials',
        client_id: clientId,
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: assertion,
      });
      if (scope !== undefined) form.set('scope', scope);
      const res = await fetch(tokenEndpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: form,
      });
      const text = await res.text();
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        // not JSON: return the raw text
      }
      return { status: res.status, body };
    },
    async expireJwksCache(clientId) {
      const client = await provider.Client.find(clientId);
      if (client === undefined) throw new Error(`unknown client ${clientId}`);
      client.asymmetricKeyStore.freshUntil = 0;
    },
    close() {
      closing ??= closeServer(server);
      return closing;
    },
  };
}
