// POST /v1/assertions and POST /v1/jwt: signed tokens under the caller's policy; private keys never leave.
import type { FastifyInstance } from 'fastify';
import { CLIENT_ASSERTION_TYPE, type TokenService } from '../../signing/token-service.js';
import { type AssertionBody, AssertionBodySchema, AssertionResponseSchema, type JwtBody, JwtBodySchema, JwtResponseSchema } from './schemas.js';

const docs = {
  assertion: {
    summary: 'Sign a client assertion',
    description:
      'An RFC 7523 client assertion for the `client_assertion` form field (scope `sign`). Claims: `iss` = `client_id`, `sub` = ' +
      '`subject` or `client_id`, `aud` exactly as given, `iat`, `nbf`, `exp`, a fresh random `jti`. Header: `alg` and `kid` of the ' +
      'active key, `typ` (`JWT` unless `client-authentication+jwt` is asked for), `x5t` or `x5t#S256` on request. `ttl` is in ' +
      "seconds, default TOKEN_DEFAULT_TTL, capped by the client's policy and the key set.",
    tags: ['signing'],
  },
  jwt: {
    summary: 'Sign a JWT',
    description:
      'A general JWT for JWT bearer grants (scope `sign`). `iss` must be an allowed client id, `sub` (default `iss`) an allowed ' +
      'subject, every `aud` an allowed audience; `iat`, `nbf`, `exp` and `jti` are set by the service and cannot be supplied.',
    tags: ['signing'],
  },
};

// The 200 schemas make Fastify serialise the answers with a compiled serialiser (cheaper than JSON.stringify).
export function signingRoutes(tokens: TokenService) {
  return async function register(app: FastifyInstance): Promise<void> {
    app.post<{ Body: AssertionBody }>('/v1/assertions', { schema: { ...docs.assertion, body: AssertionBodySchema, response: { 200: AssertionResponseSchema } } }, async (request, reply) => {
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

    app.post<{ Body: JwtBody }>('/v1/jwt', { schema: { ...docs.jwt, body: JwtBodySchema, response: { 200: JwtResponseSchema } } }, async (request, reply) => {
      const signed = await tokens.jwt(request.apiClient, request.body);
      reply.header('cache-control', 'no-store');
      return { jwt: signed.token, kid: signed.kid, alg: signed.alg, jti: signed.jti, expires_at: signed.expiresAt };
    });
  };
}
