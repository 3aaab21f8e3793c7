// Bearer-token authentication of internal API clients: tokens are compared by SHA-256 in constant time.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyBaseLogger, FastifyRequest } from 'fastify';
import { LRUCache } from 'lru-cache';
import type { ClientPolicy } from '../../config.js';
import { Errors } from '../../errors.js';

declare module 'fastify' {
  interface FastifyRequest {
    apiClient: ClientPolicy;
  }
}

export function findClient(clients: readonly ClientPolicy[], token: string): ClientPolicy | undefined {
  const presented = createHash('sha256').update(token).digest();
  let found: ClientPolicy | undefined;
  for (const client of clients) {
    // Every client is compared, so the time taken does not depend on which one (if any) matches.
    if (timingSafeEqual(presented, client.tokenSha256) && !found) found = client;
  }
  return found;
}

export interface AuthFailureLimit {
  max: number;
  windowMs: number;
  onLimited?: () => void;
  /** Told once per address when it reaches the limit (the audit trail records it). */
  onLockout?: (address: string) => void;
}

/** Authenticates every request; an address that keeps presenting bad tokens is refused for a while (429). */
export function authenticate(clients: readonly ClientPolicy[], limit: AuthFailureLimit, logger: FastifyBaseLogger) {
  const failures = new LRUCache<string, { count: number }>({ max: 10_000, ttl: limit.windowMs, noUpdateTTL: true });
  // Tokens that matched, for a few seconds: a client asks before every token request. Only matches are kept,
  // so unknown tokens always take the constant-time path; the configuration cannot change at run time.
  const recent = new LRUCache<string, ClientPolicy>({ max: 1000, ttl: 10_000 });

  function refuseIfLimited(request: FastifyRequest): void {
    const seen = failures.get(request.ip);
    if (!seen || seen.count < limit.max) return;
    limit.onLimited?.();
    const retryAfter = Math.max(1, Math.ceil(failures.getRemainingTTL(request.ip) / 1000));
    throw Errors.rateLimited(`too many failed authentications from this address; retry in ${retryAfter}s`, { headers: { 'retry-after': String(retryAfter) } });
  }

  function recordFailure(request: FastifyRequest): void {
    const seen = failures.get(request.ip);
    if (seen) seen.count += 1;
    else failures.set(request.ip, { count: 1 });
    if ((seen?.count ?? 1) === limit.max) {
      if (limit.onLockout) limit.onLockout(request.ip);
      else logger.warn({ audit: 'auth_lockout', address: request.ip, reqId: request.id }, 'internal API: too many failed authentications');
    }
  }

  return async function authenticateRequest(request: FastifyRequest): Promise<void> {
    refuseIfLimited(request);
    const header = request.headers.authorization;
    if (!header) {
      recordFailure(request);
      throw Errors.missingToken(undefined, { headers: { 'www-authenticate': 'Bearer realm="jwks-signer"' } });
    }
    const match = /^Bearer[ ]+([\x21-\x7e]+)[ ]*$/i.exec(header);
    const token = match?.[1];
    let client = token === undefined ? undefined : recent.get(token);
    if (token !== undefined && client === undefined) {
      client = findClient(clients, token);
      if (client) recent.set(token, client);
    }
    if (!client) {
      recordFailure(request);
      logger.warn({ reason: match ? 'unknown_token' : 'malformed_header', reqId: request.id }, 'internal API authentication failed');
      throw Errors.invalidToken(undefined, { headers: { 'www-authenticate': 'Bearer realm="jwks-signer", error="invalid_token"' } });
    }
    request.apiClient = client;
  };
}
