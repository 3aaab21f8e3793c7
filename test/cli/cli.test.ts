// The jwks-signer command end to end: spawned as a process against a listening service; stdout, exit codes, problem codes.
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import type { App } from '../../src/app.js';
import { buildTestApp } from '../helpers/app.js';
import { ACUMATICA_AUD, ACUMATICA_CLIENT, TOKENS, clientsFile } from '../helpers/clients.js';
import { freePort } from '../helpers/redis.js';

const ROOT = new URL('../../', import.meta.url).pathname;

let app: App;
let internalUrl: string;
let publicUrl: string;

before(async () => {
  ({ app } = await buildTestApp({ API_CLIENTS_FILE: clientsFile() }));
  ({ internalUrl, publicUrl } = await app.listen());
});
after(() => app.close());

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cleanEnv(env: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const base = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('JWKS_SIGNER_')));
  return { ...base, JWKS_SIGNER_URL: internalUrl, JWKS_SIGNER_TOKEN: TOKENS.admin, ...env };
}

/** Runs the CLI the way a developer does (tsx); asynchronously, since the service answers from this process. */
function cli(args: string[], env: Record<string, string | undefined> = {}, entry = ['--import', 'tsx', 'src/cli/index.ts']): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...entry, ...args], { cwd: ROOT, env: cleanEnv(env), timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

function json(run: Run): Record<string, any> {
  try {
    return JSON.parse(run.stdout);
  } catch {
    assert.fail(`stdout is not JSON (exit ${run.code}): ${run.stdout}\nstderr: ${run.stderr}`);
  }
}

test('keys list: a table by default, the API document with --json', async () => {
  const [table, listed] = await Promise.all([cli(['keys', 'list']), cli(['keys', 'list', '--json', '--key-set', 'default'])]);
  assert.equal(listed.code, 0, listed.stderr);
  const { key_sets } = json(listed);
  const active = app.keys.view('default')!.active.kid;
  assert.equal(key_sets[0].active_kid, active);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /^key set default \(RS256\), generation \d+/);
  assert.match(table.stdout, /^KID +STATE +JWKS +CREATED +ACTIVATED +ENDED +DELETED +CERT$/m);
  assert.match(table.stdout, new RegExp(`^${active} +active +yes `, 'm'));
});

test('keys rotate: refused (exit 1, next_key_not_ready) until --force; the problem goes to stdout with --json', async () => {
  const refused = await cli(['keys', 'rotate', '--json']);
  assert.equal(refused.code, 1);
  assert.equal(json(refused).code, 'next_key_not_ready');
  assert.match(refused.stderr, /^jwks-signer: next_key_not_ready: next key \S+ has been published for less than the pre-publish period/);

  const human = await cli(['keys', 'rotate']);
  assert.equal(human.code, 1);
  assert.equal(human.stdout, '', 'without --json the problem only goes to stderr');
  assert.match(human.stderr, /next_key_not_ready/);

  const previous = app.keys.view('default')!.active.kid;
  const forced = await cli(['keys', 'rotate', '--force', '--json', '--if-active-kid', previous]);
  assert.equal(forced.code, 0, forced.stderr);
  const result = json(forced);
  assert.equal(result.rotated, true);
  assert.ok(result.events.includes(`retired ${previous}`));
  assert.equal(app.keys.view('default')!.active.kid, result.active_kid);

  const repeated = await cli(['keys', 'rotate', '--force', '--if-active-kid', previous]);
  assert.equal(repeated.code, 0, repeated.stderr);
  assert.match(repeated.stdout, /^key set default unchanged/);
});

test('keys import and revoke: a PEM file as the next key, then revoked; unknown keys exit 1 with key_not_found', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'jwks-signer-cli-'));
  const keyFile = join(dir, 'app-key.pem');
  writeFileSync(keyFile, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
  const imported = await cli(['keys', 'import', keyFile, '--next', '--json']);
  assert.equal(imported.code, 0, imported.stderr);
  const { imported_kid: kid, keys } = json(imported);
  assert.equal(keys.find((k: { kid: string }) => k.kid === kid).state, 'next');
  assert.equal(app.keys.view('default')!.keys.find((k) => k.kid === kid)?.state, 'next');

  const again = await cli(['keys', 'import', keyFile, '--next']);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /^jwks-signer: key_exists: /);

  const revoked = await cli(['keys', 'revoke', kid]);
  assert.equal(revoked.code, 0, revoked.stderr);
  assert.match(revoked.stdout, new RegExp(`^revoked in key set default: revoked ${kid}`));
  assert.equal(app.keys.view('default')!.keys.find((k) => k.kid === kid)?.state, 'revoked');

  // Regression: a kid starting with "-" (one thumbprint in 64) was parsed as an unknown option (exit 2).
  const dashed = await cli(['keys', 'revoke', '-KZhnbF8nYOE58rbrU5USwhieKiIMI8DR9fkE8rj480', '--json']);
  assert.equal(dashed.code, 1, dashed.stderr);
  assert.equal(json(dashed).code, 'key_not_found');

  const unknown = await cli(['keys', 'revoke', 'no-such-kid', '--json']);
  assert.equal(unknown.code, 1);
  assert.equal(json(unknown).code, 'key_not_found');

  const missing = await cli(['keys', 'import', join(dir, 'absent.pem')]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /cannot read the key file .*absent\.pem: ENOENT/);
});

