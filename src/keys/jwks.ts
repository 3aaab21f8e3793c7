// The published JWKS of a key set, rendered once per change: bytes, strong ETags and Last-Modified.
import { createHash } from 'node:crypto';
import { thumbprint } from './certificates.js';
import type { KeyRecord, PublicJwk } from './types.js';

export const JWKS_CONTENT_TYPES = ['application/json', 'application/jwk-set+json'] as const;
export type JwksContentType = (typeof JWKS_CONTENT_TYPES)[number];

export interface RenderedJwks {
  body: Buffer;
  /** One strong ETag per content type: the same bytes under another type are another representation. */
  etags: Record<JwksContentType, string>;
  lastModified: string;
  keyCount: number;
}

const ORDER: Record<string, number> = { active: 0, next: 1, retired: 2 };

/** Active first (naive clients take the first key), then next, then retired keys newest first. */
export function publishedKeys(keys: KeyRecord[]): KeyRecord[] {
  return keys
    .filter((k) => k.state in ORDER)
    .sort((a, b) => ORDER[a.state]! - ORDER[b.state]! || (b.retiredAt ?? b.createdAt) - (a.retiredAt ?? a.createdAt) || a.kid.localeCompare(b.kid));
}

function withCertificate(record: KeyRecord): PublicJwk {
  if (!record.certificate) return record.publicJwk;
  const der = Buffer.from(record.certificate, 'base64');
  return { ...record.publicJwk, x5c: [record.certificate], 'x5t#S256': thumbprint(der, 'sha256') };
}

export function renderJwks(keys: KeyRecord[], updatedAt: number, publishX5c = false): RenderedJwks {
  const published: PublicJwk[] = publishedKeys(keys).map((k) => (publishX5c ? withCertificate(k) : k.publicJwk));
  const body = Buffer.from(JSON.stringify({ keys: published }));
  const etag = (type: string) => `"${createHash('sha256').update(type).update('\n').update(body).digest('base64url').slice(0, 32)}"`;
  return {
    body,
    etags: { 'application/json': etag('application/json'), 'application/jwk-set+json': etag('application/jwk-set+json') },
    lastModified: new Date(Math.floor(updatedAt / 1000) * 1000).toUTCString(),
    keyCount: published.length,
  };
}
