// Request and response schemas of the internal API (validated by Fastify; unknown fields are refused).
import { Type, type Static } from '@sinclair/typebox';
import { ALGORITHMS, type Algorithm } from '../../config.js';
import type { KeyState } from '../../keys/types.js';
import { GRANT_TYPES } from '../../oauth/token-request.js';
import { CLIENT_ASSERTION_TYPE, TYPS } from '../../signing/token-service.js';

const KeySetName = Type.String({ pattern: '^[a-z0-9][a-z0-9_-]{0,62}$' });
const Ttl = Type.Integer({ minimum: 1, maximum: 86_400, description: 'lifetime in seconds' });
const Typ = Type.Union(TYPS.map((t) => Type.Literal(t)));
const X5t = Type.Union([Type.Literal('x5t'), Type.Literal('x5t#S256')]);
const Claims = Type.Record(Type.String({ minLength: 1, maxLength: 256 }), Type.Unknown(), { maxProperties: 64 });

export const AssertionBodySchema = Type.Object(
  {
    client_id: Type.String({ minLength: 1, maxLength: 1024 }),
    audience: Type.String({ minLength: 1, maxLength: 2048 }),
    key_set: Type.Optional(KeySetName),
    subject: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })),
    ttl: Type.Optional(Ttl),
    claims: Type.Optional(Claims),
    typ: Type.Optional(Typ),
    x5t: Type.Optional(X5t),
  },
  { additionalProperties: false },
);
export type AssertionBody = Static<typeof AssertionBodySchema>;

export const JwtBodySchema = Type.Object(
  {
    claims: Claims,
    key_set: Type.Optional(KeySetName),
    ttl: Type.Optional(Ttl),
    typ: Type.Optional(Typ),
    x5t: Type.Optional(X5t),
  },
  { additionalProperties: false },
);
export type JwtBody = Static<typeof JwtBodySchema>;

export const TokenBodySchema = Type.Object(
  {
    token_endpoint: Type.String({ minLength: 1, maxLength: 2048, description: "exact URL, one of the client's tokenEndpoints" }),
    client_id: Type.String({ minLength: 1, maxLength: 1024 }),
    grant_type: Type.Union(GRANT_TYPES.map((g) => Type.Literal(g))),
    scope: Type.Optional(Type.String({ minLength: 1, maxLength: 2048 })),
    audience: Type.Optional(Type.String({ minLength: 1, maxLength: 2048, description: "the assertion's aud; default token_endpoint" })),
    key_set: Type.Optional(KeySetName),
    subject: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })),
    parameters: Type.Optional(
      Type.Record(Type.String({ pattern: '^[A-Za-z0-9_.:-]{1,128}$' }), Type.String({ maxLength: 8192 }), {
        maxProperties: 32,
        additionalProperties: false,
        description: 'grant parameters: username, password, refresh_token, code, redirect_uri, code_verifier, resource, audience...',
      }),
    ),
    cache: Type.Optional(Type.Boolean({ description: 'false: ask the token endpoint even if a cached token is fresh; default true' })),
    typ: Type.Optional(Typ),
    x5t: Type.Optional(X5t),
  },
  { additionalProperties: false },
);
export type TokenBody = Static<typeof TokenBodySchema>;

export const TokenResponseSchema = Type.Object(
  {
    access_token: Type.String(),
    token_type: Type.String(),
    expires_in: Type.Optional(Type.Integer()),
    scope: Type.Optional(Type.String()),
    refresh_token: Type.Optional(Type.String()),
    id_token: Type.Optional(Type.String()),
  },
  { additionalProperties: true, description: "the token endpoint's response as received; header x-cache: hit, miss or bypass" },
);

export const KeysQuerySchema = Type.Object({ key_set: Type.Optional(KeySetName) }, { additionalProperties: false });

export const RotateBodySchema = Type.Object(
  {
    key_set: Type.Optional(KeySetName),
    force: Type.Optional(Type.Boolean()),
    if_active_kid: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
  },
  { additionalProperties: false },
);
export type RotateBody = Static<typeof RotateBodySchema>;

export const RevokeBodySchema = Type.Object({ key_set: Type.Optional(KeySetName) }, { additionalProperties: false });
export type RevokeBody = Static<typeof RevokeBodySchema>;

export const ImportBodySchema = Type.Object(
  {
    key_set: Type.Optional(KeySetName),
    private_key: Type.Optional(Type.String({ minLength: 1, maxLength: 16_384, description: 'PEM: PKCS#8, PKCS#1 or SEC1, optionally encrypted' })),
    pkcs12: Type.Optional(Type.String({ minLength: 1, maxLength: 32_768, description: 'base64 PKCS#12 file' })),
    password: Type.Optional(Type.String({ maxLength: 1024 })),
    certificate: Type.Optional(Type.String({ minLength: 1, maxLength: 16_384, description: 'PEM certificate of the key, if consumers hold it' })),
    state: Type.Optional(Type.Union([Type.Literal('active'), Type.Literal('next')])),
  },
  { additionalProperties: false },
);
export type ImportBody = Static<typeof ImportBodySchema>;

