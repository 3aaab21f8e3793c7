// Baselines: a bare Fastify route returning the same JWKS bytes as the service (no logger, no plugins), and
// POST /v1/assertions: the HTTP floor of an assertion (Fastify parses the JSON body and serialises a JSON
// answer of the service's shape; no authentication, validation, signature, audit or metrics).
// Environment: PORT, BODY_FILE (the bytes to serve), ETAG (answered with 304 on a matching If-None-Match),
// RATE_LIMIT=1 to add @fastify/rate-limit with its in-memory store (limit never reached).
import { readFileSync } from 'node:fs';
import Fastify from 'fastify';

const body = readFileSync(process.env.BODY_FILE);
const etag = process.env.ETAG ?? '"bench"';
const app = Fastify();
if (process.env.RATE_LIMIT === '1') {
  const { default: rateLimit } = await import('@fastify/rate-limit');
  await app.register(rateLimit, { global: true, max: 10_000_000, timeWindow: 60_000 });
}
app.get('/.well-known/jwks.json', (request, reply) => {
  if (request.headers['if-none-match'] === etag) return reply.code(304).header('etag', etag).send();
  return reply.type('application/json').header('etag', etag).send(body);
});
const assertion = 'x'.repeat(Number(process.env.ASSERTION_BYTES ?? 709));
app.post('/v1/assertions', (request) => ({
  client_assertion: assertion,
  client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
  kid: 'k'.repeat(43),
  alg: 'ES256',
  jti: String(request.body?.client_id),
  expires_at: Math.floor(Date.now() / 1000) + 60,
}));
await app.listen({ port: Number(process.env.PORT), host: '127.0.0.1' });
const close = () => app.close().then(() => process.exit(0));
process.on('SIGTERM', close);
process.on('SIGINT', close);
