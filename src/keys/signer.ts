// Compact JWS signing with node:crypto's callback form, which runs on libuv's thread pool and so keeps
// RSA signatures off the event loop that serves the JWKS.
import { constants, sign, type KeyObject } from 'node:crypto';
import type { Algorithm } from '../config.js';

interface SignParams {
  digest: string | null;
  options: { padding?: number; saltLength?: number; dsaEncoding?: 'ieee-p1363' };
}

const PSS = { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST };
const P1363 = { dsaEncoding: 'ieee-p1363' as const };

const PARAMS: Record<Algorithm, SignParams> = {
  RS256: { digest: 'sha256', options: {} },
  RS384: { digest: 'sha384', options: {} },
  RS512: { digest: 'sha512', options: {} },
  PS256: { digest: 'sha256', options: PSS },
  PS384: { digest: 'sha384', options: PSS },
  PS512: { digest: 'sha512', options: PSS },
  ES256: { digest: 'sha256', options: P1363 },
  ES384: { digest: 'sha384', options: P1363 },
  ES512: { digest: 'sha512', options: P1363 },
  EdDSA: { digest: null, options: {} },
};

function encode(value: object): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

/** `header` is built by our own code and never carries `alg`: the algorithm always comes from the key. */
export function signCompact(
  alg: Algorithm,
  key: KeyObject,
  header: { kid: string; typ: string; [name: string]: string },
  payload: Record<string, unknown>,
): Promise<string> {
  const { digest, options } = PARAMS[alg];
  const signingInput = `${encode({ alg, ...header })}.${encode(payload)}`;
  return new Promise((resolve, reject) => {
    sign(digest, Buffer.from(signingInput), { key, ...options }, (err, signature) => {
      if (err) reject(err);
      else resolve(`${signingInput}.${signature.toString('base64url')}`);
    });
  });
}
