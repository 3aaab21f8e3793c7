// The image's runtime layout, proved without a Docker engine. The Dockerfile is parsed (nothing it
// copies or runs is restated here); every stage the final stage needs is reproduced in a temporary
// directory (its root standing for the stage's `/`): COPY from the build context honours
// .dockerignore, COPY --from copies out of the reproduced stage, RUN runs the same npm commands.
// Independent stages are built concurrently, as BuildKit does. The final stage's CMD then starts with
// the image's WORKDIR, ENV and USER on loopback ports, must serve JWKS and health, pass the
// HEALTHCHECK, stop cleanly on the STOPSIGNAL and write nothing into its own files.
//
// Differences from a real image, on purpose or unavoidable:
// - node is this machine's (the base image's node is not available without Docker);
// - `npm ci` gets `--prefer-offline --no-audit --no-fund`: the lockfile has no `resolved` URLs
//   (omit-lockfile-registry-resolved), so a plain `npm ci` revalidates every packument against the
//   registry (one request per package) although ~/.npm holds them, and would send an audit request where no
//   npmrc turns audit off. The install itself (lockfile, --omit flags) is the Dockerfile's;
// - files are owned by whoever runs the test (root in CI, as in the image, where COPY makes them root's).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  cpSync,
  existsSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { readContractEnv, repoRoot } from './contract.js';
import { freePort } from '../helpers/redis.js';

// ---------------------------------------------------------------------------------------------
// Dockerfile parsing

interface Instruction {
  op: string;
  args: string;
  line: number;
}

interface Stage {
  index: number;
  name: string | undefined;
  base: string;
  instructions: Instruction[];
}

function substitute(value: string, vars: ReadonlyMap<string, string> | Record<string, string>): string {
  const lookup = (name: string): string | undefined =>
    vars instanceof Map ? vars.get(name) : (vars as Record<string, string>)[name];
  return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (_, braced, fallback, bare) => {
    const found = lookup((braced ?? bare) as string);
    return found !== undefined && found !== '' ? found : ((fallback as string | undefined) ?? '');
  });
}

function parseDockerfile(text: string): { globalArgs: Map<string, string>; stages: Stage[] } {
  // Logical lines: `\` continues a line; comment and empty lines are dropped, inside continuations too.
  const logical: { text: string; line: number }[] = [];
  let current = '';
  let start = 0;
  text.split('\n').forEach((raw, i) => {
    const trimmed = raw.trim();
    if (trimmed === '' || trimmed.startsWith('#')) return;
    if (current === '') start = i + 1;
    if (trimmed.endsWith('\\')) {
      current += `${trimmed.slice(0, -1).trim()} `;
      return;
    }
    logical.push({ text: (current + trimmed).trim(), line: start });
    current = '';
  });
  if (current.trim()) logical.push({ text: current.trim(), line: start });

  const globalArgs = new Map<string, string>();
  const stages: Stage[] = [];
  for (const { text: lineText, line } of logical) {
    const match = /^(\S+)\s*(.*)$/.exec(lineText);
    if (!match) continue;
    const op = (match[1] as string).toUpperCase();
    const args = match[2] as string;
    if (op === 'FROM') {
      const words = args.split(/\s+/).filter((w) => !w.startsWith('--platform='));
      const [base = '', as, name] = words;
      stages.push({
        index: stages.length,
        base: substitute(base, globalArgs),
        name: as?.toUpperCase() === 'AS' ? name?.toLowerCase() : undefined,
        instructions: [],
      });
    } else if (stages.length === 0) {
      assert.equal(op, 'ARG', `Dockerfile line ${line}: only ARG may precede the first FROM`);
      const [name = '', ...value] = args.split('=');
      globalArgs.set(name.trim(), value.join('=').trim().replace(/^"(.*)"$/, '$1'));
    } else {
      stages.at(-1)?.instructions.push({ op, args, line });
    }
  }
  return { globalArgs, stages };
}

