// Interop verifier: the OpenSSL CLI checks the signatures (`openssl dgst -verify`, `openssl pkeyutl -verify -rawin`
// for EdDSA) with each published JWK converted to PEM; this script only picks the key by kid and checks the claims.
// Usage: node --import tsx test/interop/openssl/verify.ts JWKS_URL [CASES.jsonl]   (stdin without a file)
import { spawnSync } from 'node:child_process';
import { createPublicKey, type JsonWebKey } from 'node:crypto';
import { createReadStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Case } from '../case.js';

type Jwk = JsonWebKey & { kid?: string; alg?: string; use?: string };

const LEEWAY = 5;
const OPENSSL = process.env.OPENSSL_BIN ?? 'openssl';
const url = process.argv[2];
if (!url) {
  console.error('usage: verify.ts JWKS_URL [CASES.jsonl]');
  process.exit(2);
}
const dir = mkdtempSync(join(tmpdir(), 'interop-openssl-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

// No JWKS client here: fetch once, refetch when a kid is unknown.
let keys: Jwk[] | undefined;
async function fetchKeys(): Promise<Jwk[]> {
  const res = await fetch(url!, { redirect: 'error', signal: AbortSignal.timeout(5000) });
  if (res.status !== 200) throw new Error(`JWKS answered ${res.status}`);
  return ((await res.json()) as { keys: Jwk[] }).keys;
}
async function keyFor(kid: string): Promise<Jwk> {
  keys ??= await fetchKeys();
  let found = keys.filter((k) => k.kid === kid);
  if (found.length === 0) found = (keys = await fetchKeys()).filter((k) => k.kid === kid);
  if (found.length !== 1) throw new Error(found.length === 0 ? `no key with kid ${kid}` : `kid ${kid} appears ${found.length} times`);
  return found[0]!;
}

/** JOSE ECDSA signatures are r || s; OpenSSL wants an ASN.1 DER SEQUENCE of two INTEGERs. */
function derSignature(raw: Buffer): Buffer {
  const der = (tag: number, body: Buffer) => {
    const len = body.length < 128 ? Buffer.from([body.length]) : Buffer.from([0x81, body.length]);
    return Buffer.concat([Buffer.from([tag]), len, body]);
  };
  const integer = (bytes: Buffer) => {
    let i = 0;
    while (i < bytes.length - 1 && bytes[i] === 0) i++;
    const trimmed = bytes.subarray(i);
    return der(0x02, trimmed[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), trimmed]) : trimmed);
  };
  const half = raw.length / 2;
  return der(0x30, Buffer.concat([integer(raw.subarray(0, half)), integer(raw.subarray(half))]));
}

function opensslVerify(alg: string, jwk: Jwk, signingInput: string, signature: Buffer): void {
  const pem = createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
  const [pub, data, sig] = ['pub.pem', 'data', 'sig'].map((name) => join(dir, name)) as [string, string, string];
  writeFileSync(pub, pem);
  writeFileSync(data, signingInput);
  const args: Record<string, string[]> = {
    RS256: ['dgst', '-sha256', '-verify', pub, '-signature', sig, data],
    PS256: ['dgst', '-sha256', '-verify', pub, '-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:-1', '-signature', sig, data],
    ES256: ['dgst', '-sha256', '-verify', pub, '-signature', sig, data],
    EdDSA: ['pkeyutl', '-verify', '-pubin', '-inkey', pub, '-rawin', '-in', data, '-sigfile', sig],
  };
  if (!args[alg]) throw new Error(`algorithm ${alg} not supported by this verifier`);
  writeFileSync(sig, alg === 'ES256' ? derSignature(signature) : signature);
  const run = spawnSync(OPENSSL, args[alg]!, { encoding: 'utf8' });
  if (run.error) throw run.error;
  if (run.status !== 0) throw new Error(`openssl: signature verification failed: ${(run.stdout + run.stderr).trim().split('\n')[0]}`);
}

async function verify(c: Case): Promise<string> {
  const [h, p, s] = c.token.split('.');
  if (!h || !p || s === undefined) throw new Error('not a compact JWS');
  const header = JSON.parse(Buffer.from(h, 'base64url').toString()) as { alg?: string; kid?: string };
  if (header.alg !== c.alg) throw new Error(`alg ${header.alg} is not the expected ${c.alg}`);
  if (!header.kid) throw new Error('no kid');
  const jwk = await keyFor(header.kid);
  if (jwk.alg !== c.alg || jwk.use !== 'sig') throw new Error(`key ${header.kid} has alg ${jwk.alg}, use ${jwk.use}`);
  opensslVerify(c.alg, jwk, `${h}.${p}`, Buffer.from(s, 'base64url'));
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
  const now = Date.now() / 1000;
  for (const name of ['iss', 'sub', 'aud'] as const) {
    if (claims[name] !== c[name]) throw new Error(`${name} ${JSON.stringify(claims[name])} is not ${JSON.stringify(c[name])}`);
  }
  if (typeof claims.exp !== 'number' || typeof claims.iat !== 'number') throw new Error('exp and iat are required numbers');
  if (claims.exp <= now - LEEWAY) throw new Error(`expired at ${claims.exp}`);
  if (claims.iat > now + LEEWAY) throw new Error('iat is in the future');
  if (typeof claims.nbf === 'number' && claims.nbf > now + LEEWAY) throw new Error('not yet valid (nbf)');
  return header.kid;
}

const input = process.argv[3] ? createReadStream(process.argv[3]) : process.stdin;
for await (const line of createInterface({ input, crlfDelay: Infinity })) {
  if (!line.trim()) continue;
  const c = JSON.parse(line) as Case;
  let result;
  try {
    result = { ok: true, kid: await verify(c) };
  } catch (err) {
    result = { ok: false, error: (err as Error).message };
  }
  process.stdout.write(`${JSON.stringify({ id: c.id, results: { openssl: result } })}\n`);
}
