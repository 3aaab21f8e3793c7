// Interop verifier: jose (createRemoteJWKSet) and jwks-rsa + jsonwebtoken check our assertions against the live JWKS.
// Usage: node --import tsx test/interop/node/verify.ts JWKS_URL [CASES.jsonl]   (stdin without a file)
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import jsonwebtoken, { type Algorithm, type JwtPayload } from 'jsonwebtoken';
import jwksRsa from 'jwks-rsa';
import type { Case } from '../case.js';

type Result = { ok: true; kid: string } | { ok: false; error: string; unsupported?: true };

const LEEWAY = 5;
const url = process.argv[2];
if (!url) {
  console.error('usage: verify.ts JWKS_URL [CASES.jsonl]');
  process.exit(2);
}

// Library defaults: jose caches 10 min and refetches an unknown kid at most every 30 s; jwks-rsa caches
// per kid for 10 min with no rate limit.
const remote = createRemoteJWKSet(new URL(url));
const rsaClient = jwksRsa({ jwksUri: url });

async function withJose(c: Case): Promise<string> {
  const { protectedHeader } = await jwtVerify(c.token, remote, {
    algorithms: [c.alg],
    issuer: c.iss,
    subject: c.sub,
    audience: c.aud,
    requiredClaims: ['exp', 'iat'],
    clockTolerance: LEEWAY,
  });
  return protectedHeader.kid!;
}

async function withJsonwebtoken(c: Case): Promise<string> {
  const kid = decodeProtectedHeader(c.token).kid;
  const key = (await rsaClient.getSigningKey(kid)).getPublicKey();
  const payload = jsonwebtoken.verify(c.token, key, {
    algorithms: [c.alg as Algorithm],
    issuer: c.iss,
    subject: c.sub,
    audience: c.aud,
    clockTolerance: LEEWAY,
  }) as JwtPayload;
  if (typeof payload.exp !== 'number' || typeof payload.iat !== 'number') throw new Error('exp and iat are required');
  if (payload.iat > Date.now() / 1000 + LEEWAY) throw new Error('iat is in the future');
  if (payload.aud !== c.aud) throw new Error('aud must be exactly the expected string');
  return kid!;
}

async function run(fn: (c: Case) => Promise<string>, c: Case): Promise<Result> {
  try {
    return { ok: true, kid: await fn(c) };
  } catch (err) {
    return { ok: false, error: `${(err as Error).name}: ${(err as Error).message}` };
  }
}

const input = process.argv[3] ? createReadStream(process.argv[3]) : process.stdin;
for await (const line of createInterface({ input, crlfDelay: Infinity })) {
  if (!line.trim()) continue;
  const c = JSON.parse(line) as Case;
  const results: Record<string, Result> = {
    jose: await run(withJose, c),
    // jsonwebtoken 9 knows HS/RS/PS/ES only.
    jsonwebtoken: c.alg === 'EdDSA' ? { ok: false, unsupported: true, error: 'jsonwebtoken has no EdDSA' } : await run(withJsonwebtoken, c),
  };
  process.stdout.write(`${JSON.stringify({ id: c.id, results })}\n`);
}
