// The benchmark suite of issue 5 (not part of the tests): one command, bounded runs on loopback only.
//
//   node --import tsx bench/run.ts [--quick] [--only=jwks,conditional,assertions,contention,growth,resilience]
//                                  [--loadgen=wrk|autocannon] [--profile-all] [--no-build] [--rev=GIT-REV]
//   node --import tsx bench/run.ts --report-only   (re-render RESULTS.md from bench/out/results.json)
//
// Every comparison measures the service and its baseline in the same run, interleaved (A, B, A, B, ...),
// and reports the median: the machine has 2 cores shared by client, server and whatever else is running.
// Writes bench/RESULTS.md and bench/ratios.svg; raw data, logs and CPU profiles go to bench/out/.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assertionLoad, commandFor, detectTool, type LoadResult, type LoadSpec, runLoad, type Tool } from './lib/load.js';
import { activeKeyOf, loadServiceModules, sealedRecordsVersion, seedRsaKeySets } from './lib/keys.js';
import {
  childPids,
  cpuMicrosOf,
  freePort,
  median,
  rssBytes,
  sampleRss,
  sleep,
  type Spawned,
  spawnLogged,
  stop,
  stopAll,
  waitHttp,
} from './lib/procs.js';
import { IMAGE_ENV_TEXT, serviceEnv } from './lib/service-env.js';
import { startBareFastify } from './lib/bare.js';
import { type Probe, probe } from './lib/probe.js';
import { type ProfileSummary, summarizeProfile } from './lib/profile.js';
import { type RedisServer, startRedis, statsDelta, totalCommands } from './lib/redis.js';
import { observe, schedTraceAvailable, serviceSched } from './lib/sched-trace.js';
import { renderChart, renderResults, type Results, type Target } from './lib/report.js';

const BENCH = dirname(fileURLToPath(import.meta.url));
const ROOT = dirname(BENCH);
const OUT = join(BENCH, 'out');
const DIST = join(OUT, 'dist');

// ---------------------------------------------------------------- options
const argv = process.argv.slice(2);
const flag = (name: string) => argv.includes(`--${name}`);
const option = (name: string) => argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
const QUICK = flag('quick');
const SECTIONS = ['jwks', 'conditional', 'assertions', 'contention', 'growth', 'resilience'] as const;
type Section = (typeof SECTIONS)[number];
const only = option('only')?.split(',') as Section[] | undefined;
const enabled = (s: Section) => !only || only.includes(s);

// Durations are whole seconds (wrk's unit). Full: ~11 minutes on 2 cores; quick: a smoke run without profiles.
// Five interleaved runs per comparison: this machine (a shared VM) has slow spells of a few seconds, and the
// median of three was moved by one of them more than once.
const P = QUICK
  ? { reps: 2, warmS: 1, jwksS: 1, condS: 1, signS: 1, contentionS: 1, growthS: 1, growthSets: [1, 100, 1000], resilienceS: 4, profileS: 2 }
  : { reps: 5, warmS: 1, jwksS: 3, condS: 2, signS: 2, contentionS: 5, growthS: 2, growthSets: [1, 100, 1000], resilienceS: 8, profileS: 4 };
const JWKS_CONNECTIONS = 64;
const SIGN_CONNECTIONS = 16;
const PROBE_RATE = 200;
const ALGS = ['RS256', 'PS256', 'ES256', 'EdDSA'] as const;
type Alg = (typeof ALGS)[number];
const setOf = (alg: Alg) => alg.toLowerCase();

const started = Date.now();
const log = (msg: string) => process.stderr.write(`[bench ${((Date.now() - started) / 1000).toFixed(0).padStart(3)}s] ${msg}\n`);

// ---------------------------------------------------------------- environment of the service
const KEK = `bench:${randomBytes(32).toString('base64')}`;
const ENCRYPTION_KEYS = [{ id: 'bench', key: Buffer.from(KEK.slice('bench:'.length), 'base64') }];
const API_TOKEN = randomBytes(32).toString('base64url');
const PREFIX = 'jwks-signer:';
const GROWTH_PREFIX = 'jwks-signer-growth:';
// Fixed, so that the sealed growth key sets can be cached between runs (bench/out/cache); a benchmark-only key.
const GROWTH_KEK = `bench-growth:${createHash('sha256').update('jwks-signer benchmark growth key sets').digest('base64')}`;
const commands = new Set<string>();

interface Service {
  name: string;
  proc: Spawned;
  port: number;
  internalPort: number;
  base: string;
  internal: string;
  /** What it was started with beyond the common environment (a restart reuses it). */
  env: Record<string, string>;
}

async function startService(name: string, redis: RedisServer, env: Record<string, string>, nodeArgs: string[] = [], readyMs = 60_000): Promise<Service> {
  const [port, internalPort] = [await freePort(), await freePort()];
  const fullEnv = serviceEnv({ port, internalPort, redisUrl: redis.url, kek: KEK, apiToken: API_TOKEN }, { REDIS_KEY_PREFIX: PREFIX, ...env });
  const proc = spawnLogged(name, process.execPath, [...nodeArgs, join(DIST, 'server.js')], fullEnv, join(OUT, 'logs', `${name}.log`), ROOT);
  const base = `http://127.0.0.1:${port}`;
  await waitHttp(`${base}/readyz`, readyMs, proc);
  return { name, proc, port, internalPort, base, internal: `http://127.0.0.1:${internalPort}`, env };
}

/**
 * A service's public (or internal) port as a load target whose restart replaces its process in place (`svc` is
 * updated, so later sections and other targets of the same service use the new process and ports).
 */
function serviceTarget(label: string, svc: Service, redis: RedisServer, { internal = false } = {}): LoadTarget {
  return {
    label,
    pids: () => [svc.proc.pid],
    get base() {
      return internal ? svc.internal : svc.base;
    },
    redis,
    restart: () => restartService(svc, redis),
  };
}

/** Replaces a service's process with a fresh one started with the same environment (`svc` is updated in place). */
async function restartService(svc: Service, redis: RedisServer): Promise<void> {
  await stop(svc.proc, 15_000);
  Object.assign(svc, await startService(svc.name, redis, svc.env));
}

function writeKeySetsFile(name: string, sets: Record<string, { alg: string }>): string {
  const file = join(OUT, name);
  writeFileSync(file, JSON.stringify({ keySets: sets }));
  return file;
}