// Words of a shell-form argument list with quotes and backslash escapes (ENV, COPY).
function shellWords(s: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote: string | undefined;
  for (let i = 0; i < s.length; i++) {
    const c = s[i] as string;
    if (quote) {
      if (c === quote) quote = undefined;
      else if (c === '\\' && quote === '"' && i + 1 < s.length) word += s[++i];
      else word += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      inWord = true;
    } else if (c === '\\' && i + 1 < s.length) {
      word += s[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  assert.equal(quote, undefined, `unterminated quote in: ${s}`);
  if (inWord) words.push(word);
  return words;
}

// Exec form (JSON array) as is; shell form through /bin/sh -c, as Docker does.
function commandForm(args: string): { argv: string[]; shell: boolean } {
  const trimmed = args.trim();
  if (trimmed.startsWith('[')) {
    const parsed = JSON.parse(trimmed) as unknown;
    assert.ok(Array.isArray(parsed) && parsed.every((a) => typeof a === 'string'), `not an exec form: ${args}`);
    return { argv: parsed as string[], shell: false };
  }
  return { argv: ['/bin/sh', '-c', trimmed], shell: true };
}

function splitFlags(args: string): { flags: Map<string, string>; rest: string } {
  const flags = new Map<string, string>();
  let rest = args.trim();
  for (let m = /^--([a-z-]+)(?:=(\S*))?\s+/.exec(rest); m; m = /^--([a-z-]+)(?:=(\S*))?\s+/.exec(rest)) {
    flags.set(m[1] as string, m[2] ?? 'true');
    rest = rest.slice(m[0].length);
  }
  return { flags, rest };
}

// Go durations as Docker writes them: 15s, 1m30s, 500ms.
function durationMs(value: string): number {
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  const matched = value.replace(/(\d+(?:\.\d+)?)(ms|s|m|h)/g, (_, n: string, unit: string) => {
    total += Number(n) * (units[unit] as number);
    return '';
  });
  assert.equal(matched, '', `not a duration: ${value}`);
  return total;
}

// ---------------------------------------------------------------------------------------------
// .dockerignore (Docker's patternmatcher): patterns are cleaned paths relative to the context root,
// `*`/`?` stay within one path segment, `**` spans segments, a pattern matching a folder covers
// everything below it, `!` re-includes, and the last matching pattern wins.

function readDockerignore(): (path: string) => boolean {
  const file = join(repoRoot, '.dockerignore');
  const patterns = (existsSync(file) ? readFileSync(file, 'utf8') : '')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'))
    .map((raw) => {
      const negated = raw.startsWith('!');
      const cleaned = posix.normalize((negated ? raw.slice(1) : raw).trim()).replace(/^\/+|\/+$/g, '');
      const source = cleaned
        .replace(/[.+^${}()|\\]/g, '\\$&')
        .replace(/\*\*\//g, '\u0001')
        .replace(/\*\*/g, '\u0000')
        .replace(/\*/g, '[^/]*')
        .replace(/\?/g, '[^/]')
        .replace(/\u0001/g, '(?:.*/)?')
        .replace(/\u0000/g, '.*');
      return { negated, regex: new RegExp(`^${source}$`) };
    });
  return (path: string): boolean => {
    const parts = path.split('/');
    const prefixes = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
    let excluded = false;
    for (const { negated, regex } of patterns) {
      if (prefixes.some((prefix) => regex.test(prefix))) excluded = !negated;
    }
    return excluded;
  };
}

// ---------------------------------------------------------------------------------------------
// Processes

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  timedOut: boolean;
}

const children = new Set<ChildProcess>();

function run(
  cmd: string,
  args: string[],
  options: { cwd: string; env: Record<string, string>; timeoutMs: number },
): Promise<RunResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    // Own process group, so that a timeout ends npm and everything it started.
    const child = spawn(cmd, args, { cwd: options.cwd, env: options.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    children.add(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid) process.kill(-child.pid, 'SIGKILL');
    }, options.timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      children.delete(child);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started, timedOut });
    });
  });
}

function tail(text: string, lines = 25): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}


const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Stage reproduction

interface BuiltStage {
  stage: Stage;
  root: string; // host directory standing for the stage's `/`
  workdir: string; // container path
  env: Record<string, string>;
  user: string | undefined;
  expose: number[];
  cmd: string[] | undefined;
  entrypoint: string[] | undefined;
  healthcheck: { argv: string[]; timeoutMs: number; startPeriodMs: number } | 'NONE' | undefined;
  stopSignal: string;
  contextFiles: string[]; // build-context paths this stage copied
  runs: { command: string; ms: number }[];
}

const NPM_CI_EXTRA = '--prefer-offline --no-audit --no-fund';

// The base image's environment as far as it matters here: node and npm on PATH (this machine's node).
function baseImageEnv(): Record<string, string> {
  return { PATH: [dirname(process.execPath), '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'].join(':') };
}

