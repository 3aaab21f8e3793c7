// POST /v1/tokens: the token broker. The caller gets the token endpoint's answer; the assertion never leaves the service.
import type { FastifyInstance } from 'fastify';
import type { TokenBroker } from '../../oauth/token-broker.js';
import { type TokenBody, TokenBodySchema } from './schemas.js';

const docs = {
  summary: 'Get a token from a token endpoint',
  description:
    'Signs the client assertion (or, for the JWT bearer grant, the `assertion`) under the caller\'s policy (scope `tokens`), ' +
    "POSTs the token request to `token_endpoint` (one of the client's `tokenEndpoints`) and answers its token response as " +
    'received. Tokens of `client_credentials` and JWT bearer grants are cached until shortly before they expire; the ' +
    '`x-cache` header tells `hit`, `miss` or `bypass`. Token endpoint errors are 502 `token_endpoint_error` with the ' +
    'endpoint\'s `error` in `upstream`.',
  tags: ['tokens'],
};

export function tokenRoutes(broker: TokenBroker) {
  return async function register(app: FastifyInstance): Promise<void> {
    app.post<{ Body: TokenBody }>('/v1/tokens', { schema: { ...docs, body: TokenBodySchema } }, async (request, reply) => {
      const { body, cache } = await broker.token(request.apiClient, request.body);
      return reply.header('cache-control', 'no-store').header('pragma', 'no-cache').header('x-cache', cache).type('application/json').send(body);
    });
  };
}
