// Key administration (admin scope): list with states and timestamps, force a rotation, revoke at once.
import type { FastifyInstance } from 'fastify';
import type { ClientPolicy, Config } from '../../config.js';
import { Errors } from '../../errors.js';
import type { KeyManager, KeySetView } from '../../keys/key-manager.js';
import type { KeyRecord } from '../../keys/types.js';
import { allows, requireKeySet, requireScope } from '../../signing/token-service.js';
import { KeysQuerySchema, KidParamsSchema, type RevokeBody, RevokeBodySchema, type RotateBody, RotateBodySchema } from './schemas.js';

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

export function keyRoutes(config: Config, keys: KeyManager) {
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

  return async function register(app: FastifyInstance): Promise<void> {
    app.get<{ Querystring: { key_set?: string } }>('/v1/keys', { schema: { querystring: KeysQuerySchema } }, async (request) => {
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
      { schema: { body: RotateBodySchema }, preValidation: async (request) => void (request.body ??= {}) },
      async (request) => {
        const set = request.body.key_set ?? config.defaultKeySet;
        adminFor(request.apiClient, set);
        const result = await keys.rotate(set, {
          force: request.body.force ?? false,
          ...(request.body.if_active_kid !== undefined ? { ifActiveKid: request.body.if_active_kid } : {}),
        });
        request.log.info({ audit: 'admin_rotate', client: request.apiClient.name, keySet: set, events: result.events }, 'rotation requested');
        return { rotated: result.changed, events: result.events, ...describeSet(result.view) };
      },
    );

    app.post<{ Params: { kid: string }; Body: RevokeBody }>(
      '/v1/keys/:kid/revoke',
      { schema: { params: KidParamsSchema, body: RevokeBodySchema }, preValidation: async (request) => void (request.body ??= {}) },
      async (request) => {
        const client = request.apiClient;
        requireScope(client, 'admin');
        const { kid } = request.params;
        const set =
          request.body.key_set ??
          [...config.keySets.keys()].find((name) => allows(client.keySets, name) && keys.view(name)?.keys.some((k) => k.kid === kid));
        if (set === undefined) throw Errors.keyNotFound(`no key set this client administers holds key ${kid}`);
        adminFor(client, set);
        const result = await keys.revoke(set, kid);
        request.log.warn({ audit: 'admin_revoke', client: client.name, keySet: set, kid, events: result.events }, 'key revoked');
        return { revoked: result.changed, events: result.events, ...describeSet(result.view) };
      },
    );
  };
}