// Host environment that only tells npm where its cache, config and proxies are (never npm_config_*
// left by an `npm test` parent, which would change what `npm ci` installs).
function npmHostEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined) continue;
    if (/^(HOME|https?_proxy|no_proxy|NODE_EXTRA_CA_CERTS|SSL_CERT_FILE|npm_config_(cache|userconfig|globalconfig|registry))$/i.test(key)) {
      env[key] = value;
    }
  }
  return env;
}

function hostPath(root: string, containerPath: string): string {
  return join(root, posix.resolve('/', containerPath));
}

function walk(dir: string, rel = ''): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(join(dir, rel), { withFileTypes: true })) {
    const path = rel ? `${rel}/${entry.name}` : entry.name;
    out.push(path);
    if (entry.isDirectory()) out.push(...walk(dir, path));
  }
  return out;
}

function applyOwnership(path: string, chown: { uid: number; gid: number } | undefined, chmod: number | undefined): void {
  if (chown) lchownSync(path, chown.uid, chown.gid);
  if (chmod !== undefined && !lstatSync(path).isSymbolicLink()) chmodSync(path, chmod);
}

function copyOne(src: string, dest: string): void {
  const st = lstatSync(src);
  mkdirSync(dirname(dest), { recursive: true });
  if (st.isSymbolicLink()) symlinkSync(readlinkSync(src), dest);
  else if (st.isDirectory()) {
    mkdirSync(dest, { recursive: true });
    chmodSync(dest, st.mode & 0o7777);
  } else {
    copyFileSync(src, dest);
    chmodSync(dest, st.mode & 0o7777);
  }
}

class ImageBuilder {
  private readonly built = new Map<string, Promise<BuiltStage>>();
  private readonly ignored = readDockerignore();

  constructor(
    private readonly stages: Stage[],
    private readonly globalArgs: Map<string, string>,
    private readonly workRoot: string,
  ) {}

  // The stages reproduced so far (those the final stage needs), in Dockerfile order.
  async reproduced(): Promise<BuiltStage[]> {
    const keys = [...this.built.keys()].sort((a, b) => Number(a) - Number(b));
    return Promise.all(keys.map((key) => this.built.get(key) as Promise<BuiltStage>));
  }

  stageNamed(ref: string): Stage | undefined {
    return this.stages.find((s) => s.name === ref.toLowerCase() || String(s.index) === ref);
  }

  build(stage: Stage): Promise<BuiltStage> {
    const key = String(stage.index);
    let promise = this.built.get(key);
    if (!promise) {
      promise = this.reproduce(stage);
      this.built.set(key, promise);
    }
    return promise;
  }

