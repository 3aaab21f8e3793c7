// Key administration (admin scope): list with states and timestamps, force a rotation, revoke at once.
import type { FastifyInstance } from 'fastify';
import type { ClientPolicy, Config } from '../../config.js';
import { Errors } from '../../errors.js';
import type { Audit } from '../../audit.js';
import type { KeyManager, KeySetView } from '../../keys/key-manager.js';
import type { KeyRecord } from '../../keys/types.js';
import { allows, requireKeySet, requireScope } from '../../signing/token-service.js';
import { toPem } from '../../keys/certificates.js';
import { CertificateQuerySchema, type ImportBody, ImportBodySchema, KeysQuerySchema, KidParamsSchema, type RevokeBody, RevokeBodySchema, type RotateBody, RotateBodySchema } from './schemas.js';

const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());

function describeKey(record: KeyRecord, view: KeySetView) {
  const cfg = view.config;
  const endsAt = record.state === 'retired' ? record.retiredAt : record.state === 'revoked' ? record.revokedAt : undefined;
  return {
    kid: record.kid,
    state: record.state,
    alg: record.alg,
    published: record.state !== 'revoked',
    created_at: iso(record.createdAt),
    activated_at: iso(record.activatedAt),
    retired_at: iso(record.retiredAt),
    revoked_at: iso(record.revokedAt),
    deleted_at: endsAt === undefined ? undefined : iso(endsAt + cfg.retireGraceMs),
    public_jwk: record.publicJwk,
    has_certificate: record.certificate !== undefined,
  };
}

export function describeSet(view: KeySetView) {
  const cfg = view.config;
  const next = view.keys.find((k) => k.state === 'next');
  return {
    key_set: cfg.name,
    alg: cfg.alg,
    generation: view.generation,
    updated_at: iso(view.updatedAt),
    active_kid: view.active.kid,
    next_rotation_at: next ? iso(Math.max((view.active.activatedAt ?? view.active.createdAt) + cfg.rotationPeriodMs, next.createdAt + cfg.prepublishPeriodMs)) : undefined,
    keys: view.keys.map((k) => describeKey(k, view)),
  };
}

const docs = {
  list: {
    summary: 'List the key sets',
    description: 'Every key set the client may administer (or the one named), with its keys, states, timestamps and public JWKs (scope `admin`).',
    tags: ['keys'],
  },
  rotate: {
    summary: 'Rotate a key set',
    description:
      'The next key becomes active (scope `admin`). Refused with 409 `next_key_not_ready` while the next key has been published for ' +
      'less than the pre-publish period, unless `force`. With `if_active_kid`, nothing happens unless that key is still the active ' +
      'one, so a retried request rotates once.',
    tags: ['keys'],
  },
  revoke: {
    summary: 'Revoke a key',
    description:
      'The key leaves the JWKS at once and never signs again: its private key is deleted (scope `admin`). Revoking the active key ' +
      'promotes the next key at once. Without `key_set`, the set holding the key is found.',
    tags: ['keys'],
  },
  certificate: {
    summary: "Download a key's certificate",
    description: "The key's X.509 certificate as PEM, for consumers that take certificate uploads (any client allowed the key set).",
    tags: ['keys'],
  },
  import: {
    summary: 'Import a private key',
    description:
      'Adds an existing private key (PEM or base64 PKCS#12), so that an application registered with it keeps working (scope ' +
      '`admin`). `state: active` (default) signs at once and retires the active key; `next` replaces the next key.',
    tags: ['keys'],
  },
  reencrypt: {
    summary: 'Re-encrypt the stored keys',
    description: 'Re-encrypts every stored private key under the first KEY_ENCRYPTION_KEYS key (scope `admin`, a client allowed every key set). Idempotent.',
    tags: ['keys'],
  },
};

