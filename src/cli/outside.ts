// What the CLI fetches as a consumer would: a GET that never follows redirects and reads a bounded body, and
// an authorization server's discovery document (OpenID Connect Discovery, then RFC 8414).
import { fetchFailure, readBounded } from '../lib/bounded-fetch.js';

export class OutsideFetchError extends Error {
  /** 'timeout' | 'network_error' | 'invalid_url' */
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'OutsideFetchError';
    this.code = code;
  }
}

export interface Fetched {
  url: string;
  status: number;
  headers: Headers;
  /** At most maxBytes + 1 bytes: `truncated` tells whether there was more. */
  body: Buffer;
  truncated: boolean;
  /** From sending the request to the end of the body. */
  elapsedMs: number;
  /** The local clock halfway between sending the request and receiving the headers, to compare with `Date`. */
  localMidpointMs: number;
}

export interface FetchOptions {
  timeoutMs: number;
  maxBytes: number;
  accept?: string;
}

export async function fetchOutside(url: string, options: FetchOptions): Promise<Fetched> {
  const started = Date.now();
  const startedMono = performance.now();
  try {
    const response = await fetch(url, {
      headers: { accept: options.accept ?? 'application/json' },
      redirect: 'manual',
      signal: AbortSignal.timeout(options.timeoutMs),
    });
    const localMidpointMs = started + (performance.now() - startedMono) / 2;
    const { body, truncated } = await readBounded(response, options.maxBytes);
    return { url, status: response.status, headers: response.headers, body, truncated, elapsedMs: performance.now() - startedMono, localMidpointMs };
  } catch (err) {
    const { code, reason } = fetchFailure(err);
    if (code === 'timeout') throw new OutsideFetchError('timeout', `GET ${url}: no answer within ${options.timeoutMs} ms`, { cause: err });
    throw new OutsideFetchError('network_error', `GET ${url} failed: ${reason}`, { cause: err });
  }
}

/** Offset in seconds of a response's Date header from the local clock (positive: the remote clock is ahead). */
export function dateOffsetSeconds(fetched: { headers: Headers; localMidpointMs: number }): number | undefined {
  const date = Date.parse(fetched.headers.get('date') ?? '');
  // Date has a resolution of one second and is truncated: half a second is its expected bias.
  return Number.isNaN(date) ? undefined : (date + 500 - fetched.localMidpointMs) / 1000;
}

export interface DiscoveryDocument {
  issuer?: unknown;
  token_endpoint?: unknown;
  token_endpoint_auth_methods_supported?: unknown;
  token_endpoint_auth_signing_alg_values_supported?: unknown;
  [name: string]: unknown;
}

export interface Discovery {
  /** The URL the document was read from. */
  url: string;
  document: DiscoveryDocument;
  fetched: Fetched;
}

export class DiscoveryError extends Error {
  readonly code = 'discovery_failed';
  constructor(message: string) {
    super(message);
    this.name = 'DiscoveryError';
  }
}

/** The discovery URLs of an issuer, in the order they are tried. */
export function discoveryUrls(issuer: string): string[] {
  const url = new URL(issuer);
  const path = url.pathname.replace(/\/+$/, '');
  return [
    `${url.origin}${path}/.well-known/openid-configuration`,
    `${url.origin}/.well-known/oauth-authorization-server${path}`,
  ];
}

/** Reads the issuer's discovery document; throws DiscoveryError naming every URL tried and what it answered. */
export async function discover(issuer: string, timeoutMs: number): Promise<Discovery> {
  const tried: string[] = [];
  for (const url of discoveryUrls(issuer)) {
    let fetched: Fetched;
    try {
      fetched = await fetchOutside(url, { timeoutMs, maxBytes: 512 * 1024 });
    } catch (err) {
      tried.push(`${url}: ${(err as Error).message}`);
      continue;
    }
    if (fetched.status !== 200) {
      const location = fetched.headers.get('location');
      tried.push(`${url}: HTTP ${fetched.status}${location ? ` (redirect to ${location}, not followed)` : ''}`);
      continue;
    }
    let document: unknown;
    try {
      document = JSON.parse(fetched.body.toString('utf8'));
    } catch {
      tried.push(`${url}: the body is not JSON`);
      continue;
    }
    if (typeof document !== 'object' || document === null || Array.isArray(document)) {
      tried.push(`${url}: the body is not a JSON object`);
      continue;
    }
    return { url, document: document as DiscoveryDocument, fetched };
  }
  throw new DiscoveryError(`no discovery document for issuer ${issuer}: ${tried.join('; ')}`);
}