  private async reproduce(stage: Stage): Promise<BuiltStage> {
    // Start every stage this one copies from now, so that independent stages build concurrently.
    for (const { op, args } of stage.instructions) {
      const from = op === 'COPY' ? splitFlags(args).flags.get('from') : undefined;
      if (from) {
        const source = this.stageNamed(from);
        assert.ok(source, `COPY --from=${from}: not a stage of this Dockerfile (images are not reproduced)`);
        assert.ok(source.index < stage.index, `COPY --from=${from} refers to a later stage`);
        void this.build(source).catch(() => undefined);
      }
    }
    const root = join(this.workRoot, `${stage.index}-${stage.name ?? 'stage'}`);
    let result: BuiltStage;
    const parent = this.stageNamed(stage.base);
    if (parent && parent.index < stage.index) {
      const base = await this.build(parent);
      cpSync(base.root, root, { recursive: true, verbatimSymlinks: true });
      result = { ...base, stage, root, env: { ...base.env }, expose: [...base.expose], contextFiles: [], runs: [] };
    } else {
      mkdirSync(root, { recursive: true });
      result = {
        stage,
        root,
        workdir: '/',
        env: baseImageEnv(),
        user: undefined,
        expose: [],
        cmd: undefined,
        entrypoint: undefined,
        healthcheck: undefined,
        stopSignal: 'SIGTERM',
        contextFiles: [],
        runs: [],
      };
    }
    chmodSync(root, 0o755);
    const stageArgs = new Map<string, string>();

    for (const { op, args, line } of stage.instructions) {
      const where = `Dockerfile line ${line} (${op} ${args.slice(0, 60)})`;
      const vars = { ...Object.fromEntries(stageArgs), ...result.env };
      switch (op) {
        case 'WORKDIR':
          result.workdir = posix.resolve(result.workdir, substitute(args.trim(), vars));
          mkdirSync(hostPath(root, result.workdir), { recursive: true });
          break;
        case 'ENV': {
          const words = shellWords(args);
          if (words.length > 0 && !(words[0] as string).includes('=')) {
            result.env[words[0] as string] = substitute(words.slice(1).join(' '), vars); // legacy `ENV KEY value`
          } else {
            for (const word of words) {
              const eq = word.indexOf('=');
              assert.ok(eq > 0, `${where}: not KEY=value`);
              result.env[word.slice(0, eq)] = substitute(word.slice(eq + 1), vars);
            }
          }
          break;
        }
        case 'ARG': {
          const [name = '', ...value] = args.trim().split('=');
          stageArgs.set(name, value.length > 0 ? value.join('=').replace(/^"(.*)"$/, '$1') : (this.globalArgs.get(name) ?? ''));
          break;
        }
        case 'COPY':
          await this.copy(result, args, vars, where);
          break;
        case 'RUN':
          assert.equal(result.user, undefined, `${where}: RUN after USER is not reproduced by this test`);
          await this.runInStage(result, args, stageArgs, where);
          break;
        case 'USER':
          result.user = substitute(args.trim(), vars);
          break;
        case 'EXPOSE':
          result.expose.push(...args.split(/\s+/).filter(Boolean).map((p) => Number(p.replace(/\/tcp$/, ''))));
          break;
        case 'CMD':
          result.cmd = commandForm(args).argv;
          break;
        case 'ENTRYPOINT':
          result.entrypoint = commandForm(args).argv;
          break;
        case 'STOPSIGNAL':
          result.stopSignal = /^\d+$/.test(args.trim()) ? args.trim() : args.trim().replace(/^(?!SIG)/, 'SIG');
          break;
        case 'HEALTHCHECK': {
          if (args.trim().toUpperCase() === 'NONE') {
            result.healthcheck = 'NONE';
            break;
          }
          const { flags, rest } = splitFlags(args);
          assert.match(rest, /^CMD\s/i, `${where}: HEALTHCHECK [options] CMD ...`);
          result.healthcheck = {
            argv: commandForm(rest.replace(/^CMD\s+/i, '')).argv,
            timeoutMs: durationMs(flags.get('timeout') ?? '30s'),
            startPeriodMs: durationMs(flags.get('start-period') ?? '0s'),
          };
          break;
        }
        case 'LABEL':
        case 'MAINTAINER':
          break;
        default:
          assert.fail(`${where}: ${op} is not reproduced by this test; extend test/deploy/image-layout.test.ts`);
      }
    }
    return result;
  }