export function keyRoutes(config: Config, keys: KeyManager, audit: Audit) {
  function adminFor(client: ClientPolicy, set: string): void {
    requireScope(client, 'admin');
    if (!config.keySets.has(set)) throw Errors.unknownKeySet(`key set "${set}" is not configured`);
    requireKeySet(client, set);
  }

  function loaded(set: string): KeySetView {
    const view = keys.view(set);
    if (!view) throw Errors.noActiveKey(`key set "${set}" is not loaded yet`);
    return view;
  }

  function setHolding(client: ClientPolicy, kid: string, requested: string | undefined): string {
    const set = requested ?? [...config.keySets.keys()].find((name) => allows(client.keySets, name) && keys.view(name)?.keys.some((k) => k.kid === kid));
    if (set === undefined) throw Errors.keyNotFound(`no key set this client may use holds key ${kid}`);
    return set;
  }

  return async function register(app: FastifyInstance): Promise<void> {
    app.get<{ Params: { kid: string }; Querystring: { key_set?: string } }>(
      '/v1/keys/:kid/certificate',
      { schema: { ...docs.certificate, params: KidParamsSchema, querystring: CertificateQuerySchema } },
      async (request, reply) => {
        const client = request.apiClient;
        const set = setHolding(client, request.params.kid, request.query.key_set);
        if (!config.keySets.has(set)) throw Errors.unknownKeySet(`key set "${set}" is not configured`);
        requireKeySet(client, set);
        const record = loaded(set).keys.find((k) => k.kid === request.params.kid && k.state !== 'revoked');
        if (!record) throw Errors.keyNotFound(`key ${request.params.kid} is not published in key set ${set}`);
        if (!record.certificate) throw Errors.certificateUnavailable(`key ${record.kid} was created without a certificate`);
        return reply
          .type('application/pem-certificate-chain')
          .header('content-disposition', `attachment; filename="${record.kid}.pem"`)
          .send(toPem(Buffer.from(record.certificate, 'base64')));
      },
    );

    app.post('/v1/keys/reencrypt', { schema: docs.reencrypt }, async (request) => {
      const client = request.apiClient;
      requireScope(client, 'admin');
      if (client.keySets !== '*') throw Errors.keySetDenied('re-encryption covers every key set: it needs a client allowed all of them');
      const results = await keys.reencrypt();
      audit.record({ event: 'admin_reencrypt', client: client.name, results }, 'stored keys re-encrypted');
      return { encryption_key: config.encryptionKeys[0]!.id, key_sets: results.map((r) => ({ key_set: r.keySet, reencrypted: r.reencrypted })) };
    });

    app.post<{ Body: ImportBody }>('/v1/keys/import', { schema: { ...docs.import, body: ImportBodySchema } }, async (request) => {
      const set = request.body.key_set ?? config.defaultKeySet;
      adminFor(request.apiClient, set);
      // node-forge (PKCS#12) is loaded on the first import only.
      const { readImport } = await import('../../keys/key-import.js');
      const imported = readImport(request.body, config.keySets.get(set)!.alg);
      const result = await keys.importKey(set, imported, request.body.state ?? 'active');
      audit.record({ event: 'admin_import', client: request.apiClient.name, keySet: set, kid: result.kid, events: result.events }, 'key imported');
      return { imported_kid: result.kid, events: result.events, ...describeSet(result.view) };
    });

    app.get<{ Querystring: { key_set?: string } }>('/v1/keys', { schema: { ...docs.list, querystring: KeysQuerySchema } }, async (request) => {
      const client = request.apiClient;
      requireScope(client, 'admin');
      if (request.query.key_set !== undefined) {
        adminFor(client, request.query.key_set);
        return { key_sets: [describeSet(loaded(request.query.key_set))] };
      }
      const names = [...config.keySets.keys()].filter((name) => allows(client.keySets, name));
      return { key_sets: names.map((name) => keys.view(name)).filter((v): v is KeySetView => v !== undefined).map(describeSet) };
    });

    app.post<{ Body: RotateBody }>(
      '/v1/keys/rotate',
      { schema: { ...docs.rotate, body: RotateBodySchema }, preValidation: async (request) => void (request.body ??= {}) },
      async (request) => {
        const set = request.body.key_set ?? config.defaultKeySet;
        adminFor(request.apiClient, set);
        const result = await keys.rotate(set, {
          force: request.body.force ?? false,
          ...(request.body.if_active_kid !== undefined ? { ifActiveKid: request.body.if_active_kid } : {}),
        });
        audit.record({ event: 'admin_rotate', client: request.apiClient.name, keySet: set, events: result.events }, 'rotation requested');
        return { rotated: result.changed, events: result.events, ...describeSet(result.view) };
      },
    );

    app.post<{ Params: { kid: string }; Body: RevokeBody }>(
      '/v1/keys/:kid/revoke',
      { schema: { ...docs.revoke, params: KidParamsSchema, body: RevokeBodySchema }, preValidation: async (request) => void (request.body ??= {}) },
      async (request) => {
        const client = request.apiClient;
        requireScope(client, 'admin');
        const { kid } = request.params;
        const set = setHolding(client, kid, request.body.key_set);
        adminFor(client, set);
        const result = await keys.revoke(set, kid);
        audit.record({ event: 'admin_revoke', client: client.name, keySet: set, kid, events: result.events }, 'key revoked');
        return { revoked: result.changed, events: result.events, ...describeSet(result.view) };
      },
    );
  };
}
