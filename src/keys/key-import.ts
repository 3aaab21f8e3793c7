// Reading an operator's existing private key (PEM PKCS#8 / PKCS#1 / SEC1, or PKCS#12) so that an application
// already registered with that key keeps working when it moves here.
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import forge from 'node-forge';
import type { Algorithm } from '../config.js';
import { Errors } from '../errors.js';
import { certificateMatches, parseCertificate } from './certificates.js';
import { unsuitableFor } from './key-generation.js';

export interface ImportInput {
  private_key?: string;
  pkcs12?: string;
  password?: string;
  certificate?: string;
}

export interface ImportedKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  certificate?: Buffer;
}

function fromPem(pem: string, password: string | undefined): KeyObject {
  try {
    return createPrivateKey({ key: pem, format: 'pem', ...(password !== undefined ? { passphrase: password } : {}) });
  } catch {
    throw Errors.invalidKey('private_key is not a readable PEM private key (PKCS#8, PKCS#1 or SEC1; encrypted ones need password)');
  }
}

function fromPkcs12(base64: string, password: string): { key: KeyObject; certificates: Buffer[] } {
  let p12: forge.pkcs12.Pkcs12Pfx;
  try {
    const asn1 = forge.asn1.fromDer(forge.util.createBuffer(Buffer.from(base64, 'base64').toString('binary')));
    p12 = forge.pkcs12.pkcs12FromAsn1(asn1, password);
  } catch {
    throw Errors.invalidKey('pkcs12 is not a PKCS#12 file that this password opens');
  }
  const bags = [
    ...(p12.getBags({ bagType: forge.pki.oids.pkcs8ShroudedKeyBag! })[forge.pki.oids.pkcs8ShroudedKeyBag!] ?? []),
    ...(p12.getBags({ bagType: forge.pki.oids.keyBag! })[forge.pki.oids.keyBag!] ?? []),
  ];
  if (bags.length !== 1) throw Errors.invalidKey(`pkcs12 must hold exactly one private key, it holds ${bags.length}`);
  const bag = bags[0]!;
  let key: KeyObject;
  if (bag.key) key = createPrivateKey(forge.pki.privateKeyToPem(bag.key));
  else if (bag.asn1) key = createPrivateKey({ key: Buffer.from(forge.asn1.toDer(bag.asn1).getBytes(), 'binary'), format: 'der', type: 'pkcs8' });
  else throw Errors.invalidKey('pkcs12 key bag cannot be read');
  const certificates: Buffer[] = [];
  for (const certBag of p12.getBags({ bagType: forge.pki.oids.certBag! })[forge.pki.oids.certBag!] ?? []) {
    if (certBag.cert) certificates.push(Buffer.from(forge.asn1.toDer(forge.pki.certificateToAsn1(certBag.cert)).getBytes(), 'binary'));
  }
  return { key, certificates };
}

export function readImport(input: ImportInput, alg: Algorithm): ImportedKey {
  if ((input.private_key === undefined) === (input.pkcs12 === undefined)) throw Errors.invalidRequest('give exactly one of private_key and pkcs12');
  let privateKey: KeyObject;
  let candidates: Buffer[] = [];
  if (input.private_key !== undefined) {
    privateKey = fromPem(input.private_key, input.password);
  } else {
    const opened = fromPkcs12(input.pkcs12!, input.password ?? '');
    privateKey = opened.key;
    candidates = opened.certificates;
  }
  const unsuitable = unsuitableFor(alg, privateKey);
  if (unsuitable) throw Errors.invalidKey(`the key does not fit this key set: ${unsuitable}`);
  const publicKey = createPublicKey(privateKey);
  if (input.certificate !== undefined) {
    const certificate = parseCertificate(input.certificate);
    if (!certificate) throw Errors.invalidKey('certificate is not a PEM X.509 certificate');
    if (!certificateMatches(certificate, publicKey)) throw Errors.invalidKey('certificate is not the certificate of this key');
    return { privateKey, publicKey, certificate: certificate.raw };
  }
  const match = candidates.map((der) => parseCertificate(der)).find((c) => c !== undefined && certificateMatches(c, publicKey));
  return { privateKey, publicKey, ...(match ? { certificate: match.raw } : {}) };
}