  private async copy(target: BuiltStage, args: string, vars: Record<string, string>, where: string): Promise<void> {
    const { flags, rest } = splitFlags(args);
    for (const flag of flags.keys()) {
      assert.ok(['from', 'chown', 'chmod', 'link'].includes(flag), `${where}: COPY --${flag} is not reproduced by this test`);
    }
    let chown: { uid: number; gid: number } | undefined;
    const chownFlag = flags.get('chown');
    if (chownFlag) {
      const m = /^(\d+)(?::(\d+))?$/.exec(chownFlag);
      assert.ok(m, `${where}: only numeric --chown is reproduced`);
      chown = { uid: Number(m[1]), gid: Number(m[2] ?? m[1]) };
    }
    const chmod = flags.has('chmod') ? parseInt(flags.get('chmod') as string, 8) : undefined;
    const words = rest.trim().startsWith('[')
      ? (JSON.parse(rest) as string[])
      : shellWords(rest).map((w) => substitute(w, vars));
    assert.ok(words.length >= 2, `${where}: COPY needs a source and a destination`);
    const dest = words.at(-1) as string;
    const sources = words.slice(0, -1);
    const destPath = posix.resolve(target.workdir, dest);
    const destIsDir = dest.endsWith('/') || sources.length > 1;

    const from = flags.get('from');
    const fromStage = from ? await this.build(this.stageNamed(from) as Stage) : undefined;
    for (const source of sources) {
      if (fromStage) {
        // COPY --from: the path inside that stage's filesystem; .dockerignore does not apply.
        const src = hostPath(fromStage.root, posix.resolve(fromStage.workdir, source));
        assert.ok(existsSync(src), `${where}: ${source} does not exist in stage ${from}`);
        const isDir = statSync(src).isDirectory();
        const dst = hostPath(target.root, !isDir && (destIsDir || this.isDir(target, destPath)) ? posix.join(destPath, posix.basename(source)) : destPath);
        cpSync(src, dst, { recursive: true, verbatimSymlinks: true, force: true });
        const copied = isDir ? walk(dst).map((p) => join(dst, p)).concat(dst) : [dst];
        if (chown || chmod !== undefined) for (const p of copied) applyOwnership(p, chown, chmod);
        continue;
      }
      // From the build context: only what .dockerignore lets in.
      const rel = posix.normalize(source).replace(/^(\.\/)+/, '').replace(/\/+$/, '');
      assert.ok(!rel.startsWith('..') && !posix.isAbsolute(rel), `${where}: ${source} is outside the context`);
      const matches = /[*?[]/.test(rel) ? this.glob(rel) : [rel];
      for (const match of matches) {
        const abs = join(repoRoot, match);
        assert.ok(existsSync(abs), `${where}: ${match} is not in the build context`);
        if (statSync(abs).isDirectory()) {
          const dst = hostPath(target.root, destPath);
          mkdirSync(dst, { recursive: true });
          const included = walk(abs).filter((p) => !this.ignored(`${match}/${p}`));
          assert.ok(included.length > 0 || !this.ignored(match), `${where}: ${match} is excluded by .dockerignore`);
          for (const p of included) {
            copyOne(join(abs, p), join(dst, p));
            applyOwnership(join(dst, p), chown, chmod);
            if (!lstatSync(join(abs, p)).isDirectory()) target.contextFiles.push(`${match}/${p}`);
          }
        } else {
          assert.ok(!this.ignored(match), `${where}: ${match} is excluded by .dockerignore, so the build would fail`);
          const dst = hostPath(target.root, destIsDir || this.isDir(target, destPath) ? posix.join(destPath, posix.basename(match)) : destPath);
          copyOne(abs, dst);
          applyOwnership(dst, chown, chmod);
          target.contextFiles.push(match);
        }
      }
    }
  }

  private isDir(stage: BuiltStage, containerPath: string): boolean {
    const p = hostPath(stage.root, containerPath);
    return existsSync(p) && statSync(p).isDirectory();
  }

  // Wildcards in the last path segment only (package*.json); a wider pattern fails loudly.
  private glob(rel: string): string[] {
    const dir = posix.dirname(rel);
    assert.ok(!/[*?[]/.test(dir), `COPY ${rel}: wildcards in folders are not reproduced by this test`);
    const regex = new RegExp(`^${posix.basename(rel).replace(/[.+^${}()|\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')}$`);
    const found = readdirSync(join(repoRoot, dir))
      .filter((name) => regex.test(name))
      .map((name) => (dir === '.' ? name : `${dir}/${name}`))
      .filter((path) => !this.ignored(path));
    assert.ok(found.length > 0, `COPY ${rel}: no file of the context matches`);
    return found;
  }

  private async runInStage(stage: BuiltStage, args: string, stageArgs: Map<string, string>, where: string): Promise<void> {
    const { argv, shell } = commandForm(args);
    // Only npm commands are reproduced: anything else could act on this machine instead of a container.
    const steps = shell ? (argv[2] as string).split(/&&|\|\||;/).map((s) => s.trim()) : [argv.join(' ')];
    for (const step of steps) assert.match(step, /^npm\s/, `${where}: only npm commands are reproduced by this test`);
    const command = (shell ? (argv[2] as string) : argv.join(' ')).replace(/\bnpm\s+ci\b/g, `npm ci ${NPM_CI_EXTRA}`);
    const cwd = hostPath(stage.root, stage.workdir);
    const env = { ...npmHostEnv(), ...Object.fromEntries(stageArgs), ...stage.env };
    const result = await run('/bin/sh', ['-c', command], { cwd, env, timeoutMs: 100_000 });
    assert.ok(
      !result.timedOut && result.code === 0,
      `${where}: \`${command}\` ${result.timedOut ? 'timed out' : `exited ${result.code}`}\n${tail(result.stdout)}\n${tail(result.stderr)}`,
    );
    stage.runs.push({ command, ms: result.ms });
  }
}

// ---------------------------------------------------------------------------------------------
// Running the final stage: the image's CMD, as its USER, in its WORKDIR, on a read-only mount.

interface Launcher {
  description: string;
  readOnlyMount: boolean;
  uid: number | undefined;
  command(argv: string[]): { cmd: string; args: string[] };
}

function makeLauncher(stage: BuiltStage): Launcher {
  const user = stage.user ?? '0';
  // The node images' `node` user is 1000:1000; other names would need the image's /etc/passwd.
  const m = /^(\d+)(?::(\d+))?$/.exec(user === 'node' ? '1000:1000' : user);
  assert.ok(m, `USER ${user}: only numeric users (or node) are reproduced by this test`);
  const uid = Number(m[1]);
  const gid = Number(m[2] ?? m[1]);
  const isRoot = process.getuid?.() === 0;
  const canUnshare = isRoot && spawnSync('unshare', ['--mount', '--propagation', 'private', 'true']).status === 0;
  if (canUnshare) {
    // A private mount namespace: the stage root is bind-mounted onto itself read-only, the working
    // directory is entered again *through* that mount (the inherited cwd would still point at the
    // writable one), privileges drop to the image's USER, and the command is exec'd: no process is
    // left between the test and node, so signals reach node as they would as PID 1 in the container.
    const script = [
      'set -e',
      'root=$1 workdir=$2 uid=$3 gid=$4',
      'shift 4',
      'mount --bind "$root" "$root"',
      'mount -o remount,bind,ro "$root"',
      'cd "$workdir"',
      'exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"',
    ].join('\n');
    const workdir = hostPath(stage.root, stage.workdir);
    return {
      description: `read-only bind mount of the stage root, as uid ${uid}:${gid}`,
      readOnlyMount: true,
      uid,
      command: (argv) => ({
        cmd: 'unshare',
        args: ['--mount', '--propagation', 'private', '--', '/bin/sh', '-c', script, 'sh', stage.root, workdir, String(uid), String(gid), ...argv],
      }),
    };
  }
  // Without root there is no mount namespace to make a read-only mount in, nor a way to become the
  // image's USER: the command runs as this user, and the before/after snapshot of the runtime
  // directory is the proof that the service writes nothing into its own files.
  return {
    description: `no read-only mount (needs root for a mount namespace); snapshot comparison only, as uid ${process.getuid?.()}`,
    readOnlyMount: false,
    uid: undefined,
    command: (argv) => ({ cmd: argv[0] as string, args: argv.slice(1) }),
  };
}

type Snapshot = Map<string, string>;

function snapshot(root: string): Snapshot {
  const snap: Snapshot = new Map();
  for (const path of ['', ...walk(root)]) {
    const st = lstatSync(join(root, path), { bigint: true });
    snap.set(path || '.', `${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.size} ino=${st.ino} mtime=${st.mtimeNs} ctime=${st.ctimeNs}`);
  }
  return snap;
}

function snapshotDiff(before: Snapshot, after: Snapshot): string[] {
  const diff: string[] = [];
  for (const [path, meta] of after) {
    const old = before.get(path);
    if (old === undefined) diff.push(`+ ${path}`);
    else if (old !== meta) diff.push(`~ ${path}: ${old} -> ${meta}`);
  }
  for (const path of before.keys()) if (!after.has(path)) diff.push(`- ${path}`);
  return diff;
}

async function waitForExit(child: ChildProcess, ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null } | undefined> {
  if (child.exitCode !== null || child.signalCode !== null) return { code: child.exitCode, signal: child.signalCode };
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), ms);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal });
    });
  });
}

