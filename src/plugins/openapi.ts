// The internal API's OpenAPI 3 document (built from the route schemas) at /openapi.json, and a reference page at /docs.
import { readFileSync } from 'node:fs';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { type TSchema, Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { Errors } from '../errors.js';
import {
  AssertionResponseSchema,
  ImportResponseSchema,
  JwtResponseSchema,
  KeysResponseSchema,
  ReencryptResponseSchema,
  RevokeResponseSchema,
  RotateResponseSchema,
  TokenResponseSchema,
} from '../routes/internal/schemas.js';
import { AuditResponseSchema } from '../routes/internal/audit.js';

type Operation = { responses?: Record<string, unknown>; requestBody?: { required?: boolean }; security?: unknown };

const STATUS_BY_CODE = new Map<string, number>([
  ...Object.values(Errors).map((factory) => [factory.code, factory().statusCode] as [string, number]),
  ['bad_request', 400],
]);

export const ProblemSchema = Type.Object(
  {
    type: Type.String({ description: 'urn:jwks-signer:error:<code>' }),
    title: Type.String(),
    status: Type.Integer(),
    code: Type.String({ enum: [...STATUS_BY_CODE.keys()], description: 'stable: branch on it' }),
    detail: Type.Optional(Type.String()),
    errors: Type.Optional(Type.Array(Type.Object({ path: Type.String(), message: Type.String() }), { description: 'schema violations' })),
    upstream: Type.Optional(
      Type.Object(
        {
          status: Type.Optional(Type.Integer()),
          error: Type.Optional(Type.String()),
          error_description: Type.Optional(Type.String()),
          error_uri: Type.Optional(Type.String()),
        },
        { additionalProperties: false, description: "token broker errors: the token endpoint's HTTP status and OAuth error" },
      ),
    ),
  },
  { additionalProperties: false },
);

const json = (description: string, schema: TSchema) => ({ description, content: { 'application/json': { schema } } });

const AUTH = ['missing_token', 'invalid_token', 'rate_limited'];
const BODY = ['invalid_request', 'invalid_json', 'payload_too_large', 'unsupported_media_type'];
const SIGNING = [
  ...BODY, ...AUTH, 'reserved_claim', 'token_too_large', 'scope_denied', 'key_set_denied', 'client_id_denied', 'subject_denied',
  'audience_denied', 'ttl_denied', 'extra_claims_denied', 'unknown_key_set', 'certificate_unavailable', 'internal_error', 'no_active_key',
];
const ADMIN = [...AUTH, 'scope_denied', 'key_set_denied', 'unknown_key_set', 'internal_error', 'no_active_key'];
const KEY_CHANGE = [...BODY, ...ADMIN, 'rotation_in_progress', 'store_unavailable'];

/** Success responses and the error codes of each operation, by OpenAPI path. Responses are documented only: no response serializer. */
const OPERATIONS: Record<string, { summary?: string; tags?: string[]; responses: Record<string, unknown>; errors: string[] }> = {
  'GET /healthz': {
    summary: 'Liveness',
    tags: ['monitoring'],
    responses: { 200: json('The process runs', Type.Object({ status: Type.Literal('ok') })) },
    errors: [],
  },
  'GET /readyz': {
    summary: 'Readiness',
    tags: ['monitoring'],
    responses: {
      200: json(
        'Every key set is loaded (degraded: the store is down, signing goes on from memory)',
        Type.Object({ status: Type.Union([Type.Literal('ready'), Type.Literal('degraded')]), store: Type.String({ enum: ['up', 'down', 'memory'] }) }),
      ),
      503: json('The key sets are not loaded yet', Type.Object({ status: Type.Literal('not_ready'), store: Type.String({ enum: ['up', 'down', 'memory'] }) })),
    },
    errors: [],
  },
  'GET /metrics': {
    summary: 'Prometheus metrics',
    tags: ['monitoring'],
    responses: { 200: { description: 'The text exposition format', content: { 'text/plain': { schema: Type.String() } } } },
    errors: [],
  },
  'POST /v1/assertions': { responses: { 200: json('The signed client assertion', AssertionResponseSchema) }, errors: SIGNING },
  'POST /v1/jwt': { responses: { 200: json('The signed JWT', JwtResponseSchema) }, errors: SIGNING },
  'POST /v1/tokens': {
    responses: { 200: json("The token endpoint's token response, as received", TokenResponseSchema) },
    errors: [
      ...BODY, ...AUTH, 'scope_denied', 'token_endpoint_denied', 'key_set_denied', 'client_id_denied', 'subject_denied', 'audience_denied',
      'extra_claims_denied', 'token_too_large', 'unknown_key_set', 'certificate_unavailable', 'internal_error', 'no_active_key',
      'token_endpoint_error', 'token_endpoint_unreachable', 'token_endpoint_invalid_response', 'token_endpoint_timeout',
    ],
  },
  'GET /v1/keys': { responses: { 200: json('The key sets the client may administer', KeysResponseSchema) }, errors: ['invalid_request', ...ADMIN] },
  'POST /v1/keys/rotate': {
    responses: { 200: json('The key set after the rotation', RotateResponseSchema) },
    errors: [...KEY_CHANGE, 'next_key_not_ready'],
  },
  'POST /v1/keys/{kid}/revoke': {
    responses: { 200: json('The key set after the revocation', RevokeResponseSchema) },
    errors: [...KEY_CHANGE, 'key_not_found'],
  },
  'POST /v1/keys/import': {
    responses: { 200: json('The key set with the imported key', ImportResponseSchema) },
    errors: [...KEY_CHANGE, 'invalid_key', 'key_exists'],
  },
  'GET /v1/audit': {
    responses: { 200: json('Audit entries, newest first', AuditResponseSchema) },
    errors: ['invalid_request', ...AUTH, 'scope_denied', 'internal_error', 'store_unavailable'],
  },
  'POST /v1/keys/reencrypt': {
    responses: { 200: json('Every key set, re-encrypted', ReencryptResponseSchema) },
    errors: [...ADMIN, 'rotation_in_progress', 'store_unavailable'],
  },
  'GET /v1/keys/{kid}/certificate': {
    responses: {
      200: {
        description: "The key's X.509 certificate (PEM)",
        content: { 'application/pem-certificate-chain': { schema: Type.String({ description: '-----BEGIN CERTIFICATE-----...' }) } },
      },
    },
    errors: ['invalid_request', ...AUTH, 'key_set_denied', 'unknown_key_set', 'key_not_found', 'certificate_unavailable', 'internal_error', 'no_active_key'],
  },
};

/** Routes taking an optional body: Fastify substitutes {} when none is sent. */
const OPTIONAL_BODY = new Set(['POST /v1/keys/rotate', 'POST /v1/keys/{kid}/revoke']);

const openApiPath = (url: string) => url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

function problemResponses(errors: readonly string[]): Record<string, unknown> {
  const byStatus = new Map<number, string[]>();
  for (const code of new Set(errors)) {
    const status = STATUS_BY_CODE.get(code);
    if (status === undefined) throw new Error(`openapi: ${code} is not in the error catalogue`);
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  const responses: Record<string, unknown> = {};
  for (const [status, codes] of [...byStatus].sort(([a], [b]) => a - b)) {
    responses[status] = {
      description: codes.map((code) => `\`${code}\``).join(', '),
      content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } },
    };
  }
  responses.default = { $ref: '#/components/responses/Problem' };
  return responses;
}

