// Request and response schemas of the internal API (validated by Fastify; unknown fields are refused).
import { Type, type Static } from '@sinclair/typebox';
import { TYPS } from '../../signing/token-service.js';

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
