// Making key pairs, their public JWKs and RFC 7638 kids, and opening the stored private keys.
import { createPrivateKey, createPublicKey, generateKeyPair, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { calculateJwkThumbprint, type JWK } from 'jose';
import type { Algorithm, KeySetConfig } from '../config.js';
import { KeyStoreIntegrityError } from '../errors.js';
import { selfSignedCertificate } from './certificates.js';
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

/**
 * A key record for a key pair: the public JWK, a certificate (the one given, or a new self-signed one) and the
 * private key encrypted under the current key-encryption key.
 */
export async function sealKeyPair(
  set: KeySetConfig,
  state: 'active' | 'next',
  now: number,
  encryption: KeyEncryption,
  keys: { privateKey: KeyObject; publicKey: KeyObject; certificate?: Buffer },
): Promise<KeyRecord> {
  const publicJwk = await publicJwkOf(keys.publicKey, set.alg);
  const certificate =
    keys.certificate ??
    (await selfSignedCertificate(keys.privateKey, keys.publicKey, set.alg, { subject: set.certificateSubject, validityMs: set.certificateValidityMs, now }));
  const der = keys.privateKey.export({ format: 'der', type: 'pkcs8' });
  const record: KeyRecord = {
    kid: publicJwk.kid,
    set: set.name,
    alg: set.alg,
    state,
    createdAt: now,
    ...(state === 'active' ? { activatedAt: now } : {}),
    publicJwk,
    certificate: certificate.toString('base64'),
    privateKey: encryption.encrypt(associatedData(set.name, publicJwk.kid), der),
  };
  der.fill(0);
  return record;
}

export async function createKeyRecord(
  set: KeySetConfig,
  state: 'active' | 'next',
  now: number,
  encryption: KeyEncryption,
): Promise<{ record: KeyRecord; privateKey: KeyObject }> {
  const { publicKey, privateKey } = await newKeyPair(set.alg, set.rsaBits);
  return { record: await sealKeyPair(set, state, now, encryption, { privateKey, publicKey }), privateKey };
}

const CURVE_NAMES: Partial<Record<Algorithm, string>> = { ES256: 'prime256v1', ES384: 'secp384r1', ES512: 'secp521r1' };

/** Why a key cannot serve a set's algorithm, or undefined when it can. */
export function unsuitableFor(alg: Algorithm, key: KeyObject): string | undefined {
  const details = key.asymmetricKeyDetails ?? {};
  if (alg.startsWith('RS') || alg.startsWith('PS')) {
    if (key.asymmetricKeyType !== 'rsa') return `${alg} needs an RSA key, this is ${key.asymmetricKeyType}`;
    if ((details.modulusLength ?? 0) < 2048) return `RSA keys must have at least 2048 bits, this has ${details.modulusLength}`;
    return undefined;
  }
  if (alg === 'EdDSA') return key.asymmetricKeyType === 'ed25519' ? undefined : `EdDSA needs an Ed25519 key, this is ${key.asymmetricKeyType}`;
  if (key.asymmetricKeyType !== 'ec' || details.namedCurve !== CURVE_NAMES[alg]) {
    return `${alg} needs an EC ${CURVE_NAMES[alg]} key, this is ${key.asymmetricKeyType} ${details.namedCurve ?? ''}`.trim();
  }
  return undefined;
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