async function get(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(3000) });
  return { status: res.status, body: await res.text() };
}

// ---------------------------------------------------------------------------------------------

test('the image runtime layout, reproduced from the Dockerfile without Docker', { timeout: 170_000 }, async (t) => {
  const dockerfile = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8');
  const { globalArgs, stages } = parseDockerfile(dockerfile);
  const final = stages.at(-1);
  assert.ok(final, 'the Dockerfile has a FROM');

  const work = mkdtempSync(join(tmpdir(), 'jwks-image-'));
  chmodSync(work, 0o755); // the image's USER must reach the runtime root
  let server: ChildProcess | undefined;
  t.after(() => {
    // Every child leads its own process group; the group is ended even when its leader has exited,
    // since a leader's children (a shell-form CMD's node) can outlive it.
    for (const child of [...children, ...(server ? [server] : [])]) {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // the whole group is gone
      }
    }
    rmSync(work, { recursive: true, force: true });
  });

  const builder = new ImageBuilder(stages, globalArgs, work);
  const started = Date.now();
  let runtime: BuiltStage | undefined;
  const built: BuiltStage[] = [];

  await t.test('every stage the final one needs reproduces from the build context', async (st) => {
    runtime = await builder.build(final);
    built.push(...(await builder.reproduced()));
    st.diagnostic(`stages built in ${Date.now() - started} ms: ${built.map((b) => `${b.stage.name ?? b.stage.index} [${b.runs.map((r) => `${r.command}: ${r.ms} ms`).join('; ')}]`).join(', ')}`);

    const build = built.find((b) => b.runs.some((r) => /\bnpm run build\b/.test(r.command)));
    assert.ok(build, 'a stage runs `npm run build`');
    assert.ok(existsSync(hostPath(build.root, posix.join(build.workdir, 'node_modules/typescript'))), 'the build stage has its dev dependencies');
    const contextFiles = built.flatMap((b) => b.contextFiles);
    assert.ok(contextFiles.includes('package-lock.json'), 'the lockfile is copied from the context');
    for (const path of contextFiles) {
      assert.doesNotMatch(path, /^(test|node_modules|dist|\.git|helm|docs)\/|^\.env/, `${path} reached the image from the build context`);
    }
  });

  await t.test('the final stage holds compiled JS and production dependencies only', (st) => {
    assert.ok(runtime, 'the final stage was built');
    const app = hostPath(runtime.root, runtime.workdir);
    const files = walk(runtime.root);
    const outsideModules = files.filter((p) => !/(^|\/)node_modules(\/|$)/.test(p));
    // Declarations (.d.ts) come with the compiled output for the package's TypeScript users; sources must not.
    assert.deepEqual(outsideModules.filter((p) => /\.(ts|mts|cts|tsx)$/.test(p) && !/\.d\.(ts|mts|cts)$/.test(p)), [], 'no TypeScript sources');
    assert.deepEqual(outsideModules.filter((p) => /(^|\/)(src|test|tests)(\/|$)|(^|\/)tsconfig[^/]*\.json$|(^|\/)\.env/.test(p)), [], 'no src/, test/, tsconfig or .env');

    const lock = JSON.parse(readFileSync(join(app, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { dev?: boolean; optional?: boolean; devOptional?: boolean; peer?: boolean }>;
    };
    const dev = Object.entries(lock.packages).filter(([path, meta]) => path && meta.dev);
    const prod = Object.entries(lock.packages).filter(([path, meta]) => path && !meta.dev && !meta.optional && !meta.devOptional && !meta.peer);
    assert.deepEqual(dev.map(([path]) => path).filter((path) => existsSync(join(app, path))), [], 'dev dependencies are absent');
    assert.deepEqual(prod.map(([path]) => path).filter((path) => !existsSync(join(app, path))), [], 'production dependencies are present');
    for (const path of ['node_modules/typescript', 'node_modules/tsx', 'node_modules/@types/node', 'node_modules/.bin/tsc', 'node_modules/.bin/tsx']) {
      assert.equal(existsSync(join(app, path)), false, `${path} is in the runtime image`);
    }
    const argv = [...(runtime.entrypoint ?? []), ...(runtime.cmd ?? [])];
    assert.ok(argv.length > 0, 'the final stage has a CMD');
    for (const arg of argv.flatMap((a) => a.split(/\s+/)).filter((a) => /^[\w./-]+\.[cm]?js$/.test(a))) {
      assert.ok(existsSync(hostPath(runtime.root, posix.resolve(runtime.workdir, arg))), `CMD's ${arg} exists in the WORKDIR`);
    }
    st.diagnostic(`runtime root: ${files.length} entries, ${prod.length} production packages, ${dev.length} dev packages absent`);
  });

  await t.test('the CMD serves JWKS and health on a read-only root, the HEALTHCHECK passes, the STOPSIGNAL stops it cleanly', async (st) => {
    assert.ok(runtime, 'the final stage was built');
    const contract = readContractEnv();
    assert.deepEqual(
      [...runtime.expose].sort(),
      [Number(contract.defaults.get('PORT')), Number(contract.defaults.get('INTERNAL_PORT'))].sort(),
      'EXPOSE names the default public and internal ports',
    );
    const launcher = makeLauncher(runtime);
    st.diagnostic(launcher.description);
    const argv = [...(runtime.entrypoint ?? []), ...(runtime.cmd ?? [])];
    const cwd = hostPath(runtime.root, runtime.workdir);
    const [port, internalPort, closedPort] = [await freePort(), await freePort(), await freePort()];
    const env = { ...runtime.env, PORT: String(port), INTERNAL_PORT: String(internalPort), HOST: '127.0.0.1' };

    if (launcher.readOnlyMount) {
      // The mount really is read-only for the image's user.
      const probe = launcher.command(['node', '-e', "require('fs').writeFileSync('probe-write', 'x')"]);
      const result = await run(probe.cmd, probe.args, { cwd, env, timeoutMs: 10_000 });
      assert.notEqual(result.code, 0, 'a write into the WORKDIR failed');
      assert.match(result.stderr, /EROFS/, 'with "read-only file system"');
    }

    const before = snapshot(runtime.root);
    const { cmd, args } = launcher.command(argv);
    let stdout = '';
    let stderr = '';
    // Its own process group, so that a failure's cleanup also ends whatever a wrapper (a shell-form
    // CMD's sh) started; the signal under test still goes to the started process alone.
    server = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    server.stdout?.on('data', (c: Buffer) => (stdout += c.toString()));
    server.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
    const output = () => `\nstdout:\n${tail(stdout)}\nstderr:\n${tail(stderr)}`;

    const healthcheck = runtime.healthcheck;
    assert.ok(healthcheck && healthcheck !== 'NONE', 'the final stage has a HEALTHCHECK');
    // Ready within the HEALTHCHECK's start period (20 s at least, for a slow machine).
    const deadline = Date.now() + Math.max(healthcheck.startPeriodMs, 20_000);
    let ready = false;
    while (!ready && Date.now() < deadline && server.exitCode === null && server.signalCode === null) {
      ready = await get(`http://127.0.0.1:${port}/readyz`).then((r) => r.status === 200, () => false);
      if (!ready) await sleep(100);
    }
    assert.ok(ready, `the service became ready on 127.0.0.1:${port}${output()}`);

    const procCmdline = `/proc/${server.pid}/cmdline`;
    if (existsSync(procCmdline)) {
      assert.deepEqual(readFileSync(procCmdline, 'utf8').split('\0').slice(0, -1), argv, 'the process is the CMD itself');
      if (launcher.uid !== undefined) {
        assert.match(readFileSync(`/proc/${server.pid}/status`, 'utf8'), new RegExp(`\\nUid:\\s+${launcher.uid}\\s`), 'it runs as the image USER');
      }
    }

    const jwks = await get(`http://127.0.0.1:${port}/.well-known/jwks.json`);
    assert.equal(jwks.status, 200);
    const { keys } = JSON.parse(jwks.body) as { keys: Record<string, unknown>[] };
    assert.ok(Array.isArray(keys) && keys.length > 0, 'the JWKS has keys');
    for (const key of keys) {
      assert.ok(typeof key.kid === 'string' && typeof key.kty === 'string');
      for (const secret of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) assert.equal(key[secret], undefined, `public JWKS has no ${secret}`);
    }
    assert.equal((await get(`http://127.0.0.1:${port}/healthz`)).status, 200);
    assert.equal((await get(`http://127.0.0.1:${port}/readyz`)).status, 200);
    assert.equal((await get(`http://127.0.0.1:${internalPort}/readyz`)).status, 200);

    const check = launcher.command(healthcheck.argv);
    const healthy = await run(check.cmd, check.args, { cwd, env, timeoutMs: healthcheck.timeoutMs + 2000 });
    assert.equal(healthy.code, 0, `HEALTHCHECK exits 0 (${healthy.ms} ms)\n${healthy.stderr}`);
    const unhealthy = await run(check.cmd, check.args, { cwd, env: { ...env, PORT: String(closedPort) }, timeoutMs: healthcheck.timeoutMs + 2000 });
    assert.notEqual(unhealthy.code, 0, 'the HEALTHCHECK follows PORT: nothing listens on the other port');

    const stopSignal = runtime.stopSignal as NodeJS.Signals;
    const stopping = Date.now();
    server.kill(stopSignal);
    const exit = await waitForExit(server, 5000);
    assert.ok(exit, `exits within 5 s of ${stopSignal}${output()}`);
    assert.deepEqual(exit, { code: 0, signal: null }, `clean exit after ${stopSignal}${output()}`);
    st.diagnostic(`${stopSignal} to exit: ${Date.now() - stopping} ms`);
    assert.doesNotMatch(stderr, /EROFS|EACCES/, 'no write was attempted');

    assert.deepEqual(snapshotDiff(before, snapshot(runtime.root)), [], 'nothing was written into the runtime root');
    st.diagnostic(`total ${Date.now() - started} ms`);
  });
});