export const CertificateQuerySchema = Type.Object({ key_set: Type.Optional(KeySetName) }, { additionalProperties: false });

export const KidParamsSchema = Type.Object({ kid: Type.String({ pattern: '^[A-Za-z0-9_-]{1,128}$' }) });

const Alg = Type.Unsafe<Algorithm>(Type.String({ enum: [...ALGORITHMS] }));
const IsoTime = Type.String({ format: 'date-time' });
const Events = Type.Array(Type.String(), { description: 'what changed, e.g. "activated <kid>", "retired <kid>", "revoked <kid>"' });

export const AssertionResponseSchema = Type.Object(
  {
    client_assertion: Type.String({ description: 'the signed JWT, for the client_assertion form field' }),
    client_assertion_type: Type.Literal(CLIENT_ASSERTION_TYPE),
    kid: Type.String(),
    alg: Alg,
    jti: Type.String({ format: 'uuid' }),
    expires_at: Type.Integer({ description: 'exp, in seconds since the epoch' }),
  },
  { additionalProperties: false },
);
export type AssertionResponse = Static<typeof AssertionResponseSchema>;

export const JwtResponseSchema = Type.Object(
  {
    jwt: Type.String({ description: 'the signed JWT' }),
    kid: Type.String(),
    alg: Alg,
    jti: Type.String({ format: 'uuid' }),
    expires_at: Type.Integer({ description: 'exp, in seconds since the epoch' }),
  },
  { additionalProperties: false },
);
export type JwtResponse = Static<typeof JwtResponseSchema>;

export const PublicJwkSchema = Type.Object(
  {
    kty: Type.String(),
    kid: Type.String(),
    use: Type.Literal('sig'),
    alg: Alg,
    n: Type.Optional(Type.String()),
    e: Type.Optional(Type.String()),
    crv: Type.Optional(Type.String()),
    x: Type.Optional(Type.String()),
    y: Type.Optional(Type.String()),
    x5c: Type.Optional(Type.Array(Type.String())),
    'x5t#S256': Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);

export const KeyDescriptionSchema = Type.Object(
  {
    kid: Type.String(),
    state: Type.Unsafe<KeyState>(Type.String({ enum: ['next', 'active', 'retired', 'revoked'] })),
    alg: Alg,
    published: Type.Boolean({ description: 'in the JWKS: every state but revoked' }),
    created_at: IsoTime,
    activated_at: Type.Optional(IsoTime),
    retired_at: Type.Optional(IsoTime),
    revoked_at: Type.Optional(IsoTime),
    deleted_at: Type.Optional(Type.String({ format: 'date-time', description: 'when a retired or revoked key leaves the store' })),
    public_jwk: PublicJwkSchema,
    has_certificate: Type.Boolean(),
  },
  { additionalProperties: false },
);

const KeySetDescription = {
  key_set: Type.String(),
  alg: Alg,
  generation: Type.Integer({ description: 'incremented by every committed change of the set' }),
  updated_at: IsoTime,
  active_kid: Type.String(),
  next_rotation_at: Type.Optional(IsoTime),
  keys: Type.Array(KeyDescriptionSchema, { description: 'active, next, retired and revoked keys' }),
};
export const KeySetDescriptionSchema = Type.Object(KeySetDescription, { additionalProperties: false });
export type KeySetDescription = Static<typeof KeySetDescriptionSchema>;

export const KeysResponseSchema = Type.Object({ key_sets: Type.Array(KeySetDescriptionSchema) }, { additionalProperties: false });
export type KeysResponse = Static<typeof KeysResponseSchema>;

export const RotateResponseSchema = Type.Object(
  { rotated: Type.Boolean({ description: 'false when nothing changed (if_active_kid no longer active)' }), events: Events, ...KeySetDescription },
  { additionalProperties: false },
);
export type RotateResponse = Static<typeof RotateResponseSchema>;

export const RevokeResponseSchema = Type.Object(
  { revoked: Type.Boolean({ description: 'false when the key was already revoked' }), events: Events, ...KeySetDescription },
  { additionalProperties: false },
);
export type RevokeResponse = Static<typeof RevokeResponseSchema>;

export const ImportResponseSchema = Type.Object({ imported_kid: Type.String(), events: Events, ...KeySetDescription }, { additionalProperties: false });
export type ImportResponse = Static<typeof ImportResponseSchema>;

export const ReencryptResponseSchema = Type.Object(
  {
    encryption_key: Type.String({ description: 'id of the KEY_ENCRYPTION_KEYS key that now encrypts every stored key' }),
    key_sets: Type.Array(Type.Object({ key_set: Type.String(), reencrypted: Type.Integer({ description: 'keys re-encrypted by this call' }) }, { additionalProperties: false })),
  },
  { additionalProperties: false },
);
export type ReencryptResponse = Static<typeof ReencryptResponseSchema>;
