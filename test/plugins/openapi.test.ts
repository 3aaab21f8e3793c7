// The internal API's OpenAPI document and reference page: complete, valid OpenAPI 3, true to live responses,
// offline, and without effect on validation or on the public port.
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import SwaggerParser from '@apidevtools/swagger-parser';
import { FormatRegistry, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import type { FastifyInstance } from 'fastify';
import { Errors } from '../../src/errors.js';
import { ProblemSchema } from '../../src/plugins/openapi.js';
import {
  AssertionResponseSchema,
  ImportResponseSchema,
  JwtResponseSchema,
  KeysResponseSchema,
  ReencryptResponseSchema,
  RevokeResponseSchema,
  RotateResponseSchema,
} from '../../src/routes/internal/schemas.js';
import { bearer, buildTestApp } from '../helpers/app.js';
import { ACUMATICA_AUD, ACUMATICA_CLIENT, TOKENS, clientsFile } from '../helpers/clients.js';

FormatRegistry.Set('date-time', (value) => /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/.test(value));
FormatRegistry.Set('uuid', (value) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(value));

interface Operation {
  security?: Array<Record<string, string[]>>;
  responses: Record<string, { content?: Record<string, unknown>; $ref?: string; description?: string }>;
  requestBody?: { required?: boolean };
  tags?: string[];
  summary?: string;
}
type Document = { openapi: string; paths: Record<string, Record<string, Operation>>; components: Record<string, Record<string, unknown>> };

/** Every route of an instance, from Fastify's route tree (HEAD routes left out: Fastify adds them to GET routes). */
function routesOf(app: FastifyInstance): string[] {
  const routes: string[] = [];
  const path: string[] = [];
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const match = /^((?:│ {3}| {4})*)(?:├── |└── )(\S+)(?: \(([^)]+)\))?$/.exec(line);
    if (!match) continue;
    path.length = match[1]!.length / 4;
    path.push(match[2]!);
    for (const method of match[3]?.split(', ') ?? []) if (method !== 'HEAD') routes.push(`${method} ${path.join('').replace(/:(\w+)/g, '{$1}')}`);
  }
  return routes;
}

