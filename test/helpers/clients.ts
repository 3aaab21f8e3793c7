// A client policy file for tests: a narrow signer, an admin, a broad signer.
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const TOKENS = { app: 'app-token-0123456789', admin: 'admin-token-0123456789', broad: 'broad-token-0123456789' };
export const ACUMATICA_AUD = 'https://acu.example.com/identity/connect/token';
export const ACUMATICA_CLIENT = '5f2a1c9e-8b3d-4e6f-a1b2-c3d4e5f60718@Company';

const sha = (token: string) => createHash('sha256').update(token).digest('hex');

export function clientsFile(): string {
  const dir = mkdtempSync(join(tmpdir(), 'jwks-signer-clients-'));
  const path = join(dir, 'clients.yaml');
  writeFileSync(
    path,
    `clients:
  - name: app
    tokenSha256: ${sha(TOKENS.app)}
    scopes: [sign]
    keySets: [default]
    clientIds: ["${ACUMATICA_CLIENT}"]
    subjects: [user-1]
    audiences: ["${ACUMATICA_AUD}"]
    maxTtl: 120s
    extraClaims: [scope]
  - name: admin
    tokenSha256: ${sha(TOKENS.admin)}
    scopes: [admin]
    keySets: ["*"]
  - name: broad
    tokenSha256: ${sha(TOKENS.broad)}
    scopes: [sign]
    keySets: ["*"]
    clientIds: ["*"]
    subjects: ["*"]
    audiences: ["*"]
    extraClaims: true
`,
  );
  return path;
}
