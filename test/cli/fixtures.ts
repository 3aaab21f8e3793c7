// Shared by the token and doctor tests: the CLI spawned as a process, two running services, oidc-provider.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { App } from '../../src/app.js';
import { buildTestApp, FakeClock } from '../helpers/app.js';

const ROOT = new URL('../../', import.meta.url).pathname;

/** The service signs with real time: the authorization server checks exp and iat against its own clock. */
export class LiveClock extends FakeClock {
  override now(): number {
    return Date.now();
  }
}

export const OPS_TOKEN = 'ops-token-0123456789abcdef';
export const SIGN_ONLY_TOKEN = 'sign-only-token-0123456789';

const sha = (token: string) => createHash('sha256').update(token).digest('hex');

function clientsFile(): string {
  const path = join(mkdtempSync(join(tmpdir(), 'jwks-signer-cli-clients-')), 'clients.yaml');
  writeFileSync(
    path,
    `clients:
  - name: ops
    tokenSha256: ${sha(OPS_TOKEN)}
    scopes: [sign, admin]
    keySets: ["*"]
    clientIds: ["*"]
    subjects: ["*"]
    audiences: ["*"]
  - name: signer
    tokenSha256: ${sha(SIGN_ONLY_TOKEN)}
    scopes: [sign]
    keySets: ["*"]
    clientIds: ["*"]
    audiences: ["*"]
`,
  );
  return path;
}

export interface RunningService {
  app: App;
  internalUrl: string;
  jwksUrl: string;
}

export async function startService(): Promise<RunningService> {
  const { app } = await buildTestApp({ API_CLIENTS_FILE: clientsFile() }, { clock: new LiveClock() });
  const { internalUrl, publicUrl } = await app.listen();
  return { app, internalUrl, jwksUrl: `${publicUrl}/.well-known/jwks.json` };
}

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function cli(args: string[], env: Record<string, string | undefined>, input?: string): Promise<Run> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('JWKS_SIGNER_')));
  return new Promise((resolve) => {
    const child = execFile(process.execPath, ['--import', 'tsx', 'src/cli/index.ts', ...args], { cwd: ROOT, env: { ...base, ...env }, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
    child.stdin!.end(input ?? '');
  });
}

export function json(run: Run): any {
  try {
    return JSON.parse(run.stdout);
  } catch {
    assert.fail(`stdout is not JSON (exit ${run.code}): ${run.stdout}\nstderr: ${run.stderr}`);
  }
}

/** A tiny loopback HTTP server; closed by the returned function. */
export async function serve(handler: RequestListener): Promise<{ url: string; close: () => Promise<void> }> {
  const server: Server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