async function post(url: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

// ---------------------------------------------------------------- measuring one load
interface LoadTarget {
  label: string;
  pids: () => number[];
  base: string;
  redis?: RedisServer;
  /** Replaces the target's process with a fresh one (section 1: a process per run; see `interleaved`). */
  restart?: () => Promise<void>;
}

interface Run extends LoadResult {
  cpuUsPerReq: number;
  redisCommands?: Record<string, number>;
}

async function measure(tool: Tool, target: LoadTarget, spec: Omit<LoadSpec, 'base'>): Promise<Run> {
  const full: LoadSpec = { ...spec, base: target.base };
  commands.add(commandFor(tool, full));
  const pids = target.pids();
  const statsBefore = target.redis ? await target.redis.commandStats() : undefined;
  const cpu0 = cpuMicrosOf(pids);
  const result = await runLoad(tool, full);
  const cpu = cpuMicrosOf(pids) - cpu0;
  const run: Run = { ...result, cpuUsPerReq: result.requests > 0 ? cpu / result.requests : NaN };
  if (target.redis && statsBefore) run.redisCommands = Object.fromEntries(statsDelta(statsBefore, await target.redis.commandStats()));
  return run;
}

interface Summary {
  label: string;
  runs: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  cpuUsPerReq: number;
  requests: number;
  seconds: number;
  errors: number;
  redisCommands?: Record<string, number>;
  redisPerRequest?: number;
  tool: string;
  all: number[];
}

function summarize(label: string, runs: Run[]): Summary {
  const requests = runs.reduce((a, r) => a + r.requests, 0);
  const summary: Summary = {
    label,
    runs: runs.length,
    rps: median(runs.map((r) => r.rps)),
    p50Ms: median(runs.map((r) => r.p50Ms)),
    p99Ms: median(runs.map((r) => r.p99Ms)),
    cpuUsPerReq: median(runs.map((r) => r.cpuUsPerReq)),
    requests,
    seconds: runs.reduce((a, r) => a + r.seconds, 0),
    errors: runs.reduce((a, r) => a + r.errors, 0),
    tool: [...new Set(runs.map((r) => r.tool))].join('+'),
    all: runs.map((r) => Math.round(r.rps)),
  };
  if (runs.every((r) => r.redisCommands)) {
    const merged: Record<string, number> = {};
    for (const r of runs) for (const [cmd, n] of Object.entries(r.redisCommands!)) merged[cmd] = (merged[cmd] ?? 0) + n;
    summary.redisCommands = merged;
    summary.redisPerRequest = Object.values(merged).reduce((a, b) => a + b, 0) / Math.max(1, requests);
  }
  return summary;
}

/** Replaces the target's process with a fresh one (if it can restart) and warms it for P.warmS with `spec`. */
async function restartWarm(tool: Tool, target: LoadTarget | undefined, spec: Omit<LoadSpec, 'base'>): Promise<void> {
  if (!target?.restart) return;
  await target.restart();
  await measure(tool, target, { ...spec, durationS: P.warmS });
}

/**
 * Warms every target, then runs them interleaved `reps` times (A, B, C, A, B, C, ...). With `fresh`, a target that
 * can restart gets a fresh process (warmed again) before each run: one process for all runs keeps whatever bias its
 * placement gives it (which core its threads share with the load generator) in every run of its configuration.
 */
async function interleaved(
  tool: Tool,
  cases: Array<{ key: string; target: LoadTarget; spec: Omit<LoadSpec, 'base'> }>,
  reps: number,
  { fresh = false } = {},
): Promise<Map<string, Summary>> {
  for (const c of cases) {
    const warm = await measure(tool, c.target, { ...c.spec, durationS: P.warmS, countCodes: true });
    const codes = JSON.stringify(warm.codes ?? {});
    log(`  warm ${c.key}: ${Math.round(warm.rps)} req/s, codes ${codes}, errors ${warm.errors}`);
  }
  const runs = new Map<string, Run[]>(cases.map((c) => [c.key, []]));
  for (let r = 0; r < reps; r++) {
    for (const c of cases) {
      if (fresh && r > 0) await restartWarm(tool, c.target, c.spec);
      const run = await measure(tool, c.target, c.spec);
      runs.get(c.key)!.push(run);
      log(`  ${c.key} #${r + 1}: ${Math.round(run.rps)} req/s p50 ${run.p50Ms.toFixed(2)} ms p99 ${run.p99Ms.toFixed(2)} ms cpu ${run.cpuUsPerReq.toFixed(1)} us/req errors ${run.errors}`);
    }
  }
  return new Map(cases.map((c) => [c.key, summarize(c.key, runs.get(c.key)!)]));
}

// ---------------------------------------------------------------- the raw crypto.sign baseline
async function rawSign(keyFile: string, alg: Alg, input: string, inFlight: number, durationS: number): Promise<{ rate: number; cpuUsPerOp: number }> {
  const spec = JSON.stringify({ keyFile, alg, input, inFlight, durationS });
  commands.add(`node bench/baselines/raw-sign.mjs '{"alg":"${alg}","inFlight":${inFlight},"durationS":${durationS},...}'`);
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(process.execPath, [join(BENCH, 'baselines', 'raw-sign.mjs'), spec], { stdio: ['ignore', 'pipe', 'inherit'] });
    let text = '';
    child.stdout.on('data', (c: Buffer) => (text += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), (durationS + 30) * 1000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(text);
      else reject(new Error(`raw-sign exited ${code}`));
    });
  });
  const line = out.split('\n').find((l) => l.startsWith('BENCH_JSON '))!;
  const j = JSON.parse(line.slice('BENCH_JSON '.length)) as { ops: number; rate: number; cpuMicros: number };
  return { rate: j.rate, cpuUsPerOp: j.cpuMicros / Math.max(1, j.ops) };
}

