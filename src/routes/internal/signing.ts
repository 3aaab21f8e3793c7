// POST /v1/assertions and POST /v1/jwt: signed tokens under the caller's policy; private keys never leave.
import type { FastifyInstance } from 'fastify';
import { CLIENT_ASSERTION_TYPE, type TokenService } from '../../signing/token-service.js';
import { type AssertionBody, AssertionBodySchema, type JwtBody, JwtBodySchema } from './schemas.js';

export function signingRoutes(tokens: TokenService) {
  return async function register(app: FastifyInstance): Promise<void> {
    app.post<{ Body: AssertionBody }>('/v1/assertions', { schema: { body: AssertionBodySchema } }, async (request, reply) => {
      const signed = await tokens.assertion(request.apiClient, request.body);
      reply.header('cache-control', 'no-store');
      return {
        client_assertion: signed.token,
        client_assertion_type: CLIENT_ASSERTION_TYPE,
        kid: signed.kid,
        alg: signed.alg,
        jti: signed.jti,
        expires_at: signed.expiresAt,
      };
    });

    app.post<{ Body: JwtBody }>('/v1/jwt', { schema: { body: JwtBodySchema } }, async (request, reply) => {
      const signed = await tokens.jwt(request.apiClient, request.body);
      reply.header('cache-control', 'no-store');
      return { jwt: signed.token, kid: signed.kid, alg: signed.alg, jti: signed.jti, expires_at: signed.expiresAt };
    });
  };
}