test('keys import: a PKCS#12 file keeps its certificate (password from the environment); a certificate of another key is refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'jwks-signer-cli-'));
  const [key, crt, p12] = ['app.key', 'app.crt', 'app.p12'].map((name) => join(dir, name)) as [string, string, string];
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', crt, '-days', '30', '-subj', '/CN=existing-app']);
  execFileSync('openssl', ['pkcs12', '-export', '-inkey', key, '-in', crt, '-out', p12, '-passout', 'pass:secret']);
  const original = new X509Certificate(readFileSync(crt)).raw.toString('base64');

  const wrong = await cli(['keys', 'import', p12, '--next', '--password', 'nope']);
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /^jwks-signer: invalid_key: pkcs12 is not a PKCS#12 file that this password opens/);
  const fromP12 = await cli(['keys', 'import', p12, '--next', '--json'], { JWKS_SIGNER_KEY_PASSWORD: 'secret' });
  assert.equal(fromP12.code, 0, fromP12.stderr);
  const p12Kid = json(fromP12).imported_kid;
  assert.equal(app.keys.view('default')!.keys.find((k) => k.kid === p12Kid)?.certificate, original);

  const revoked = await cli(['keys', 'revoke', p12Kid]);
  assert.equal(revoked.code, 0, revoked.stderr);
  const other = join(dir, 'other.key');
  writeFileSync(other, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
  const mismatch = await cli(['keys', 'import', other, '--next', '--certificate', crt]);
  assert.equal(mismatch.code, 1);
  assert.match(mismatch.stderr, /invalid_key: certificate is not the certificate of this key/);
});

