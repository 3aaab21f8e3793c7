// Making key pairs, their public JWKs and RFC 7638 kids, and opening the stored private keys.
import { createPrivateKey, createPublicKey, generateKeyPair, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { calculateJwkThumbprint, type JWK } from 'jose';
import type { Algorithm, KeySetConfig } from '../config.js';
import { KeyStoreIntegrityError } from '../errors.js';
import { associatedData, type KeyEncryption } from './key-encryption.js';
import type { KeyRecord, PublicJwk } from './types.js';

const generate = promisify(generateKeyPair);

const CURVES: Partial<Record<Algorithm, string>> = { ES256: 'P-256', ES384: 'P-384', ES512: 'P-521' };

async function newKeyPair(alg: Algorithm, rsaBits: number): Promise<{ publicKey: KeyObject; privateKey: KeyObject }> {
  if (alg.startsWith('RS') || alg.startsWith('PS')) return generate('rsa', { modulusLength: rsaBits, publicExponent: 0x10001 });
  const namedCurve = CURVES[alg];
  if (namedCurve) return generate('ec', { namedCurve });
  return generate('ed25519');
}

/** The published form of a public key: only public members, in a fixed order, kid = RFC 7638 thumbprint. */
export async function publicJwkOf(publicKey: KeyObject, alg: Algorithm): Promise<PublicJwk> {
  const jwk = publicKey.export({ format: 'jwk' }) as JWK;
  const kid = await calculateJwkThumbprint(jwk, 'sha256');
  const out: PublicJwk = { kty: jwk.kty!, kid, use: 'sig', alg };
  if (jwk.kty === 'RSA') Object.assign(out, { n: jwk.n, e: jwk.e });
  else if (jwk.kty === 'EC') Object.assign(out, { crv: jwk.crv, x: jwk.x, y: jwk.y });
  else Object.assign(out, { crv: jwk.crv, x: jwk.x });
  return out;
}

export async function createKeyRecord(
  set: KeySetConfig,
  state: 'active' | 'next',
  now: number,
  encryption: KeyEncryption,
): Promise<{ record: KeyRecord; privateKey: KeyObject }> {
  const { publicKey, privateKey } = await newKeyPair(set.alg, set.rsaBits);
  const publicJwk = await publicJwkOf(publicKey, set.alg);
  const der = privateKey.export({ format: 'der', type: 'pkcs8' });
  const record: KeyRecord = {
    kid: publicJwk.kid,
    set: set.name,
    alg: set.alg,
    state,
    createdAt: now,
    ...(state === 'active' ? { activatedAt: now } : {}),
    publicJwk,
    privateKey: encryption.encrypt(associatedData(set.name, publicJwk.kid), der),
  };
  der.fill(0);
  return { record, privateKey };
}

/** Decrypts a stored private key and checks that it belongs to the record's public key. */
export async function openPrivateKey(record: KeyRecord, encryption: KeyEncryption): Promise<KeyObject> {
  if (!record.privateKey) throw new KeyStoreIntegrityError('no_private_key', `key ${record.kid} has no private key`);
  const der = encryption.decrypt(associatedData(record.set, record.kid), record.privateKey);
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  } finally {
    der.fill(0);
  }
  const publicJwk = await publicJwkOf(createPublicKey(key), record.alg);
  if (publicJwk.kid !== record.kid) {
    throw new KeyStoreIntegrityError('key_mismatch', `stored private key of ${record.kid} does not match its public key`);
  }
  return key;
}
