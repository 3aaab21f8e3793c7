// Envelope encryption of private keys at rest: AES-256-GCM under the first key-encryption key.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { EncryptionKey } from '../config.js';
import { KeyStoreIntegrityError } from '../errors.js';
import type { EncryptedPrivateKey } from './types.js';

export interface KeyEncryption {
  readonly currentKeyId: string;
  encrypt(aad: string, plaintext: Buffer): EncryptedPrivateKey;
  decrypt(aad: string, sealed: EncryptedPrivateKey): Buffer;
}

export function associatedData(set: string, kid: string): string {
  return `jwks-signer/v1/${set}/${kid}`;
}

export function createKeyEncryption(keys: EncryptionKey[]): KeyEncryption {
  const [current] = keys;
  if (!current) throw new Error('at least one key-encryption key is required');
  const byId = new Map(keys.map((k) => [k.id, k.key]));
  return {
    currentKeyId: current.id,
    encrypt(aad, plaintext) {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', current.key, iv);
      cipher.setAAD(Buffer.from(aad));
      const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
      return {
        kek: current.id,
        iv: iv.toString('base64'),
        tag: cipher.getAuthTag().toString('base64'),
        ct: ct.toString('base64'),
      };
    },
    decrypt(aad, sealed) {
      const key = byId.get(sealed.kek);
      if (!key) {
        throw new KeyStoreIntegrityError(
          'unknown_encryption_key',
          `a stored key is encrypted under key-encryption key "${sealed.kek}", which KEY_ENCRYPTION_KEYS does not contain`,
        );
      }
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(sealed.iv, 'base64'));
        decipher.setAAD(Buffer.from(aad));
        decipher.setAuthTag(Buffer.from(sealed.tag, 'base64'));
        return Buffer.concat([decipher.update(Buffer.from(sealed.ct, 'base64')), decipher.final()]);
      } catch {
        throw new KeyStoreIntegrityError(
          'decryption_failed',
          `a stored key cannot be decrypted with key-encryption key "${sealed.kek}": KEY_ENCRYPTION_KEYS holds a different key under that id, or the stored value was altered`,
        );
      }
    },
  };
}