function contractRoutes(): string[] {
  const contract = readFileSync(new URL('../../docs/CONTRACT.md', import.meta.url), 'utf8');
  const section = contract.slice(contract.indexOf('Internal port'), contract.indexOf('## Environment'));
  return [...section.matchAll(/`(GET|POST) (\/v1\/[^`]+)`/g)].map((m) => `${m[1]} ${m[2]}`);
}

async function documented() {
  const built = await buildTestApp({ API_CLIENTS_FILE: clientsFile() });
  const res = await built.app.internal.inject({ url: '/openapi.json' });
  assert.equal(res.statusCode, 200, res.body);
  return { ...built, document: res.json() as Document };
}

test('the document is valid OpenAPI 3 and lists every route of the internal port', async (t) => {
  const { app, document } = await documented();
  t.after(() => app.close());
  assert.match(document.openapi, /^3\./);
  await SwaggerParser.validate(structuredClone(document) as never);

  const operations = Object.entries(document.paths).flatMap(([path, item]) => Object.keys(item).map((method) => `${method.toUpperCase()} ${path}`));
  const served = routesOf(app.internal).filter((route) => !/ \/(docs|openapi\.json)\b/.test(route));
  assert.ok(served.length >= 10, `routes found: ${served.join(', ')}`);
  assert.deepEqual([...operations].sort(), [...served].sort(), 'documented operations = served routes (except /docs and /openapi.json)');
  for (const route of contractRoutes()) assert.ok(operations.includes(route), `${route} (docs/CONTRACT.md) is documented`);
  for (const route of ['GET /healthz', 'GET /readyz']) assert.ok(operations.includes(route));
});

test('every /v1 operation needs the bearer token and documents problem+json errors; contract routes document their success', async (t) => {
  const { app, document } = await documented();
  t.after(() => app.close());
  assert.deepEqual(document.components.securitySchemes!.bearerAuth, {
    type: 'http',
    scheme: 'bearer',
    description: 'An API client token (API_CLIENTS_FILE or API_TOKEN_SHA256)',
  });
  const problem = document.components.schemas!.Problem as { properties: { code: { enum: string[] } } };
  for (const factory of Object.values(Errors)) assert.ok(problem.properties.code.enum.includes(factory.code), `${factory.code} is in the Problem schema`);

  const described = new Set([...contractRoutes(), 'GET /healthz', 'GET /readyz']);
  for (const [path, item] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(item)) {
      const name = `${method.toUpperCase()} ${path}`;
      if (described.has(name)) {
        const hint = 'summary and tags go in the route schema, the 200 response and error codes in OPERATIONS of src/plugins/openapi.ts';
        assert.ok(operation.summary, `${name} has a summary (${hint})`);
        assert.ok(operation.tags?.length, `${name} has a tag (${hint})`);
        assert.ok(operation.responses['200']?.content, `${name} documents its 200 response (${hint})`);
      }
      if (!path.startsWith('/v1/')) {
        assert.equal(operation.security, undefined, `${name} needs no token`);
        continue;
      }
      assert.deepEqual(operation.security, [{ bearerAuth: [] }], `${name} needs the bearer token`);
      assert.match(operation.responses['401']!.description!, /`missing_token`, `invalid_token`/, name);
      assert.deepEqual(operation.responses['401']!.content, { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } });
      assert.deepEqual(operation.responses.default, { $ref: '#/components/responses/Problem' });
    }
  }
  const assertion = document.paths['/v1/assertions']!.post!;
  assert.match(assertion.responses['403']!.description!, /`audience_denied`/);
  assert.equal(assertion.requestBody?.required, true);
  assert.match(document.paths['/v1/keys/rotate']!.post!.responses['409']!.description!, /`next_key_not_ready`/);
  assert.equal(document.paths['/v1/keys/rotate']!.post!.requestBody?.required, false, 'rotate takes an empty body');
  assert.ok(document.paths['/v1/keys/{kid}/certificate']!.get!.responses['200']!.content!['application/pem-certificate-chain']);
});

test('live responses match the documented schemas', async (t) => {
  const { app } = await documented();
  t.after(() => app.close());
  const call = async (method: 'GET' | 'POST', url: string, token: string, schema: TSchema, payload?: object) => {
    const res = await app.internal.inject({ method, url, headers: bearer(token), ...(payload ? { payload } : {}) });
    const body = res.json<Record<string, any>>();
    assert.ok(Value.Check(schema, body), `${method} ${url} ${res.statusCode}: ${JSON.stringify([...Value.Errors(schema, body)].slice(0, 3))}`);
    return body;
  };
  await call('POST', '/v1/assertions', TOKENS.app, AssertionResponseSchema, { client_id: ACUMATICA_CLIENT, audience: ACUMATICA_AUD, x5t: 'x5t#S256' });
  await call('POST', '/v1/jwt', TOKENS.broad, JwtResponseSchema, { claims: { iss: 'svc', aud: 'https://api.example.com' } });
  const listed = await call('GET', '/v1/keys', TOKENS.admin, KeysResponseSchema);
  const rotated = await call('POST', '/v1/keys/rotate', TOKENS.admin, RotateResponseSchema, { force: true });
  assert.ok(rotated.keys.some((k: { state: string }) => k.state === 'retired'), 'a retired key (retired_at, deleted_at) is checked too');
  await call('POST', `/v1/keys/${listed.key_sets[0].active_kid}/revoke`, TOKENS.admin, RevokeResponseSchema, {});
  const privateKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  await call('POST', '/v1/keys/import', TOKENS.admin, ImportResponseSchema, { private_key: privateKey, state: 'next' });
  await call('POST', '/v1/keys/reencrypt', TOKENS.admin, ReencryptResponseSchema, {});
  await call('GET', '/v1/keys', TOKENS.admin, KeysResponseSchema);
  await call('POST', '/v1/assertions', TOKENS.app, ProblemSchema, { client_id: ACUMATICA_CLIENT, audience: 'https://elsewhere.example.com/token' });
  await call('POST', '/v1/assertions', TOKENS.app, ProblemSchema, { client_id: ACUMATICA_CLIENT, audience: ACUMATICA_AUD, unknown: 1 });
  await call('GET', '/v1/keys', 'not-a-token', ProblemSchema);
});

test('registering the document changes no validation: unknown fields and wrong types are still refused', async (t) => {
  const { app } = await documented();
  t.after(() => app.close());
  const post = (payload: object) => app.internal.inject({ method: 'POST', url: '/v1/assertions', headers: bearer(TOKENS.app), payload });
  const unknown = await post({ client_id: ACUMATICA_CLIENT, audience: ACUMATICA_AUD, extra: true });
  assert.equal(unknown.statusCode, 400);
  assert.equal(unknown.json().code, 'invalid_request');
  const coerced = await post({ client_id: ACUMATICA_CLIENT, audience: ACUMATICA_AUD, ttl: '60' });
  assert.equal(coerced.statusCode, 400, 'a string ttl is not coerced');
  assert.equal(coerced.json().errors[0].path, 'body/ttl');
  const ok = await post({ client_id: ACUMATICA_CLIENT, audience: ACUMATICA_AUD, ttl: 60 });
  assert.equal(ok.statusCode, 200);
  assert.deepEqual(Object.keys(ok.json()), ['client_assertion', 'client_assertion_type', 'kid', 'alg', 'jti', 'expires_at'], 'responses are not re-serialised');
  const unauthenticated = await app.internal.inject({ method: 'GET', url: '/v1/keys' });
  assert.equal(unauthenticated.statusCode, 401, '/v1 still needs a token');
});

test('the reference page works offline: every asset comes from this port, and it loads this document', async (t) => {
  const { app, document } = await documented();
  t.after(() => app.close());
  const page = await app.internal.inject({ url: '/docs' });
  assert.equal(page.statusCode, 200);
  assert.match(page.headers['content-type'] as string, /^text\/html/);
  assert.doesNotMatch(page.body, /https?:\/\//, 'no asset from elsewhere');
  assert.doesNotMatch(page.headers['content-security-policy'] as string, /upgrade-insecure-requests/, 'the internal port is plain HTTP');
  const assets = [...page.body.matchAll(/(?:href|src)="([^"]+)"/g)].map((m) => m[1]!);
  assert.ok(assets.some((a) => a.endsWith('/swagger-ui-bundle.js')));
  for (const asset of assets) {
    const res = await app.internal.inject({ url: asset });
    assert.equal(res.statusCode, 200, asset);
    assert.ok(res.rawPayload.length > 0, asset);
  }
  const initializer = await app.internal.inject({ url: '/docs/static/swagger-initializer.js' });
  assert.match(initializer.body, /resolveUrl\('\.\/json'\)/);
  assert.deepEqual((await app.internal.inject({ url: '/docs/json' })).json(), document);
});

test('the public port serves neither the document nor the page', async (t) => {
  const { app } = await documented();
  t.after(() => app.close());
  for (const url of ['/openapi.json', '/docs', '/docs/json', '/docs/static/swagger-ui-bundle.js']) {
    const res = await app.public.inject({ url });
    assert.equal(res.statusCode, 404, url);
    assert.equal(res.json().code, 'not_found');
  }
});