function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

/** Registers the document and the page on the internal port; call before its routes, so that every route is seen. */
export async function registerOpenApi(app: FastifyInstance): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'jwks-signer internal API',
        version: packageVersion(),
        description:
          'Signs client assertions and JWTs for internal apps and administers the keys. Every `/v1` route needs ' +
          '`Authorization: Bearer <token>`; every error is `application/problem+json` with a stable `code`.',
      },
      tags: [
        { name: 'signing', description: 'Client assertions (RFC 7523 private_key_jwt) and JWTs (JWT bearer grants), scope `sign`' },
        { name: 'tokens', description: 'The token broker: access tokens from allowed token endpoints, scope `tokens`' },
        { name: 'keys', description: 'Key administration, scope `admin`' },
        { name: 'monitoring', description: 'Liveness, readiness and metrics, no authentication' },
      ],
      components: {
        securitySchemes: {
          bearerAuth: { type: 'http', scheme: 'bearer', description: 'An API client token (API_CLIENTS_FILE or API_TOKEN_SHA256)' },
        },
        schemas: { Problem: ProblemSchema },
        responses: {
          Problem: { description: 'An error', content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } },
        },
      },
    },
    transform({ schema, url, route }) {
      const methods = Array.isArray(route.method) ? route.method : [route.method];
      const doc = OPERATIONS[`${methods[0]} ${openApiPath(url)}`];
      const documented: Record<string, unknown> = { ...schema };
      if (doc?.summary && documented.summary === undefined) documented.summary = doc.summary;
      if (doc?.tags && documented.tags === undefined) documented.tags = doc.tags;
      if (doc) documented.response = { ...(documented.response as object | undefined), ...doc.responses };
      if (url.startsWith('/v1/')) documented.security = [{ bearerAuth: [] }];
      return { schema: documented, url };
    },
    transformObject(documentObject) {
      if (!('openapiObject' in documentObject)) return documentObject.swaggerObject;
      const document = documentObject.openapiObject;
      for (const [path, item] of Object.entries(document.paths ?? {})) {
        for (const [method, operation] of Object.entries(item as Record<string, Operation>)) {
          const key = `${method.toUpperCase()} ${path}`;
          if (OPTIONAL_BODY.has(key) && operation.requestBody) operation.requestBody.required = false;
          if (!path.startsWith('/v1/')) continue;
          operation.responses = { ...operation.responses, ...problemResponses(OPERATIONS[key]?.errors ?? [...AUTH, 'internal_error']) };
        }
      }
      return document;
    },
  });
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    theme: { title: 'jwks-signer internal API' },
    uiConfig: { deepLinking: true, defaultModelsExpandDepth: 0 },
    // Assets are served from the package (no CDN); no upgrade-insecure-requests, the internal port is plain HTTP.
    staticCSP: "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; object-src 'none'; frame-ancestors 'self'",
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
}
