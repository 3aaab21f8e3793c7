// Issue 4's interop suite (certificates aside): JWT libraries of other languages, and the OpenSSL CLI, verify our
// assertions against the live JWKS. Each verifier program (test/interop/<language>/) takes the JWKS URL and test cases
// as JSON lines (a file, or stdin for a long-running session) and prints one JSON line per case:
//   {"id": "...", "results": {"<library>": {"ok": true, "kid": "..."} | {"ok": false, "error": "...", "unsupported"?: true}}}
// Build the verifiers with `bash .ci/interop-deps.sh`. Without them this file skips them, except under CI where a
// missing verifier fails. INTEROP_TABLE=path writes every result, with the libraries' error messages, as JSON.
import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { bearer, buildTestApp, FakeClock, type TestApp } from '../helpers/app.js';
import { ACUMATICA_AUD, ACUMATICA_CLIENT, TOKENS, clientsFile } from '../helpers/clients.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import type { Case } from './case.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const IN_CI = !!process.env.CI && !['false', '0'].includes(process.env.CI);
const REPLY_TIMEOUT_MS = 30_000;

// ---------------------------------------------------------------------------------------------------------------
// The verifier programs

interface Program {
  name: string;
  libs: string[];
  command: string;
  args: string[];
  /** Why the program cannot run here (not built, stale, tool missing), or undefined. */
  missing(): string | undefined;
}

const newerThan = (built: string, sources: string[]) => sources.every((s) => statSync(built).mtimeMs >= statSync(join(HERE, s)).mtimeMs);
const runs = (command: string, args: string[]) => spawnSync(command, args, { stdio: 'ignore', timeout: 20_000 }).status === 0;
const BUILD = 'run `bash .ci/interop-deps.sh`';

const venvPython = join(HERE, 'python/.venv/bin/python');
const goBinary = join(HERE, 'go/bin/verifier');
const jar = join(HERE, 'java/target/verifier.jar');

const PROGRAMS: Program[] = [
  {
    name: 'python',
    libs: ['pyjwt', 'jwcrypto'],
    command: venvPython,
    args: [join(HERE, 'python/verify.py')],
    missing: () =>
      !existsSync(venvPython) || !runs(venvPython, ['-c', 'import jwt, jwcrypto'])
        ? `no virtualenv with PyJWT and jwcrypto at test/interop/python/.venv: ${BUILD}`
        : undefined,
  },
  {
    name: 'go',
    libs: ['go-jose', 'golang-jwt'],
    command: goBinary,
    args: [],
    missing: () =>
      !existsSync(goBinary)
        ? `test/interop/go/bin/verifier is not built: ${BUILD}`
        : !newerThan(goBinary, ['go/main.go', 'go/go.mod', 'go/go.sum'])
          ? `test/interop/go/bin/verifier is older than its sources: ${BUILD}`
          : undefined,
  },
  {
    name: 'java',
    libs: ['nimbus'],
    command: 'java',
    args: ['-jar', jar],
    missing: () =>
      !runs('java', ['-version'])
        ? 'java not found on PATH (JDK 17)'
        : !existsSync(jar)
          ? `test/interop/java/target/verifier.jar is not built: ${BUILD}`
          : !newerThan(jar, ['java/pom.xml', 'java/src/main/java/interop/Verify.java'])
            ? `test/interop/java/target/verifier.jar is older than its sources: ${BUILD}`
            : undefined,
  },
  {
    name: 'openssl',
    libs: ['openssl'],
    command: process.execPath,
    args: ['--import', 'tsx', join(HERE, 'openssl/verify.ts')],
    missing: () => (runs(process.env.OPENSSL_BIN ?? 'openssl', ['version']) ? undefined : `openssl not found: ${BUILD} (apt-get install -y openssl)`),
  },
  {
    name: 'node',
    libs: ['jose', 'jsonwebtoken'],
    command: process.execPath,
    args: ['--import', 'tsx', join(HERE, 'node/verify.ts')],
    missing: () => undefined,
  },
];

interface LibResult {
  ok: boolean;
  kid?: string;
  error?: string;
  unsupported?: boolean;
}
interface Reply {
  id: string;
  results: Record<string, LibResult>;
}

/** Every verifier process still running, killed by the after hook should a run be cut short. */
const children = new Set<ChildProcessWithoutNullStreams>();