// ---------------------------------------------------------------- machine description
/** stdout and stderr of a command (nginx -v prints to stderr), or '' when it cannot run. */
function sh(command: string, args: string[]): string {
  const r = spawnSync(command, args, { encoding: 'utf8', env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } });
  return r.error ? '' : `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
}

function machine(toolVersion: string, nginxVersion: string | undefined, rev: string | undefined): Record<string, string> {
  const cpuModel = cpus()[0]?.model ?? 'unknown';
  const dirty = sh('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src'])
    .split('\n')
    .filter(Boolean).length;
  return {
    date: new Date().toISOString(),
    cpu: `${cpuModel}, ${cpus().length} logical cores`,
    memory: `${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
    kernel: sh('uname', ['-sr']),
    node: process.version,
    'load generator': toolVersion,
    nginx: nginxVersion ?? 'not installed (apt-get install -y nginx-light)',
    redis: sh('redis-server', ['--version']).split(' ').slice(0, 3).join(' '),
    'service build': rev
      ? `git ${rev} (${sh('git', ['-C', ROOT, 'rev-parse', '--short', rev])}), compiled with tsc to bench/out/dist, run as ${IMAGE_ENV_TEXT} node dist/server.js (the image's environment)`
      : `working tree at ${sh('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'])}${dirty ? ` + ${dirty} uncommitted change(s) in src/` : ''}, compiled with tsc to bench/out/dist, run as ${IMAGE_ENV_TEXT} node dist/server.js (the image's environment)`,
    'load average at start': loadavg().map((l) => l.toFixed(2)).join(' '),
  };
}

// ---------------------------------------------------------------- nginx
function nginxBinary(): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin']) {
    if (dir && existsSync(join(dir, 'nginx'))) return join(dir, 'nginx');
  }
  return undefined;
}

async function startNginx(bodyFile: string): Promise<{ proc: Spawned; base: string; workers: () => number[] } | undefined> {
  const bin = nginxBinary();
  if (!bin) return undefined;
  const dir = join(OUT, 'nginx');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'www', '.well-known'), { recursive: true });
  mkdirSync(join(dir, 'tmp'), { recursive: true });
  writeFileSync(join(dir, 'www', '.well-known', 'jwks.json'), readFileSync(bodyFile));
  const port = await freePort();
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${dir}/tmp/${t};`).join('\n');
  writeFileSync(
    join(dir, 'nginx.conf'),
    `${process.getuid?.() === 0 ? 'user root;\n' : ''}worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
${temp}
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
  default_type application/json;
  server {
    listen 127.0.0.1:${port};
    root ${dir}/www;
  }
}
`,
  );
  const proc = spawnLogged('nginx', bin, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], process.env, join(OUT, 'logs', 'nginx.log'));
  const base = `http://127.0.0.1:${port}`;
  await waitHttp(`${base}/.well-known/jwks.json`, 10_000, proc);
  return { proc, base, workers: () => childPids(proc.pid) };
}

