// Self-signed X.509 certificates for keys, for consumers that take certificate uploads (Entra ID, Salesforce,
// Workfront, Google) and for the x5c / x5t#S256 JWKS members and x5t headers.
import { createHash, KeyObject, randomBytes, webcrypto, X509Certificate as NodeCertificate } from 'node:crypto';
import { createRequire } from 'node:module';
import type * as X509 from '@peculiar/x509';
import type { Algorithm } from '../config.js';

const require = createRequire(import.meta.url);
let loaded: typeof X509 | undefined;

/**
 * @peculiar/x509 (with tsyringe and reflect-metadata, ~10 MB of heap) is loaded on first use: a replica that
 * only serves stored keys never needs it. tsyringe needs the Reflect metadata API loaded first.
 */
function x509(): typeof X509 {
  if (!loaded) {
    require('reflect-metadata');
    loaded = require('@peculiar/x509') as typeof X509;
    loaded.cryptoProvider.set(webcrypto as unknown as Crypto);
  }
  return loaded;
}

interface WebAlgorithms {
  key: RsaHashedImportParams | EcKeyImportParams | Algorithm_;
  signing: RsaHashedImportParams | EcdsaParams | Algorithm_;
}
type Algorithm_ = { name: string };

function webAlgorithms(alg: Algorithm): WebAlgorithms {
  if (alg.startsWith('RS') || alg.startsWith('PS')) {
    // The certificate is signed with PKCS#1 v1.5 whatever the JWS algorithm: it is the same RSA key, and every
    // consumer that takes certificate uploads reads sha256WithRSAEncryption.
    const rsa = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
    return { key: rsa, signing: rsa };
  }
  if (alg === 'EdDSA') return { key: { name: 'Ed25519' }, signing: { name: 'Ed25519' } };
  const [curve, hash] = ({ ES256: ['P-256', 'SHA-256'], ES384: ['P-384', 'SHA-384'], ES512: ['P-521', 'SHA-512'] } as const)[alg as 'ES256'];
  return { key: { name: 'ECDSA', namedCurve: curve }, signing: { name: 'ECDSA', hash } };
}

export interface CertificateOptions {
  subject: string;
  validityMs: number;
  now: number;
}

/** A self-signed certificate (DER) for the key pair: end-entity, digitalSignature only. */
export async function selfSignedCertificate(privateKey: KeyObject, publicKey: KeyObject, alg: Algorithm, options: CertificateOptions): Promise<Buffer> {
  const { key, signing } = webAlgorithms(alg);
  const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
  const keys = {
    privateKey: await webcrypto.subtle.importKey('pkcs8', pkcs8, key, false, ['sign']),
    publicKey: await webcrypto.subtle.importKey('spki', publicKey.export({ format: 'der', type: 'spki' }), key, true, ['verify']),
  };
  pkcs8.fill(0);
  const serial = randomBytes(16);
  serial[0] = serial[0]! & 0x7f;
  const { BasicConstraintsExtension, KeyUsageFlags, KeyUsagesExtension, SubjectKeyIdentifierExtension, X509CertificateGenerator } = x509();
  const certificate = await X509CertificateGenerator.createSelfSigned({
    serialNumber: serial.toString('hex'),
    name: options.subject,
    // A few minutes back, so that a consumer whose clock runs behind ours accepts it at once.
    notBefore: new Date(options.now - 5 * 60_000),
    notAfter: new Date(options.now + options.validityMs),
    keys: keys as CryptoKeyPair,
    signingAlgorithm: signing as Algorithm_,
    extensions: [
      new BasicConstraintsExtension(false, undefined, true),
      new KeyUsagesExtension(KeyUsageFlags.digitalSignature, true),
      await SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return Buffer.from(certificate.rawData);
}

export function isDistinguishedName(subject: string): boolean {
  // The default subject (CN=jwks-signer <set>) and other plain common names need no parser.
  if (/^CN=[A-Za-z0-9][A-Za-z0-9 ._-]*$/.test(subject)) return true;
  try {
    return new (x509().Name)(subject).toJSON().length > 0;
  } catch {
    return false;
  }
}

export function thumbprint(der: Buffer, hash: 'sha1' | 'sha256'): string {
  return createHash(hash).update(der).digest('base64url');
}

export function toPem(der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`;
}

/** Parses a PEM or DER certificate; undefined when it is not one. */
export function parseCertificate(input: string | Buffer): NodeCertificate | undefined {
  try {
    return new NodeCertificate(input);
  } catch {
    return undefined;
  }
}

export function certificateMatches(certificate: NodeCertificate, publicKey: KeyObject): boolean {
  const spki = (k: KeyObject) => k.export({ format: 'der', type: 'spki' });
  return spki(certificate.publicKey).equals(spki(publicKey));
}