/** One verifier process fed cases on stdin, one reply line per case, in order. */
class Session {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly waiting: Array<{ resolve: (r: Reply) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }> = [];
  private stderr = '';
  private readonly exited: Promise<number | null>;

  constructor(
    readonly program: Program,
    jwksUrl: string,
    casesFile?: string,
  ) {
    this.child = spawn(program.command, [...program.args, jwksUrl, ...(casesFile ? [casesFile] : [])], { cwd: ROOT });
    children.add(this.child);
    this.child.stderr.on('data', (chunk: Buffer) => (this.stderr = (this.stderr + chunk.toString()).slice(-4000)));
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      const next = this.waiting.shift();
      if (!next) return;
      clearTimeout(next.timer);
      try {
        next.resolve(JSON.parse(line) as Reply);
      } catch {
        next.reject(new Error(`${program.name}: not a JSON reply: ${line}`));
      }
    });
    this.child.stdin.on('error', () => undefined);
    this.exited = new Promise((resolveExit) =>
      this.child.on('close', (code) => {
        children.delete(this.child);
        for (const w of this.waiting.splice(0)) {
          clearTimeout(w.timer);
          w.reject(new Error(`${program.name} exited with ${code} before answering: ${this.stderr.trim()}`));
        }
        resolveExit(code);
      }),
    );
  }

  /** Resolves with the reply to the next case, whether it was written to stdin or read from the file. */
  reply(): Promise<Reply> {
    return new Promise((resolveReply, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`${this.program.name}: no reply within ${REPLY_TIMEOUT_MS} ms; stderr: ${this.stderr.trim()}`));
        this.child.kill('SIGKILL');
      }, REPLY_TIMEOUT_MS);
      this.waiting.push({ resolve: resolveReply, reject, timer });
    });
  }

  send(c: Case): Promise<Reply> {
    const reply = this.reply();
    this.child.stdin.write(`${JSON.stringify(c)}\n`);
    return reply;
  }

  async close(): Promise<void> {
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    const code = await this.exited;
    clearTimeout(timer);
    if (code !== 0) throw new Error(`${this.program.name} exited with ${code}: ${this.stderr.trim()}`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The cases and what every library should make of them

// ps and es publish x5c and x5t#S256, which go-jose and nimbus check against the key (CONSUMERS.md rule 5).
const SETS = [
  { set: 'default', alg: 'RS256', x5c: false }, // the clients file (test/helpers/clients.ts) needs a set named default
  { set: 'ps', alg: 'PS256', x5c: true },
  { set: 'es', alg: 'ES256', x5c: true },
  { set: 'ed', alg: 'EdDSA', x5c: false },
] as const;
type Alg = (typeof SETS)[number]['alg'];

type Expect = 'accept' | 'reject' | 'observe';
const CASES: Array<{ id: string; expect: Expect; reason?: RegExp; what: string }> = [
  { id: 'valid', expect: 'accept', what: 'iss = sub = client_id, aud = token endpoint' },
  { id: 'bearer-sub', expect: 'accept', what: 'sub differs from iss (RFC 7523 section 2.1)' },
  { id: 'typ-client-auth', expect: 'accept', what: 'header typ client-authentication+jwt' },
  { id: 'sub-mismatch', expect: 'reject', reason: /sub/i, what: 'a verifier expecting sub = client_id gets sub = user-1' },
  { id: 'unpublished-key', expect: 'reject', reason: /key|kid/i, what: 'signed by an unpublished key, kid not in the set' },
  { id: 'published-kid-wrong-key', expect: 'reject', reason: /signature|verif|cryptographic/i, what: 'kid of the active key, signed by another key' },
  { id: 'expired', expect: 'reject', reason: /expir/i, what: 'signed by the service with its clock an hour back' },
  { id: 'aud-trailing-slash', expect: 'reject', reason: /aud/i, what: 'aud = token endpoint + "/"' },
  { id: 'rotation-old-key', expect: 'accept', what: 'cached JWKS; signed before a forced rotation, verified after it' },
  { id: 'rotation-new-key', expect: 'accept', what: 'cached JWKS; signed after the rotation by the pre-published key' },
  { id: 'rotation2-unknown-kid', expect: 'observe', what: 'cached JWKS; a second rotation activates a key the cache lacks' },
  { id: 'fresh-first-key', expect: 'accept', what: 'new process after both rotations; first key (retired)' },
  { id: 'fresh-second-key', expect: 'accept', what: 'new process; second key (retired)' },
  { id: 'fresh-third-key', expect: 'accept', what: 'new process; third key (active)' },
];

/** Algorithms a library does not implement: it must say so, never pretend. */
const UNSUPPORTED: Record<string, Alg[]> = {
  jsonwebtoken: ['EdDSA'],
  // DefaultJWTProcessor's JWSVerificationKeySelector cannot turn an OKP JWK into a key (see Verify.java).
  nimbus: ['EdDSA'],
};

/** Where a library's default configuration differs from the general expectation, and why. */
const KNOWN_DIFFERENCES: Record<string, { expect: 'accept' | 'reject'; reason?: RegExp; why: string }> = {
  'nimbus/typ-client-auth': {
    expect: 'reject',
    reason: /typ/,
    why: "DefaultJWTProcessor's default typ verifier allows only JWT or no typ (send that typ only when told to)",
  },
};

// ---------------------------------------------------------------------------------------------------------------
// The service, and the run of every verifier through every case

/** The service's clock follows real time, with an offset that can move it back to sign an expired token. */
class LiveClock extends FakeClock {
  offset = 0;
  override now(): number {
    return Date.now() + this.offset;
  }
}

interface Outcome {
  program: string;
  lib: string;
  alg: Alg;
  caseId: string;
  result: LibResult;
  expectedKid?: string;
}

let redis: RedisServer;
let signer: TestApp;
let clock: LiveClock;
let workDir: string;
const outcomes: Outcome[] = [];
const programErrors = new Map<string, string[]>();
const missing = new Map<string, string>();
let runMs = 0;

async function sign(body: Record<string, unknown>): Promise<{ token: string; kid: string }> {
  const res = await signer.app.internal.inject({ method: 'POST', url: '/v1/assertions', headers: bearer(TOKENS.broad), payload: body });
  assert.equal(res.statusCode, 200, res.body);
  const json = res.json();
  return { token: json.client_assertion, kid: json.kid };
}

/** A token our service did not sign: a fresh key of the same algorithm, with the given kid or its own thumbprint. */
async function forge(alg: Alg, kid?: string): Promise<string> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return new SignJWT({ jti: randomUUID() })
    .setProtectedHeader({ alg, typ: 'JWT', kid: kid ?? (await calculateJwkThumbprint(await exportJWK(publicKey))) })
    .setIssuer(ACUMATICA_CLIENT)
    .setSubject(ACUMATICA_CLIENT)
    .setAudience(ACUMATICA_AUD)
    .setIssuedAt()
    .setNotBefore('0s')
    .setExpirationTime('5m')
    .sign(privateKey);
}

function record(program: Program, alg: Alg, c: Case, reply: Reply, expectedKid?: string): void {
  assert.equal(reply.id, c.id, `${program.name} answered case ${reply.id} for ${c.id}`);
  for (const lib of program.libs) {
    const result = reply.results[lib];
    assert.ok(result, `${program.name} gave no result for ${lib}`);
    outcomes.push({ program: program.name, lib, alg, caseId: c.id, result, ...(expectedKid ? { expectedKid } : {}) });
  }
}

function fail(program: Program, err: unknown): void {
  const list = programErrors.get(program.name) ?? [];
  list.push((err as Error).message);
  programErrors.set(program.name, list);
}

async function runSet(set: string, alg: Alg, jwksUrl: string, programs: Program[], expired: string): Promise<void> {
  const base = { alg, iss: ACUMATICA_CLIENT, sub: ACUMATICA_CLIENT, aud: ACUMATICA_AUD };
  const request = { client_id: ACUMATICA_CLIENT, audience: ACUMATICA_AUD, key_set: set, ttl: 300 };

  const valid = await sign(request);
  const bearerSub = await sign({ ...request, subject: 'user-1' });
  const typ = await sign({ ...request, typ: 'client-authentication+jwt' });
  const slash = await sign({ ...request, audience: `${ACUMATICA_AUD}/` });
  const staticCases: Array<[Case, string?]> = [
    [{ ...base, id: 'valid', token: valid.token }, valid.kid],
    [{ ...base, id: 'bearer-sub', token: bearerSub.token, sub: 'user-1' }, bearerSub.kid],
    [{ ...base, id: 'typ-client-auth', token: typ.token }, typ.kid],
    [{ ...base, id: 'sub-mismatch', token: bearerSub.token }],
    [{ ...base, id: 'unpublished-key', token: await forge(alg) }],
    [{ ...base, id: 'published-kid-wrong-key', token: await forge(alg, valid.kid) }],
    [{ ...base, id: 'expired', token: expired }],
    [{ ...base, id: 'aud-trailing-slash', token: slash.token }],
  ];

  // One long-running session per program: static cases, then a rotation under its cached JWKS.
  const sessions = programs.map((program) => ({ program, session: new Session(program, jwksUrl), alive: true }));
  const sendAll = (c: Case, kid?: string) =>
    Promise.all(
      sessions
        .filter((s) => s.alive)
        .map(async (s) => {
          try {
            record(s.program, alg, c, await s.session.send(c), kid);
          } catch (err) {
            s.alive = false;
            fail(s.program, err);
          }
        }),
    );
  for (const [c, kid] of staticCases) await sendAll(c, kid);

  await signer.app.keys.rotate(set, { force: true });
  const second = await sign(request);
  assert.notEqual(second.kid, valid.kid, 'the rotation changed the active key');
  await sendAll({ ...base, id: 'rotation-old-key', token: valid.token }, valid.kid);
  await sendAll({ ...base, id: 'rotation-new-key', token: second.token }, second.kid);

  await signer.app.keys.rotate(set, { force: true });
  const third = await sign(request);
  await sendAll({ ...base, id: 'rotation2-unknown-kid', token: third.token }, third.kid);
  await Promise.all(sessions.filter((s) => s.alive).map(({ program, session }) => session.close().catch((err) => fail(program, err))));

  // A fresh process (file input) after both rotations: every key that signed is still published.
  const file = join(workDir, `${set}-fresh.jsonl`);
  const fresh: Array<[Case, string]> = [
    [{ ...base, id: 'fresh-first-key', token: valid.token }, valid.kid],
    [{ ...base, id: 'fresh-second-key', token: second.token }, second.kid],
    [{ ...base, id: 'fresh-third-key', token: third.token }, third.kid],
  ];
  writeFileSync(file, fresh.map(([c]) => JSON.stringify(c)).join('\n') + '\n');
  await Promise.all(
    programs.map(async (program) => {
      try {
        const session = new Session(program, jwksUrl, file);
        const replies = await Promise.all(fresh.map(() => session.reply()));
        replies.forEach((reply, i) => record(program, alg, fresh[i]![0], reply, fresh[i]![1]));
        await session.close();
      } catch (err) {
        fail(program, err);
      }
    }),
  );
}

before(async () => {
  for (const program of PROGRAMS) {
    const why = program.missing();
    if (why) missing.set(program.name, why);
  }
  redis = await startRedis();
  workDir = mkdtempSync(join(tmpdir(), 'interop-'));
  const sets = join(workDir, 'sets.yaml');
  writeFileSync(sets, `keySets:\n${SETS.map(({ set, alg, x5c }) => `  ${set}: { alg: ${alg}, publishX5c: ${x5c} }\n`).join('')}`);
  clock = new LiveClock();
  signer = await buildTestApp({ REDIS_URL: redis.url, KEY_SETS_FILE: sets, API_CLIENTS_FILE: clientsFile() }, { clock });
  const { publicUrl } = await signer.app.listen();
  const available = PROGRAMS.filter((p) => !missing.has(p.name));
  // Expired tokens first, one at a time: while the clock is set back, nothing else may sign.
  const expired = new Map<string, string>();
  clock.offset = -3_600_000;
  try {
    for (const { set } of SETS) {
      expired.set(set, (await sign({ client_id: ACUMATICA_CLIENT, audience: ACUMATICA_AUD, key_set: set, ttl: 60 })).token);
    }
  } finally {
    clock.offset = 0;
  }
  const started = Date.now();
  await Promise.all(
    SETS.map(({ set, alg }) =>
      // The first set is the default one: its consumers use the well-known URL.
      runSet(set, alg, set === SETS[0].set ? `${publicUrl}/.well-known/jwks.json` : `${publicUrl}/jwks/${set}.json`, available, expired.get(set)!),
    ),
  );
  runMs = Date.now() - started;
}, { timeout: 110_000 });

after(async () => {
  for (const child of children) child.kill('SIGKILL');
  await signer?.app.close();
  await redis?.close();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------------------------
// The assertions: one test per program, then the table

function expectationFor(lib: string, alg: Alg, caseId: string): { expect: Expect | 'unsupported'; reason?: RegExp } {
  if (UNSUPPORTED[lib]?.includes(alg)) return { expect: 'unsupported' };
  const known = KNOWN_DIFFERENCES[`${lib}/${caseId}`];
  if (known) return known;
  const spec = CASES.find((c) => c.id === caseId)!;
  return spec.reason ? { expect: spec.expect, reason: spec.reason } : { expect: spec.expect };
}

function check(o: Outcome): string | undefined {
  const { expect, reason } = expectationFor(o.lib, o.alg, o.caseId);
  const where = `${o.lib} ${o.alg} ${o.caseId}`;
  const got = JSON.stringify(o.result);
  if (expect === 'unsupported') return o.result.unsupported ? undefined : `${where}: should report the algorithm unsupported, got ${got}`;
  if (o.result.unsupported) return `${where}: reported unsupported: ${o.result.error}`;
  if (expect === 'observe') return undefined;
  if (expect === 'accept') {
    if (!o.result.ok) return `${where}: rejected a valid token: ${o.result.error}`;
    if (o.expectedKid && o.result.kid !== o.expectedKid) return `${where}: verified with kid ${o.result.kid}, expected ${o.expectedKid}`;
    return undefined;
  }
  if (o.result.ok) return `${where}: accepted a token it must reject`;
  if (reason && !reason.test(o.result.error ?? '')) return `${where}: rejected for an unexpected reason: ${o.result.error}`;
  return undefined;
}

for (const program of PROGRAMS) {
  test(`${program.name} verifier (${program.libs.join(', ')}) against the live JWKS`, (t) => {
    const why = missing.get(program.name);
    if (why) {
      if (IN_CI) assert.fail(`${program.name} verifier missing under CI: ${why}`);
      t.skip(`${program.name} verifier skipped: ${why}`);
      return;
    }
    assert.deepEqual(programErrors.get(program.name) ?? [], [], `${program.name} verifier failed to run`);
    const mine = outcomes.filter((o) => o.program === program.name);
    assert.equal(mine.length, program.libs.length * SETS.length * CASES.length, 'one result per library, algorithm and case');
    const problems = mine.map(check).filter((p): p is string => p !== undefined);
    assert.deepEqual(problems, [], problems.join('\n'));
  });
}

test('results table', (t) => {
  const mark = (o: Outcome | undefined) => (!o ? '-' : o.result.unsupported ? 'n/a' : o.result.ok ? 'ok' : 'REJ');
  const libs = PROGRAMS.filter((p) => !missing.has(p.name)).flatMap((p) => p.libs);
  const ids = CASES.map((c) => c.id);
  const width = Math.max(...ids.map((id) => id.length));
  const lines: string[] = [];
  for (const { alg } of SETS) {
    lines.push(`${`-- ${alg}`.padEnd(width)}  ${libs.map((lib) => lib.padEnd(12)).join('')}`);
    for (const id of ids) {
      const row = libs.map((lib) => mark(outcomes.find((o) => o.lib === lib && o.alg === alg && o.caseId === id)).padEnd(12));
      lines.push(`${id.padEnd(width)}  ${row.join('')}`);
    }
  }
  const refused = outcomes.filter((x) => x.caseId === 'rotation2-unknown-kid' && !x.result.ok && !x.result.unsupported);
  refused.sort((a, b) => a.lib.localeCompare(b.lib) || a.alg.localeCompare(b.alg));
  for (const o of refused) {
    lines.push(`note: ${o.lib} ${o.alg} rotation2-unknown-kid: ${o.result.error}`);
  }
  for (const c of CASES) lines.push(`${c.id.padEnd(width)}  ${c.expect}: ${c.what}`);
  for (const [key, known] of Object.entries(KNOWN_DIFFERENCES)) lines.push(`known difference: ${key} ${known.expect}s: ${known.why}`);
  lines.push(`verifiers ran in ${runMs} ms`);
  for (const line of lines) t.diagnostic(line);
  if (process.env.INTEROP_TABLE) writeFileSync(process.env.INTEROP_TABLE, JSON.stringify(outcomes, null, 1));
});
