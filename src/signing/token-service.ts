// Builds and signs client assertions and general JWTs under the calling client's policy.
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Allow, ClientPolicy, Config, Scope } from '../config.js';
import { Errors } from '../errors.js';
import type { Clock, KeyManager } from '../keys/key-manager.js';
import type { Audit, AuditEntry } from '../audit.js';
import type { Metrics } from '../metrics.js';
import { thumbprint } from '../keys/certificates.js';
import { signer } from '../keys/signer.js';

export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/** IdentityServer refuses client assertions longer than this. */
export const MAX_TOKEN_LENGTH = 51_200;
export const TYPS = ['JWT', 'client-authentication+jwt'] as const;
export type Typ = (typeof TYPS)[number];

// `__proto__`: the claims are merged with Object.assign, which would set the object's prototype instead of
// copying such a claim (the HTTP routes' JSON parser already refuses the name).
const ASSERTION_RESERVED = new Set(['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti', '__proto__']);
const JWT_RESERVED = new Set(['exp', 'iat', 'nbf', 'jti', '__proto__']);

export interface AssertionRequest {
  client_id: string;
  audience: string;
  key_set?: string;
  subject?: string;
  ttl?: number;
  claims?: Record<string, unknown>;
  typ?: Typ;
  x5t?: 'x5t' | 'x5t#S256';
}

export interface JwtRequest {
  claims: Record<string, unknown>;
  key_set?: string;
  ttl?: number;
  typ?: Typ;
  x5t?: 'x5t' | 'x5t#S256';
}

export interface SignedToken {
  token: string;
  kid: string;
  alg: string;
  jti: string;
  expiresAt: number;
}

export function allows(list: Allow, value: string): boolean {
  return list === '*' || list.has(value);
}

export function requireScope(client: ClientPolicy, scope: Scope): void {
  if (!client.scopes.has(scope)) throw Errors.scopeDenied(`client "${client.name}" lacks the "${scope}" scope`);
}

export function requireKeySet(client: ClientPolicy, set: string): void {
  if (!allows(client.keySets, set)) throw Errors.keySetDenied(`client "${client.name}" may not use key set "${set}"`);
}

function checkExtraClaims(client: ClientPolicy, names: string[]): void {
  if (names.length === 0) return;
  if (client.extraClaims === true) return;
  const denied = client.extraClaims === false ? names : names.filter((n) => !(client.extraClaims as ReadonlySet<string>).has(n));
  if (denied.length > 0) throw Errors.extraClaimsDenied(`client "${client.name}" may not set claims: ${denied.join(', ')}`);
}

export interface TokenServiceOptions {
  config: Config;
  keys: KeyManager;
  logger: Logger;
  clock: Clock;
  metrics?: Pick<Metrics, 'signed'>;
  audit?: Pick<Audit, 'record'>;
}