// ---------------------------------------------------------------- profiles
async function profileService(
  name: string,
  redis: RedisServer,
  env: Record<string, string>,
  tool: Tool,
  spec: Omit<LoadSpec, 'base' | 'durationS'>,
  onInternal = false,
): Promise<ProfileSummary> {
  // Node writes one profile per thread (CPU.<date>.<time>.<pid>.<thread id>.<seq>.cpuprofile): the main thread
  // (id 0) runs the internal API; the public port runs in its own thread (PUBLIC_SERVER_THREAD), whose profile is
  // the busiest one under a JWKS load.
  const dir = join(OUT, 'profiles', name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const svc = await startService(`profile-${name}`, redis, env, ['--cpu-prof', `--cpu-prof-dir=${dir}`]);
  const base = onInternal ? svc.internal : svc.base;
  await runLoad(tool, { ...spec, base, durationS: P.warmS });
  const fromUs = Number(process.hrtime.bigint() / 1000n);
  const result = await runLoad(tool, { ...spec, base, durationS: P.profileS });
  const toUs = Number(process.hrtime.bigint() / 1000n);
  log(`  profiled ${name}: ${Math.round(result.rps)} req/s`);
  await stop(svc.proc, 15_000);
  const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  const threadOf = (f: string) => Number(f.split('.')[4]);
  const candidates = (onInternal ? files.filter((f) => threadOf(f) === 0) : files).map((f) => ({ f, summary: summarizeProfile(join(dir, f), ROOT, { fromUs, toUs }) }));
  if (candidates.length === 0) throw new Error(`no CPU profile written in ${dir}`);
  const { f, summary } = candidates.reduce((a, b) => (b.summary.busyMs > a.summary.busyMs ? b : a));
  const file = join(OUT, 'profiles', `${name}.cpuprofile`);
  copyFileSync(join(dir, f), file);
  return { ...summary, file: relative(ROOT, file) };
}

// ---------------------------------------------------------------- main
function writeReport(results: Results): void {
  const notesFile = join(BENCH, 'NOTES.md');
  writeFileSync(join(BENCH, 'ratios.svg'), renderChart(results));
  writeFileSync(join(BENCH, 'RESULTS.md'), renderResults(results, existsSync(notesFile) ? readFileSync(notesFile, 'utf8') : undefined));
}

async function main(): Promise<void> {
  if (flag('report-only')) {
    // Re-renders RESULTS.md and the chart from the last run's bench/out/results.json (e.g. after editing NOTES.md).
    writeReport(JSON.parse(readFileSync(join(OUT, 'results.json'), 'utf8')) as Results);
    log('rewrote bench/RESULTS.md and bench/ratios.svg from bench/out/results.json');
    return;
  }
  mkdirSync(join(OUT, 'logs'), { recursive: true });
  for (const f of ['logs']) rmSync(join(OUT, f), { recursive: true, force: true });
  mkdirSync(join(OUT, 'logs'), { recursive: true });
  const { tool, version: toolVersion } = detectTool(option('loadgen'));
  log(`load generator: ${toolVersion}${tool === 'autocannon' ? ' (wrk not found: apt-get install -y wrk for lower client overhead)' : ''}`);

  const rev = option('rev');
  if (!flag('no-build')) {
    rmSync(DIST, { recursive: true, force: true });
    let project = join(ROOT, 'tsconfig.build.json');
    if (rev) {
      // The committed tree of `rev`, not the working tree (which may be mid-edit): its src/ and tsconfigs,
      // exported beside the build; node_modules is still found by walking up to the repository's.
      const tree = join(OUT, 'rev');
      rmSync(tree, { recursive: true, force: true });
      mkdirSync(tree, { recursive: true });
      execFileSync('sh', ['-c', `git -C "${ROOT}" archive "${rev}" src tsconfig.json tsconfig.build.json | tar -x -C "${tree}"`], { stdio: 'inherit' });
      project = join(tree, 'tsconfig.build.json');
    }
    log(`building the service from ${rev ? `git ${rev}` : 'the working tree'} (tsc -p tsconfig.build.json --outDir bench/out/dist)`);
    execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', project, '--outDir', DIST], { cwd: ROOT, stdio: 'inherit' });
  }
  const mods = await loadServiceModules(DIST);

  const results: Results = {
    mode: QUICK ? 'quick' : 'full',
    command: `node --import tsx bench/run.ts${argv.length ? ` ${argv.join(' ')}` : ''}`,
    params: { ...P, jwksConnections: JWKS_CONNECTIONS, signConnections: SIGN_CONNECTIONS, probeRate: PROBE_RATE, threadpool: process.env.UV_THREADPOOL_SIZE ?? '4 (default)' },
    machine: {},
    sections: {},
    targets: [],
    profiles: [],
    commands: [],
    notes: [],
  };
  const nginxVersion = sh('nginx', ['-v']).match(/nginx\/[\d.]+/)?.[0];
  results.machine = machine(toolVersion, nginxVersion, rev);

  const redisDir = join(OUT, 'redis');
  mkdirSync(redisDir, { recursive: true });
  const redis = await startRedis(await freePort(), redisDir);
  await redis.flush();
  const keySetsFile = writeKeySetsFile('key-sets.json', Object.fromEntries(ALGS.map((a) => [setOf(a), { alg: a }])));
  log('starting the service (rate limiting on) and a replica with rate limiting off');
  const full = await startService('service', redis, { KEY_SETS_FILE: keySetsFile });
  const noRl = await startService('service-no-rate-limit', redis, { KEY_SETS_FILE: keySetsFile, RATE_LIMIT_MAX: '0' });
  // Ablation: the same service with logging off, to show what production logging costs.
  const quiet = await startService('service-log-silent', redis, { KEY_SETS_FILE: keySetsFile, LOG_LEVEL: 'silent' });

  const jwksRes = await fetch(`${full.base}/.well-known/jwks.json`);
  const jwksBody = Buffer.from(await jwksRes.arrayBuffer());
  const etag = jwksRes.headers.get('etag') ?? '';
  const bodyFile = join(OUT, 'jwks.json');
  writeFileSync(bodyFile, jwksBody);
  const barePort = await freePort();
  const startBare = () => startBareFastify({ port: barePort, bodyFile, etag, logFile: join(OUT, 'logs', 'bare-fastify.log') });
  let bare = await startBare();
  const bareBase = `http://127.0.0.1:${barePort}`;
  const nginx = await startNginx(bodyFile);
  results.notes.push(`JWKS body: ${jwksBody.length} bytes (key set rs256: an active and a next RSA-2048 key), ETag ${etag}.`);

  const T = {
    full: serviceTarget('service', full, redis),
    noRl: serviceTarget('service, rate limit off', noRl, redis),
    quiet: serviceTarget('service, LOG_LEVEL=silent', quiet, redis),
    bare: {
      label: 'bare Fastify',
      pids: () => [bare.pid],
      base: bareBase,
      async restart() {
        await stop(bare);
        bare = await startBare();
      },
    } as LoadTarget,
    nginx: nginx ? ({ label: 'nginx', pids: () => nginx.workers(), base: nginx.base } as LoadTarget) : undefined,
  };
  const jwksPath = ['/.well-known/jwks.json'];
  const ka = { paths: jwksPath, connections: JWKS_CONNECTIONS, durationS: P.jwksS };
  const close = { ...ka, headers: { Connection: 'close' } };

  try {
    // ---- 1. JWKS, keep-alive and Connection: close
    if (enabled('jwks')) {
      log(`1. Redis commands with no load (${P.jwksS} s), then JWKS keep-alive`);
      const idle0 = await redis.commandStats();
      await sleep(P.jwksS * 1000);
      const idleCommands = Object.fromEntries(statsDelta(idle0, await redis.commandStats()));
      results.sections.redisIdle = { seconds: P.jwksS, commands: idleCommands, perS: Object.values(idleCommands).reduce((a, b) => a + b, 0) / P.jwksS };
      const kaCases = [
        { key: 'service', target: T.full, spec: ka },
        { key: 'bare', target: T.bare, spec: ka },
        { key: 'service-no-rl', target: T.noRl, spec: ka },
        { key: 'service-log-silent', target: T.quiet, spec: ka },
        ...(T.nginx ? [{ key: 'nginx', target: T.nginx, spec: ka }] : []),
      ];
      const kaRes = await interleaved(tool, kaCases, P.reps, { fresh: true });
      log('1. JWKS Connection: close');
      const closeCases = [
        { key: 'service', target: T.full, spec: close },
        { key: 'bare', target: T.bare, spec: close },
        ...(T.nginx ? [{ key: 'nginx', target: T.nginx, spec: close }] : []),
      ];
      const closeRes = await interleaved(tool, closeCases, P.reps, { fresh: true });
      results.sections.jwks = { keepAlive: Object.fromEntries(kaRes), close: Object.fromEntries(closeRes) };
    }

    // ---- 2. Conditional requests and HEAD
    if (enabled('conditional')) {
      log('2. If-None-Match (304) and HEAD');
      const nginxEtag = nginx ? ((await fetch(`${nginx.base}/.well-known/jwks.json`, { method: 'HEAD' })).headers.get('etag') ?? '') : '';
      const cond = { paths: jwksPath, connections: JWKS_CONNECTIONS, durationS: P.condS };
      const inm = (tag: string) => ({ ...cond, headers: { 'If-None-Match': tag } });
      const head = { ...cond, method: 'HEAD' as const };
      const cases = [
        { key: 'service 304', target: T.full, spec: inm(etag) },
        { key: 'bare 304', target: T.bare, spec: inm(etag) },
        ...(T.nginx ? [{ key: 'nginx 304', target: T.nginx, spec: inm(nginxEtag) }] : []),
        { key: 'service HEAD', target: T.full, spec: head },
        { key: 'bare HEAD', target: T.bare, spec: head },
        ...(T.nginx ? [{ key: 'nginx HEAD', target: T.nginx, spec: head }] : []),
      ];
      const res = await interleaved(tool, cases, P.reps);
      results.sections.conditional = Object.fromEntries(res);
    }

    // ---- 3. Assertions over HTTP vs raw crypto.sign with the same key and parallelism
    if (enabled('assertions')) {
      const assertions: Record<string, unknown> = {};
      mkdirSync(join(OUT, 'keys'), { recursive: true, mode: 0o700 });
      for (const alg of ALGS) {
        log(`3. assertions ${alg}`);
        const spec: Omit<LoadSpec, 'base'> = { ...assertionLoad(API_TOKEN, setOf(alg), SIGN_CONNECTIONS), durationS: P.signS };
        const first = await post(`${full.internal}/v1/assertions`, JSON.parse(spec.body!));
        if (first.status !== 200) throw new Error(`assertion ${alg}: status ${first.status} ${JSON.stringify(first.json)}`);
        const token = String(first.json.client_assertion);
        const signingInput = token.slice(0, token.lastIndexOf('.'));
        const { key } = await activeKeyOf(mods, redis.url, PREFIX, ENCRYPTION_KEYS, setOf(alg));
        const keyFile = join(OUT, 'keys', `${setOf(alg)}.pem`);
        writeFileSync(keyFile, key.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
        const target = serviceTarget('service', full, redis, { internal: true });
        // Logging ablation (the same service with LOG_LEVEL=silent) for RS256 and ES256.
        const quietTarget = alg === 'RS256' || alg === 'ES256' ? serviceTarget('service, LOG_LEVEL=silent', quiet, redis, { internal: true }) : undefined;
        await measure(tool, target, { ...spec, durationS: P.warmS });
        if (quietTarget) await measure(tool, quietTarget, { ...spec, durationS: P.warmS });
        await rawSign(keyFile, alg, signingInput, SIGN_CONNECTIONS, P.warmS);
        // The HTTP floor (ES256: the cheapest signature): the bare Fastify baseline's JSON POST route, same body.
        const floorTarget: LoadTarget | undefined = alg === 'ES256' ? { ...T.bare, label: 'bare Fastify JSON POST' } : undefined;
        if (floorTarget) await measure(tool, floorTarget, { ...spec, durationS: P.warmS });
        const http: Run[] = [];
        const silent: Run[] = [];
        const floor: Run[] = [];
        const raw: Array<{ rate: number; cpuUsPerOp: number }> = [];
        // As in section 1, a fresh process for each run after the first, warmed again (raw-sign.mjs is a new
        // process per run anyway).
        for (let r = 0; r < P.reps; r++) {
          if (r > 0) await restartWarm(tool, target, spec);
          const h = await measure(tool, target, spec);
          http.push(h);
          const w = await rawSign(keyFile, alg, signingInput, SIGN_CONNECTIONS, P.signS);
          raw.push(w);
          if (r > 0) await restartWarm(tool, quietTarget, spec);
          const q = quietTarget ? await measure(tool, quietTarget, spec) : undefined;
          if (q) silent.push(q);
          if (r > 0) await restartWarm(tool, floorTarget, spec);
          const f = floorTarget ? await measure(tool, floorTarget, spec) : undefined;
          if (f) floor.push(f);
          log(
            `  ${alg} #${r + 1}: HTTP ${Math.round(h.rps)}/s (p99 ${h.p99Ms.toFixed(1)} ms, ${h.cpuUsPerReq.toFixed(0)} us CPU, errors ${h.errors}), raw crypto.sign ${Math.round(w.rate)}/s` +
              `${q ? `, HTTP with LOG_LEVEL=silent ${Math.round(q.rps)}/s (${q.cpuUsPerReq.toFixed(0)} us CPU)` : ''}${f ? `, bare Fastify JSON POST ${Math.round(f.rps)}/s (${f.cpuUsPerReq.toFixed(0)} us CPU)` : ''}`,
          );
        }
        rmSync(keyFile, { force: true });
        assertions[alg] = {
          ...(silent.length ? { silent: summarize(`${alg} over HTTP, LOG_LEVEL=silent`, silent) } : {}),
          ...(floor.length ? { floor: summarize('bare Fastify JSON POST', floor) } : {}),
          http: summarize(`${alg} over HTTP`, http),
          raw: { rate: median(raw.map((w) => w.rate)), cpuUsPerOp: median(raw.map((w) => w.cpuUsPerOp)), all: raw.map((w) => Math.round(w.rate)) },
          signingInputBytes: signingInput.length,
          tokenBytes: token.length,
        };
      }
      rmSync(join(OUT, 'keys'), { recursive: true, force: true });
      results.sections.assertions = assertions;
    }

    // ---- 3b. JWKS latency while assertions are signed at full rate
    if (enabled('contention')) {
      log(`3b. JWKS p99 at ${PROBE_RATE} req/s: idle vs assertions at full rate`);
      // Ablation: the same service with its public port on the main event loop (PUBLIC_SERVER_THREAD=false).
      const inMain = await startService('service-public-in-main-thread', redis, { KEY_SETS_FILE: keySetsFile, PUBLIC_SERVER_THREAD: 'false' });
      const IN_MAIN = ' (public port in the main thread)';
      const loads: Array<{ key: string; alg?: Alg; svc: Service }> = [
        { key: 'idle', svc: full },
        { key: 'RS256 load', alg: 'RS256', svc: full },
        { key: 'ES256 load', alg: 'ES256', svc: full },
        { key: `idle${IN_MAIN}`, svc: inMain },
        { key: `RS256 load${IN_MAIN}`, alg: 'RS256', svc: inMain },
        { key: `ES256 load${IN_MAIN}`, alg: 'ES256', svc: inMain },
      ];
      const byKey = new Map<string, Probe[]>(loads.map((l) => [l.key, []]));
      const signRates = new Map<string, number[]>();
      const stealShares = new Map<string, number[]>();
      const signing = (svc: Service, alg: Alg, durationS: number): LoadSpec => ({ ...assertionLoad(API_TOKEN, setOf(alg), SIGN_CONNECTIONS), base: svc.internal, durationS });
      const warm = async (svc: Service) => {
        await probe(`${svc.base}/.well-known/jwks.json`, PROBE_RATE, 1);
        await runLoad(tool, signing(svc, 'ES256', P.warmS));
      };
      for (const svc of [full, inMain]) await warm(svc);
      for (let r = 0; r < P.reps; r++) {
        // As in sections 1 and 3: a fresh process of each service for each run after the first (idle and both
        // loads of one run share it, so that each run's ratios compare one process with itself).
        if (r > 0) {
          for (const svc of [full, inMain]) {
            await restartService(svc, redis);
            await warm(svc);
          }
        }
        for (const l of loads) {
          const url = `${l.svc.base}/.well-known/jwks.json`;
          let load: Promise<LoadResult> | undefined;
          if (l.alg) {
            load = runLoad(tool, signing(l.svc, l.alg, P.contentionS + 1));
            await sleep(500);
          }
          const { result: p, steal: stolen } = await observe(() => probe(url, PROBE_RATE, P.contentionS));
          const loaded = load ? await load : undefined;
          if (loaded) signRates.set(l.key, [...(signRates.get(l.key) ?? []), loaded.rps]);
          if (stolen !== undefined) stealShares.set(l.key, [...(stealShares.get(l.key) ?? []), stolen]);
          byKey.get(l.key)!.push(p);
          log(`  ${l.key} #${r + 1}: JWKS p50 ${p.p50Ms.toFixed(2)} ms p99 ${p.p99Ms.toFixed(2)} ms (${p.requests} requests, ${p.errors} errors)${loaded ? `; ${Math.round(loaded.rps)} assertions/s` : ''}`);
        }
      }
      await stop(inMain.proc);
      // One more run of each condition on the service, outside the medians, under the kernel's scheduler trace.
      const traceRun = async (key: string, alg: Alg | undefined) => {
        const file = join(OUT, `sched-${key.replace(/\W+/g, '-')}.perf.data`);
        const load = alg ? runLoad(tool, signing(full, alg, P.contentionS + 1)) : undefined;
        load?.catch(() => undefined); // awaited below; not an unhandled rejection meanwhile
        try {
          await sleep(200);
          const { result: p } = await observe(() => probe(`${full.base}/.well-known/jwks.json`, PROBE_RATE, P.contentionS), file);
          const loaded = load ? await load : undefined;
          log(`  traced ${key}: JWKS p99 ${p.p99Ms.toFixed(2)} ms`);
          return { p99Ms: p.p99Ms, assertionsPerS: loaded?.rps, ...(await serviceSched([file], full.proc.pid)) };
        } finally {
          rmSync(file, { force: true });
        }
      };
      if (schedTraceAvailable()) {
        try {
          const traced: Record<string, unknown> = {};
          for (const l of loads.filter((x) => x.svc === full)) traced[l.key] = await traceRun(l.key, l.alg);
          results.sections.contentionTrace = traced;
        } catch (err) {
          log(`  no scheduler trace: ${err instanceof Error ? err.message : String(err)}`);
        }
      } else log('  no scheduler trace: `perf sched record` is not available (perf from linux-perf, run as root)');
      results.sections.contention = Object.fromEntries(
        loads.map((l) => {
          const ps = byKey.get(l.key)!;
          return [
            l.key,
            {
              p50Ms: median(ps.map((p) => p.p50Ms)),
              p99Ms: median(ps.map((p) => p.p99Ms)),
              maxMs: median(ps.map((p) => p.maxMs)),
              requests: ps.reduce((a, p) => a + p.requests, 0),
              errors: ps.reduce((a, p) => a + p.errors, 0),
              assertionsPerS: signRates.has(l.key) ? median(signRates.get(l.key)!) : undefined,
              allP99: ps.map((p) => Number(p.p99Ms.toFixed(2))),
              stealShare: stealShares.has(l.key) ? median(stealShares.get(l.key)!) : undefined,
            },
          ];
        }),
      );
    }

    // ---- 5. Growth: 1, 100, 1000 key sets
    if (enabled('growth')) {
      log('5. growth: seeding 1,000 RSA-2048 key sets (prime-pool keys, see bench/lib/keys.ts)');
      const gRedis = await startRedis(await freePort(), redisDir);
      await gRedis.flush();
      const maxSets = Math.max(...P.growthSets);
      const names = Array.from({ length: maxSets }, (_, i) => `g${String(i).padStart(4, '0')}`);
      const t0 = Date.now();
      const allSets = writeKeySetsFile(`growth-${maxSets}.json`, Object.fromEntries(names.map((s) => [s, { alg: 'RS256' }])));
      const cacheFile = join(OUT, 'cache', `growth-${maxSets}-${sealedRecordsVersion(DIST)}.json`);
      const seeded = await seedRsaKeySets(mods, gRedis.url, GROWTH_PREFIX, GROWTH_KEK, allSets, cacheFile);
      const seedMs = Date.now() - t0;
      log(`  seeded ${seeded.sets} sets in ${seedMs} ms${seeded.cached ? ' (sealed records from bench/out/cache)' : ''}`);
      const services = new Map<number, { svc: Service; startMs: number; idleRss: number }>();
      for (const n of P.growthSets) {
        const file = writeKeySetsFile(`growth-${n}.json`, Object.fromEntries(names.slice(0, n).map((s) => [s, { alg: 'RS256' }])));
        const t1 = Date.now();
        const svc = await startService(`growth-${n}`, gRedis, { KEY_SETS_FILE: file, REDIS_KEY_PREFIX: GROWTH_PREFIX, KEY_ENCRYPTION_KEYS: GROWTH_KEK }, [], 180_000);
        const startMs = Date.now() - t1;
        await sleep(1000);
        services.set(n, { svc, startMs, idleRss: rssBytes(svc.proc.pid) });
        log(`  ${n} set(s): ready in ${startMs} ms, idle RSS ${(rssBytes(svc.proc.pid) / 2 ** 20).toFixed(1)} MiB`);
      }
      const pathsFor = (n: number) => {
        const list = names.slice(0, n).map((s) => `/jwks/${s}.json`);
        return list.length === 1 ? [list[0]!, list[0]!] : list; // two entries: the same per-request path picking for every size
      };
      const peaks = new Map<number, number[]>();
      const cases = P.growthSets.map((n) => ({
        key: `${n} set(s)`,
        target: { label: `${n}`, pids: () => [services.get(n)!.svc.proc.pid], base: services.get(n)!.svc.base } as LoadTarget,
        spec: { paths: pathsFor(n), connections: JWKS_CONNECTIONS, durationS: P.growthS },
      }));
      // RSS is sampled during every run, warm-up included.
      const samplers = new Map(P.growthSets.map((n) => [n, sampleRss(services.get(n)!.svc.proc.pid, 50)]));
      const res = await interleaved(tool, cases, P.reps);
      // Mixed load: JWKS across every set plus assertions from random sets, to find the RSS peak under load.
      const mixed: Record<string, unknown> = {};
      for (const n of P.growthSets) {
        const svc = services.get(n)!.svc;
        const sampler = sampleRss(svc.proc.pid, 50);
        const [j, a] = await Promise.all([
          runLoad(tool, { base: svc.base, paths: pathsFor(n), connections: JWKS_CONNECTIONS, durationS: P.growthS }),
          runLoad(tool, { ...assertionLoad(API_TOKEN, names[n - 1]!, 8), base: svc.internal, durationS: P.growthS }),
        ]);
        const rss = sampler.stop();
        peaks.set(n, [rss.peak]);
        // The service's own memory gauges (prom-client default metrics), right after the load.
        const metricsText = await (await fetch(`${svc.internal}/metrics`)).text().catch(() => '');
        const gauge = (name: string) => Number(new RegExp(`^jwks_signer_${name}(?:\\{[^}]*\\})? ([\\d.e+]+)$`, 'm').exec(metricsText)?.[1] ?? NaN);
        const memory = {
          heapUsed: gauge('nodejs_heap_size_used_bytes'),
          heapTotal: gauge('nodejs_heap_size_total_bytes'),
          external: gauge('nodejs_external_memory_bytes'),
          rss: gauge('process_resident_memory_bytes'),
        };
        mixed[String(n)] = { jwksRps: j.rps, assertionsRps: a.rps, errors: j.errors + a.errors, peakRss: rss.peak, memory };
        log(`  ${n} set(s) mixed: JWKS ${Math.round(j.rps)}/s + assertions ${Math.round(a.rps)}/s, peak RSS ${(rss.peak / 2 ** 20).toFixed(1)} MiB`);
      }
      const growth: Record<string, unknown> = { seedMs, seedCached: seeded.cached, mixed };
      for (const n of P.growthSets) {
        const s = services.get(n)!;
        const jwksRss = samplers.get(n)!.stop();
        const bodyBytes = (await (await fetch(`${s.svc.base}/jwks/${names[0]}.json`)).arrayBuffer()).byteLength;
        growth[String(n)] = {
          jwks: res.get(`${n} set(s)`),
          startMs: s.startMs,
          idleRss: s.idleRss,
          jwksPeakRss: jwksRss.peak,
          peakRss: Math.max(jwksRss.peak, ...(peaks.get(n) ?? [])),
          bodyBytes,
        };
        await stop(s.svc.proc);
      }
      await gRedis.close();
      results.sections.growth = growth;
    }

    // ---- 6. Rotation and Redis restart in the middle of a JWKS load
    if (enabled('resilience')) {
      log('6. rotation + Redis restart during JWKS load');
      const D = P.resilienceS;
      const before = await (await fetch(`${full.base}/.well-known/jwks.json`)).json() as { keys: Array<{ kid: string }> };
      const ka2 = runLoad(tool, { base: full.base, paths: jwksPath, connections: 32, durationS: D, countCodes: true });
      const cl2 = runLoad(tool, { base: full.base, paths: jwksPath, connections: 16, durationS: D, headers: { Connection: 'close' }, countCodes: true });
      commands.add(commandFor(tool, { base: full.base, paths: jwksPath, connections: 32, durationS: D, countCodes: true }));
      commands.add(commandFor(tool, { base: full.base, paths: jwksPath, connections: 16, durationS: D, headers: { Connection: 'close' } }));
      const pr = probe(`${full.base}/.well-known/jwks.json`, 100, D);
      const events: string[] = [];
      const at = (s: number) => sleep(Math.max(0, started0 + s * 1000 - Date.now()));
      const started0 = Date.now();
      await at(D * 0.2);
      const r1 = await post(`${full.internal}/v1/keys/rotate`, { key_set: 'rs256', force: true });
      events.push(`t=${((Date.now() - started0) / 1000).toFixed(1)}s rotate rs256: ${r1.status} ${JSON.stringify(r1.json.events ?? r1.json.code)}`);
      await at(D * 0.35);
      await redis.kill();
      events.push(`t=${((Date.now() - started0) / 1000).toFixed(1)}s redis-server killed (SIGKILL; no persistence: every key is lost)`);
      await at(D * 0.5);
      await redis.start();
      events.push(`t=${((Date.now() - started0) / 1000).toFixed(1)}s redis-server started again, empty`);
      await at(D * 0.7);
      let r2 = await post(`${full.internal}/v1/keys/rotate`, { key_set: 'rs256', force: true });
      for (let i = 0; i < 5 && r2.status !== 200; i++) {
        await sleep(300);
        r2 = await post(`${full.internal}/v1/keys/rotate`, { key_set: 'rs256', force: true });
      }
      events.push(`t=${((Date.now() - started0) / 1000).toFixed(1)}s rotate rs256: ${r2.status} ${JSON.stringify(r2.json.events ?? r2.json.code)}`);
      const [a, b, p] = await Promise.all([ka2, cl2, pr]);
      await sleep(500);
      const after = await (await fetch(`${full.base}/.well-known/jwks.json`)).json() as { keys: Array<{ kid: string }> };
      const replica = await (await fetch(`${noRl.base}/.well-known/jwks.json`)).json() as { keys: Array<{ kid: string }> };
      const activeAfter = String(r2.json.active_kid ?? '');
      results.sections.resilience = {
        durationS: D,
        keepAlive: a,
        close: b,
        probe: { requests: p.requests, errors: p.errors, statuses: p.statuses, distinctEtags: p.etags.length },
        events,
        kidsBefore: before.keys.map((k) => k.kid),
        kidsAfter: after.keys.map((k) => k.kid),
        replicaAgrees: JSON.stringify(after) === JSON.stringify(replica),
        activeAfter,
        activeServed: after.keys[0]?.kid === activeAfter,
        errors: a.errors + b.errors + p.errors,
      };
      log(`  errors: keep-alive ${a.errors}, close ${b.errors}, probe ${p.errors}; ${events.join('; ')}`);
    }

    // ---- targets, then profiles where a target is missed
    results.targets = evaluateTargets(results);
    const missed = new Set(results.targets.filter((t) => t.met === false).map((t) => t.profile).filter((p): p is string => !!p));
    if (QUICK && !flag('profile-all')) {
      if (missed.size > 0) results.notes.push(`Quick run: no CPU profiles taken (${[...missed].join(', ')} would be); the full run or --profile-all takes them.`);
      missed.clear();
    }
    if (flag('profile-all')) for (const p of ['jwks-keepalive', 'jwks-close', 'assertions-RS256', 'assertions-ES256']) missed.add(p);
    for (const name of missed) {
      log(`profiling ${name}`);
      const env = { KEY_SETS_FILE: keySetsFile };
      if (name === 'jwks-keepalive') results.profiles.push({ name, summary: await profileService(name, redis, env, tool, { paths: jwksPath, connections: JWKS_CONNECTIONS }) });
      if (name === 'jwks-close') results.profiles.push({ name, summary: await profileService(name, redis, env, tool, { paths: jwksPath, connections: JWKS_CONNECTIONS, headers: { Connection: 'close' } }) });
      if (name.startsWith('assertions-')) {
        const alg = name.slice('assertions-'.length) as Alg;
        results.profiles.push({ name, summary: await profileService(name, redis, env, tool, assertionLoad(API_TOKEN, setOf(alg), SIGN_CONNECTIONS), true) });
      }
    }
  } finally {
    await stopAll();
  }

  results.machine['load average at end'] = loadavg().map((l) => l.toFixed(2)).join(' ');
  results.machine['suite duration'] = `${((Date.now() - started) / 1000).toFixed(0)} s`;
  results.commands = [...commands].sort();
  writeFileSync(join(OUT, 'results.json'), JSON.stringify(results, null, 2));
  writeReport(results);
  log(`wrote bench/RESULTS.md, bench/ratios.svg and bench/out/results.json in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  for (const t of results.targets) log(`  ${t.met === undefined ? 'n/a ' : t.met ? 'MET ' : 'MISS'} ${t.name}: ${t.value}`);
}

// ---------------------------------------------------------------- targets of the issue
function evaluateTargets(r: Results): Target[] {
  const out: Target[] = [];
  const jwks = r.sections.jwks as { keepAlive: Record<string, Summary>; close: Record<string, Summary> } | undefined;
  const ratioTarget = (name: string, num: number | undefined, den: number | undefined, goal: number, dir: 'min' | 'max', profile?: string, unit = '') => {
    if (num === undefined || den === undefined || !Number.isFinite(num) || !Number.isFinite(den) || den === 0) {
      out.push({ name, goal: `${dir === 'min' ? '>=' : '<='} ${goal}`, ratio: NaN, value: 'not measured', met: undefined });
      return;
    }
    const ratio = num / den;
    const met = dir === 'min' ? ratio >= goal : ratio <= goal;
    out.push({ name, goal: `${dir === 'min' ? '>=' : '<='} ${goal}`, ratio, value: `${ratio.toFixed(3)}${unit}`, met, ...(profile ? { profile } : {}), by: met ? undefined : dir === 'min' ? `${((1 - ratio / goal) * 100).toFixed(1)}% short` : `${((ratio / goal - 1) * 100).toFixed(1)}% over` });
  };
  if (jwks) {
    for (const [mode, key, profile] of [['keep-alive', 'keepAlive', 'jwks-keepalive'], ['Connection: close', 'close', 'jwks-close']] as const) {
      const s = jwks[key];
      ratioTarget(`JWKS ${mode}: service / bare Fastify throughput`, s.service?.rps, s.bare?.rps, 0.9, 'min', profile);
      ratioTarget(`JWKS ${mode}: service / bare Fastify p99`, s.service?.p99Ms, s.bare?.p99Ms, 1.2, 'max', profile);
    }
    ratioTarget('Rate limiting: service / service with rate limit off (keep-alive throughput)', jwks.keepAlive.service?.rps, jwks.keepAlive['service-no-rl']?.rps, 0.9, 'min', 'jwks-keepalive');
    const idle = r.sections.redisIdle as { perS: number } | undefined;
    const net = (s: Summary | undefined) =>
      s?.redisCommands && idle ? Math.max(0, Object.values(s.redisCommands).reduce((x, y) => x + y, 0) - idle.perS * s.seconds) / Math.max(1, s.requests) : NaN;
    const perReq = Math.max(net(jwks.keepAlive.service), net(jwks.close.service));
    out.push({
      name: 'Redis commands per JWKS request (beyond the idle background rate)',
      goal: '0 (< 0.001)',
      ratio: perReq,
      value: Number.isFinite(perReq) ? perReq.toFixed(5) : 'not measured',
      met: Number.isFinite(perReq) ? perReq < 0.001 : undefined,
    });
  }
  const a = r.sections.assertions as Record<Alg, { http: Summary; raw: { rate: number } }> | undefined;
  if (a) {
    ratioTarget('RS256 assertions over HTTP / raw crypto.sign', a.RS256?.http.rps, a.RS256?.raw.rate, 0.75, 'min', 'assertions-RS256');
    ratioTarget('ES256 assertions over HTTP / raw crypto.sign', a.ES256?.http.rps, a.ES256?.raw.rate, 0.4, 'min', 'assertions-ES256');
    const perAssertion = Math.max(...ALGS.map((alg) => a[alg]?.http.redisPerRequest ?? 0));
    out.push({ name: 'Redis commands per assertion', goal: '(no target; the audit trail writes each entry with XADD, in batches run by one EVALSHA; INFO commandstats counts both)', ratio: perAssertion, value: perAssertion.toFixed(5), met: undefined });
  }
  const c = r.sections.contention as Record<string, { p99Ms: number }> | undefined;
  if (c) {
    ratioTarget('JWKS p99 with RS256 assertions at full rate / idle', c['RS256 load']?.p99Ms, c.idle?.p99Ms, 1.5, 'max', 'assertions-RS256');
    ratioTarget('JWKS p99 with ES256 assertions at full rate / idle', c['ES256 load']?.p99Ms, c.idle?.p99Ms, 1.5, 'max', 'assertions-ES256');
  }
  const g = r.sections.growth as Record<string, { peakRss: number }> | undefined;
  if (g?.['1000']) ratioTarget('RSS under load with 1,000 key sets / 150 MB', g['1000'].peakRss / 1e6, 150, 1, 'max', undefined);
  const res = r.sections.resilience as { errors: number; activeServed: boolean } | undefined;
  if (res) out.push({ name: 'Errors during rotation + Redis restart under JWKS load', goal: '0', ratio: res.errors, value: String(res.errors), met: res.errors === 0 });
  return out;
}

main().then(
  () => process.exit(0),
  async (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    await stopAll();
    process.exit(1);
  },
);
