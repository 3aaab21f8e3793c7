import type { Algorithm } from '../config.js';

export type KeyState = 'next' | 'active' | 'retired' | 'revoked';

/** A public JWK as published: members in a fixed order so every replica serialises the same bytes. */
export interface PublicJwk {
  kty: string;
  kid: string;
  use: 'sig';
  alg: Algorithm;
  n?: string;
  e?: string;
  crv?: string;
  x?: string;
  y?: string;
  x5c?: string[];
  'x5t#S256'?: string;
}

/** The private key, AES-256-GCM encrypted under a key-encryption key; kid and set are the associated data. */
export interface EncryptedPrivateKey {
  kek: string;
  iv: string;
  tag: string;
  ct: string;
}

export interface KeyRecord {
  kid: string;
  set: string;
  alg: Algorithm;
  state: KeyState;
  createdAt: number;
  activatedAt?: number;
  retiredAt?: number;
  revokedAt?: number;
  publicJwk: PublicJwk;
  /** Self-signed X.509 certificate (base64 DER) of the public key; public material. */
  certificate?: string;
  /** Dropped when a key is revoked: a revoked key never signs again. */
  privateKey?: EncryptedPrivateKey;
}

/** A key set as stored: its records and the generation that every committed change increments. */
export interface StoredKeySet {
  generation: number;
  updatedAt: number;
  keys: KeyRecord[];
}