test('assertion: prints the token alone; --decode adds header and claims; --json for scripts', async () => {
  const env = { JWKS_SIGNER_TOKEN: TOKENS.app };
  const base = ['assertion', '--client-id', ACUMATICA_CLIENT, '--audience', ACUMATICA_AUD];
  const [plain, decoded, scripted] = await Promise.all([
    cli(base, env),
    cli([...base, '--decode', '--ttl', '90', '--typ', 'client-authentication+jwt'], env),
    cli([...base, '--json', '--decode', '--x5t', 'x5t#S256', '--subject', 'user-1'], env),
  ]);
  assert.equal(plain.code, 0, plain.stderr);
  assert.match(plain.stdout, /^[\w-]+\.[\w-]+\.[\w-]+\n$/);
  const jwks = createRemoteJWKSet(new URL(`${publicUrl}/.well-known/jwks.json`));
  const { payload } = await jwtVerify(plain.stdout.trim(), jwks, { issuer: ACUMATICA_CLIENT, subject: ACUMATICA_CLIENT, audience: ACUMATICA_AUD });
  assert.equal(payload.exp! - payload.iat!, 60);

  assert.equal(decoded.code, 0, decoded.stderr);
  assert.match(decoded.stdout, /\nheader:\n\{\n {2}"alg": "RS256",[\s\S]*"typ": "client-authentication\+jwt"/);
  assert.match(decoded.stdout, /\nclaims:\n\{\n {2}"iss": /);

  assert.equal(scripted.code, 0, scripted.stderr);
  const result = json(scripted);
  assert.equal(result.client_assertion_type, 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
  assert.equal(result.header.kid, result.kid);
  assert.equal(typeof result.header['x5t#S256'], 'string');
  assert.equal(result.claims.sub, 'user-1');
  assert.equal(result.claims.exp, result.expires_at);
});

test('failed operations exit 1 and name the problem code', async () => {
  const [policy, schema, token, scope] = await Promise.all([
    cli(['assertion', '--client-id', ACUMATICA_CLIENT, '--audience', 'https://evil.example.com/token', '--json'], { JWKS_SIGNER_TOKEN: TOKENS.app }),
    cli(['assertion', '--client-id', ACUMATICA_CLIENT, '--audience', ACUMATICA_AUD, '--ttl', '100000'], { JWKS_SIGNER_TOKEN: TOKENS.app }),
    cli(['keys', 'list'], { JWKS_SIGNER_TOKEN: 'wrong-token-0123456789' }),
    cli(['keys', 'list', '--token', TOKENS.app]),
  ]);
  assert.equal(policy.code, 1);
  assert.equal(json(policy).code, 'audience_denied');
  assert.equal(json(policy).status, 403);
  assert.equal(schema.code, 1);
  assert.match(schema.stderr, /^jwks-signer: invalid_request: body\/ttl must be <= 86400\n$/);
  assert.equal(token.code, 1);
  assert.match(token.stderr, /^jwks-signer: invalid_token: /);
  assert.equal(scope.code, 1, '--token overrides JWKS_SIGNER_TOKEN');
  assert.match(scope.stderr, /scope_denied/);

  const closed = await freePort();
  const down = await cli(['keys', 'list', '--url', `http://127.0.0.1:${closed}`]);
  assert.equal(down.code, 1);
  assert.match(down.stderr, /^jwks-signer: network_error: GET http:\/\/127\.0\.0\.1:\d+\/v1\/keys failed: connect ECONNREFUSED/);
});

test('usage errors exit 2; help and version exit 0', async () => {
  const runs = await Promise.all([
    cli(['assertion', '--client-id', 'c']),
    cli(['keys', 'list', '--bogus']),
    cli(['assertion', '--client-id', 'c', '--audience', 'a', '--ttl', 'soon']),
    cli(['assertion', '--client-id', 'c', '--audience', 'a', '--typ', 'jwt']),
    cli(['keys']),
    cli(['frobnicate']),
    cli(['keys', 'list'], { JWKS_SIGNER_TOKEN: undefined }),
    cli(['keys', 'list', '--url', 'not a url']),
    cli(['--help']),
    cli(['--version']),
  ]);
  const [noAudience, unknownOption, badTtl, badTyp, noSubcommand, unknownCommand, noToken, badUrl, help, version] = runs;
  for (const run of [noAudience, unknownOption, badTtl, badTyp, noSubcommand, unknownCommand, noToken, badUrl]) {
    assert.equal(run!.code, 2, `${run!.stderr}`);
    assert.equal(run!.stdout, '');
  }
  assert.match(noAudience!.stderr, /required option '--audience <url>' not specified/);
  assert.match(badTtl!.stderr, /a whole number of seconds is expected/);
  assert.match(noToken!.stderr, /^jwks-signer: an API token is required: set JWKS_SIGNER_TOKEN/);
  assert.match(badUrl!.stderr, /--url "not a url" is not a URL/);
  assert.equal(help!.code, 0);
  assert.match(help!.stdout, /^Usage: jwks-signer \[options\] \[command\]/);
  for (const command of ['serve', 'keys', 'assertion', 'token', 'doctor']) assert.match(help!.stdout, new RegExp(`\\n  ${command}\\b`));
  assert.equal(version!.code, 0);
  assert.equal(version!.stdout.trim(), JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version);
});

test('serve runs the service as server.ts does, and stops on SIGTERM', async () => {
  const [port, internalPort] = [await freePort(), await freePort()];
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/index.ts', 'serve'], {
    cwd: ROOT,
    env: { ...cleanEnv({}), PORT: String(port), INTERNAL_PORT: String(internalPort), HOST: '127.0.0.1', LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  let stdout = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  const deadline = Date.now() + 20_000;
  while (!stderr.includes('Development API token') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.match(stderr, new RegExp(`http://127.0.0.1:${port}/.well-known/jwks.json`));
  const token = /Development API token[^\n]*\n\s+(\S+)/.exec(stderr)![1]!;
  const listed = await cli(['keys', 'list', '--json'], { JWKS_SIGNER_URL: `http://127.0.0.1:${internalPort}`, JWKS_SIGNER_TOKEN: token });
  assert.equal(listed.code, 0, listed.stderr);
  assert.equal(json(listed).key_sets[0].key_set, 'default');
  assert.equal((await fetch(`http://127.0.0.1:${internalPort}/openapi.json`)).status, 200);
  child.kill('SIGTERM');
  assert.equal(await exited, 0);
  assert.match(stdout, /"signal":"SIGTERM"/);
});

test('the compiled bin (npm run build) starts with a shebang and runs', { skip: !existsSync(join(ROOT, 'dist/cli/index.js')) && 'dist/ is not built' }, async () => {
  assert.match(readFileSync(join(ROOT, 'dist/cli/index.js'), 'utf8'), /^#!\/usr\/bin\/env node\n/);
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  assert.equal(pkg.bin['jwks-signer'], 'dist/cli/index.js');
  const listed = await cli(['keys', 'list', '--json'], {}, ['dist/cli/index.js']);
  assert.equal(listed.code, 0, listed.stderr);
  assert.equal(json(listed).key_sets[0].key_set, 'default');
  const failed = await cli(['keys', 'revoke', 'no-such-kid'], {}, ['dist/cli/index.js']);
  assert.equal(failed.code, 1);
  assert.match(failed.stderr, /key_not_found/);
});
