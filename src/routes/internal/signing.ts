// POST /v1/assertions and POST /v1/jwt: signed tokens under the caller's policy; private keys never leave.
import type { FastifyInstance, FastifyReply } from 'fastify';
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

/** A 200 answer's headers, in `writeHead`'s flat form; the length is appended per answer. */
const OK_HEADERS = ['cache-control', 'no-store', 'content-type', 'application/json; charset=utf-8', 'content-length'];

/**
 * Writes a 200 answer directly: Fastify's reply pipeline (serialiser, header object, onSend hooks) cost ~6 µs
 * of the main thread's ~120 per ES256 assertion, 3.8-5.3% of the assertions/s (bench/NOTES.md). The body is
 * the 200 schema's shape: the token, `jti` (a UUID), `alg` and the assertion type are made of characters JSON
 * needs no escape for; `kid` (an imported key may bring any string) is escaped. onSend does not run for a
 * hijacked reply, so the answer is counted here; errors still go through Fastify.
 */
function sendSigned(reply: FastifyReply, route: string, count: (route: string, status: number) => void, body: string): void {
  reply.hijack();
  reply.raw.writeHead(200, [...OK_HEADERS, String(Buffer.byteLength(body))]).end(body);
  count(route, 200);
}

// The 200 schemas document the answers (OpenAPI); sendSigned writes them.
export function signingRoutes(tokens: TokenService, count: (route: string, status: number) => void) {
  return async function register(app: FastifyInstance): Promise<void> {
    app.post<{ Body: AssertionBody }>('/v1/assertions', { schema: { ...docs.assertion, body: AssertionBodySchema, response: { 200: AssertionResponseSchema } } }, async (request, reply) => {
      const s = await tokens.assertion(request.apiClient, request.body);
      sendSigned(
        reply,
        '/v1/assertions',
        count,
        `{"client_assertion":"${s.token}","client_assertion_type":"${CLIENT_ASSERTION_TYPE}","kid":${JSON.stringify(s.kid)},"alg":"${s.alg}","jti":"${s.jti}","expires_at":${s.expiresAt}}`,
      );
    });

    app.post<{ Body: JwtBody }>('/v1/jwt', { schema: { ...docs.jwt, body: JwtBodySchema, response: { 200: JwtResponseSchema } } }, async (request, reply) => {
      const s = await tokens.jwt(request.apiClient, request.body);
      sendSigned(reply, '/v1/jwt', count, `{"jwt":"${s.token}","kid":${JSON.stringify(s.kid)},"alg":"${s.alg}","jti":"${s.jti}","expires_at":${s.expiresAt}}`);
    });
  };
}
