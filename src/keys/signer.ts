// Compact JWS signing off the event loop: node:crypto's callback sign() runs on libuv's thread pool, whose
// threads the server lowers in priority at start-up (src/keys/thread-pool-priority.ts, SIGNING_NICE), so that
// the threads answering JWKS and HTTP requests get a core at once while signatures use all the spare CPU.
import { constants, type KeyObject, sign } from 'node:crypto';
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

function encode(json: string): string {
  return Buffer.from(json).toString('base64url');
}

export interface Signer {
  /**
   * `header` is built by our own code and never carries `alg`: the algorithm always comes from the key.
   * `payloadJson`: the claims as serialised JSON (the caller has already serialised them to check their size).
   */
  signCompact(alg: Algorithm, key: KeyObject, header: { kid: string; typ: string; [name: string]: string }, payloadJson: string): Promise<string>;
}

function signBytes(alg: Algorithm, key: KeyObject, input: string): Promise<string> {
  const { digest, options } = PARAMS[alg];
  return new Promise((resolve, reject) => {
    sign(digest, Buffer.from(input), { key, ...options }, (err, signature) => {
      if (err) reject(err);
      else resolve(signature.toString('base64url'));
    });
  });
}

export const signer: Signer = {
  async signCompact(alg, key, header, payloadJson) {
    const signingInput = `${encode(JSON.stringify({ alg, ...header }))}.${encode(payloadJson)}`;
    return `${signingInput}.${await signBytes(alg, key, signingInput)}`;
  },
};
