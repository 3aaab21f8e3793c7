// Bearer-token authentication of internal API clients: tokens are compared by SHA-256 in constant time.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
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

export function authenticate(clients: readonly ClientPolicy[]) {
  return async function authenticateRequest(request: FastifyRequest): Promise<void> {
    const header = request.headers.authorization;
    if (!header) throw Errors.missingToken(undefined, { headers: { 'www-authenticate': 'Bearer realm="jwks-signer"' } });
    const match = /^Bearer[ ]+([\x21-\x7e]+)[ ]*$/i.exec(header);
    const client = match ? findClient(clients, match[1]!) : undefined;
    if (!client) {
      request.log.warn({ reason: match ? 'unknown_token' : 'malformed_header' }, 'internal API authentication failed');
      throw Errors.invalidToken(undefined, { headers: { 'www-authenticate': 'Bearer realm="jwks-signer", error="invalid_token"' } });
    }
    request.apiClient = client;
  };
}