// Objects on the signing path are merged with Object.assign, not built as `{ ...a, b, c }`: in Node 20 (V8 11.3)
// properties written after a spread leave a slow object, and building and serialising the claims that way cost
// ~8 µs per signature against ~1.5 (bench/NOTES.md).
export function createTokenService({ config, keys, logger, clock, metrics, audit }: TokenServiceOptions) {
  const recordAudit = (entry: AuditEntry) => (audit ? audit.record(entry, 'signed') : logger.info({ audit: entry.event, ...entry, event: undefined }, 'signed'));
  function resolveSet(client: ClientPolicy, requested: string | undefined): string {
    const set = requested ?? config.defaultKeySet;
    if (!config.keySets.has(set)) throw Errors.unknownKeySet(`key set "${set}" is not configured`);
    requireKeySet(client, set);
    return set;
  }

  function lifetime(client: ClientPolicy, set: string, ttlSeconds: number | undefined): number {
    const cfg = config.keySets.get(set)!;
    const ttlMs = ttlSeconds === undefined ? cfg.defaultTtlMs : ttlSeconds * 1000;
    const limit = Math.min(client.maxTtlMs, cfg.maxTtlMs);
    if (ttlMs > limit) throw Errors.ttlDenied(`ttl ${ttlMs / 1000}s exceeds the ${Math.floor(limit / 1000)}s allowed for this client and key set`);
    return Math.min(ttlMs, limit);
  }

  async function sign(
    client: ClientPolicy,
    set: string,
    ttlMs: number,
    typ: Typ,
    x5t: string | undefined,
    claims: Record<string, unknown>,
    kind: 'assertion' | 'jwt',
  ): Promise<SignedToken> {
    const started = performance.now();
    const { record: signingRecord, key } = await keys.signingKey(set);
    const header: { kid: string; typ: string; x5t?: string; 'x5t#S256'?: string } = { kid: signingRecord.kid, typ };
    if (x5t !== undefined) {
      if (!signingRecord.certificate) throw Errors.certificateUnavailable(`key ${signingRecord.kid} of key set ${set} has no certificate`);
      const der = Buffer.from(signingRecord.certificate, 'base64');
      if (x5t === 'x5t') header.x5t = thumbprint(der, 'sha1');
      else header['x5t#S256'] = thumbprint(der, 'sha256');
    }
    const iat = Math.floor(clock.now() / 1000);
    const exp = iat + Math.ceil(ttlMs / 1000);
    const jti = randomUUID();
    const payloadJson = JSON.stringify(Object.assign({}, claims, { iat, nbf: iat, exp, jti }));
    // Refused before signing: a signature is not spent on a token that would then be refused.
    const encodedPayloadLength = Math.ceil((Buffer.byteLength(payloadJson) * 4) / 3);
    if (encodedPayloadLength > MAX_TOKEN_LENGTH) {
      throw Errors.tokenTooLarge(`the token would be over ${encodedPayloadLength} characters; the limit is ${MAX_TOKEN_LENGTH}`);
    }
    const token = await signer.signCompact(signingRecord.alg, key, header as { kid: string; typ: string }, payloadJson);
    if (token.length > MAX_TOKEN_LENGTH) throw Errors.tokenTooLarge(`the token would be ${token.length} characters; the limit is ${MAX_TOKEN_LENGTH}`);
    recordAudit({ event: 'sign', client: client.name, keySet: set, kid: signingRecord.kid, jti, iss: claims.iss, sub: claims.sub, aud: claims.aud, exp });
    metrics?.signed(set, signingRecord.alg, client.name, kind, (performance.now() - started) / 1000);
    return { token, kid: signingRecord.kid, alg: signingRecord.alg, jti, expiresAt: exp };
  }

  return {
    /** `scope`: the broker signs under `tokens` (its assertions never leave the service). */
    async assertion(client: ClientPolicy, req: AssertionRequest, scope: Scope = 'sign'): Promise<SignedToken> {
      requireScope(client, scope);
      const set = resolveSet(client, req.key_set);
      if (!allows(client.clientIds, req.client_id)) throw Errors.clientIdDenied(`client "${client.name}" may not sign for client_id "${req.client_id}"`);
      const subject = req.subject ?? req.client_id;
      if (subject !== req.client_id && !allows(client.subjects, subject)) {
        throw Errors.subjectDenied(`client "${client.name}" may not sign for subject "${subject}"`);
      }
      if (!allows(client.audiences, req.audience)) throw Errors.audienceDenied(`client "${client.name}" may not sign for audience "${req.audience}"`);
      const extra = req.claims ?? {};
      const reserved = Object.keys(extra).filter((n) => ASSERTION_RESERVED.has(n));
      if (reserved.length > 0) throw Errors.reservedClaim(`claims may not set ${reserved.join(', ')}`);
      checkExtraClaims(client, Object.keys(extra));
      const ttlMs = lifetime(client, set, req.ttl);
      return sign(client, set, ttlMs, req.typ ?? 'JWT', req.x5t, Object.assign({}, extra, { iss: req.client_id, sub: subject, aud: req.audience }), 'assertion');
    },

    async jwt(client: ClientPolicy, req: JwtRequest): Promise<SignedToken> {
      requireScope(client, 'sign');
      const set = resolveSet(client, req.key_set);
      const claims = req.claims;
      const reserved = Object.keys(claims).filter((n) => JWT_RESERVED.has(n));
      if (reserved.length > 0) throw Errors.reservedClaim(`claims may not set ${reserved.join(', ')}; the service sets them`);
      const iss = claims.iss;
      if (typeof iss !== 'string' || iss === '') throw Errors.invalidRequest('claims.iss must be a non-empty string');
      const sub = claims.sub ?? iss;
      if (typeof sub !== 'string' || sub === '') throw Errors.invalidRequest('claims.sub must be a non-empty string');
      const aud = claims.aud;
      const audiences = typeof aud === 'string' ? [aud] : Array.isArray(aud) && aud.length > 0 && aud.every((a) => typeof a === 'string' && a !== '') ? (aud as string[]) : undefined;
      if (!audiences) throw Errors.invalidRequest('claims.aud must be a non-empty string or array of strings');
      if (!allows(client.clientIds, iss)) throw Errors.clientIdDenied(`client "${client.name}" may not sign with iss "${iss}"`);
      if (sub !== iss && !allows(client.subjects, sub)) throw Errors.subjectDenied(`client "${client.name}" may not sign for subject "${sub}"`);
      const deniedAud = audiences.find((a) => !allows(client.audiences, a));
      if (deniedAud !== undefined) throw Errors.audienceDenied(`client "${client.name}" may not sign for audience "${deniedAud}"`);
      checkExtraClaims(client, Object.keys(claims).filter((n) => !['iss', 'sub', 'aud'].includes(n)));
      const ttlMs = lifetime(client, set, req.ttl);
      return sign(client, set, ttlMs, req.typ ?? 'JWT', req.x5t, Object.assign({}, claims, { iss, sub, aud }), 'jwt');
    },
  };
}

export type TokenService = ReturnType<typeof createTokenService>;
