// The load generator: wrk (Debian's) when installed, else autocannon (npm), each in its own process.
// Every run is bounded by its duration; wrk also by its --timeout per request.
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const WRK_SCRIPT = fileURLToPath(new URL('../wrk/bench.lua', import.meta.url));
const AUTOCANNON_RUNNER = fileURLToPath(new URL('./autocannon-runner.mjs', import.meta.url));
const RAW_LOADGEN = fileURLToPath(new URL('./raw-loadgen.mjs', import.meta.url));

export type Tool = 'wrk' | 'autocannon';
/** `raw`: bench/lib/raw-loadgen.mjs, for HEAD (wrk and autocannon both hang on it) and for Connection: close under autocannon. */
export type UsedTool = Tool | 'raw';

export interface LoadSpec {
  /** http://127.0.0.1:port */
  base: string;
  /** One path, or several to pick from at random per request. */
  paths: string[];
  method?: 'GET' | 'HEAD' | 'POST';
  body?: string;
  headers?: Record<string, string>;
  connections: number;
  threads?: number;
  durationS: number;
  /** Count responses per status code (costs client CPU with wrk). */
  countCodes?: boolean;
}

/** POST /v1/assertions for one key set with the bench's client (bench/run.ts and bench/ab.ts); base and duration per run. */
export function assertionLoad(apiToken: string, keySet: string, connections: number): Omit<LoadSpec, 'base' | 'durationS'> {
  return {
    paths: ['/v1/assertions'],
    method: 'POST',
    body: JSON.stringify({ client_id: 'bench-client', audience: 'https://erp.example.com/identity/connect/token', key_set: keySet }),
    headers: { Authorization: `Bearer ${apiToken}`, 'Content-Type': 'application/json' },
    connections,
  };
}

export interface LoadResult {
  tool: UsedTool;
  requests: number;
  seconds: number;
  rps: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Socket errors, timeouts and responses >= 400. */
  errors: number;
  errorDetail: Record<string, number>;
  codes?: Record<string, number>;
}

export function detectTool(preferred?: string): { tool: Tool; version: string } {
  if (preferred !== 'autocannon') {
    try {
      const out = execFileSync('wrk', ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      return { tool: 'wrk', version: out.split('\n')[0]!.trim() };
    } catch (err) {
      // wrk --version exits 1 but prints its version.
      const out = String((err as { stdout?: string }).stdout ?? '');
      if (out.startsWith('wrk')) return { tool: 'wrk', version: out.split('\n')[0]!.split(' Copyright')[0]!.trim() };
      if (preferred === 'wrk') throw new Error('wrk is not installed (apt-get install -y wrk)');
    }
  }
  const version = execFileSync(process.execPath, ['-e', "console.log(require('autocannon/package.json').version)"], { encoding: 'utf8' }).trim();
  return { tool: 'autocannon', version: `autocannon ${version}` };
}

function collect(command: string, args: string[], env: NodeJS.ProcessEnv, limitMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), limitMs);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`${command} exited ${code}: ${err.trim() || out.trim()}`));
      else resolve(out);
    });
  });
}

function parseBenchJson(out: string): Record<string, unknown> {
  const line = out.split('\n').find((l) => l.startsWith('BENCH_JSON '));
  if (!line) throw new Error(`no BENCH_JSON line in the load generator's output:\n${out}`);
  return JSON.parse(line.slice('BENCH_JSON '.length)) as Record<string, unknown>;
}

async function runWrk(spec: LoadSpec): Promise<LoadResult> {
  const args = ['-t', String(spec.threads ?? 1), '-c', String(spec.connections), '-d', `${spec.durationS}s`, '--timeout', '5s', '-s', WRK_SCRIPT];
  for (const [name, value] of Object.entries(spec.headers ?? {})) args.push('-H', `${name}: ${value}`);
  args.push(`${spec.base}${spec.paths[0]}`);
  const env = {
    ...process.env,
    WRK_METHOD: spec.method ?? 'GET',
    WRK_BODY: spec.body ?? '',
    WRK_PATHS: spec.paths.join(','),
    WRK_CODES: spec.countCodes ? '1' : '0',
  };
  const j = parseBenchJson(await collect('wrk', args, env, (spec.durationS + 30) * 1000)) as {
    duration_us: number;
    requests: number;
    p50_us: number;
    p90_us: number;
    p99_us: number;
    max_us: number;
    errors: Record<string, number>;
    codes: Record<string, number>;
  };
  const seconds = j.duration_us / 1e6;
  const errors = Object.values(j.errors).reduce((a, b) => a + b, 0);
  return {
    tool: 'wrk',
    requests: j.requests,
    seconds,
    rps: j.requests / seconds,
    p50Ms: j.p50_us / 1000,
    p90Ms: j.p90_us / 1000,
    p99Ms: j.p99_us / 1000,
    maxMs: j.max_us / 1000,
    errors,
    errorDetail: j.errors,
    ...(spec.countCodes ? { codes: j.codes } : {}),
  };
}

async function runNodeTool(tool: 'autocannon' | 'raw', spec: LoadSpec): Promise<LoadResult> {
  const script = tool === 'raw' ? RAW_LOADGEN : AUTOCANNON_RUNNER;
  const out = await collect(process.execPath, [script, JSON.stringify(spec)], process.env, (spec.durationS + 30) * 1000);
  const j = parseBenchJson(out) as Omit<LoadResult, 'tool'>;
  return { ...j, tool };
}

export function isClose(spec: LoadSpec): boolean {
  return Object.entries(spec.headers ?? {}).some(([n, v]) => n.toLowerCase() === 'connection' && v.toLowerCase() === 'close');
}

/** The tool that runs `spec`: wrk or autocannon, except HEAD (and close under autocannon), which `raw` runs. */
export function toolFor(tool: Tool, spec: LoadSpec): UsedTool {
  if (spec.method === 'HEAD') return 'raw';
  if (tool === 'autocannon' && isClose(spec)) return 'raw';
  return tool;
}

export function commandFor(tool: Tool, spec: LoadSpec): string {
  const used = toolFor(tool, spec);
  const headers = Object.entries(spec.headers ?? {})
    .map(([n, v]) => ` -H '${n}: ${n.toLowerCase() === 'authorization' ? 'Bearer <token>' : v}'`)
    .join('');
  const env = [spec.method && spec.method !== 'GET' ? `WRK_METHOD=${spec.method}` : '', spec.body ? `WRK_BODY='${spec.body}'` : '', spec.paths.length > 1 ? `WRK_PATHS=<${spec.paths.length} paths>` : '']
    .filter(Boolean)
    .join(' ');
  const url = `http://127.0.0.1:PORT${spec.paths[0]}`;
  if (used === 'wrk') return `${env ? `${env} ` : ''}wrk -t ${spec.threads ?? 1} -c ${spec.connections} -d ${spec.durationS}s --timeout 5s -s bench/wrk/bench.lua${headers} ${url}`;
  return `node bench/lib/${used === 'raw' ? 'raw-loadgen' : 'autocannon-runner'}.mjs '{"method":"${spec.method ?? 'GET'}","connections":${spec.connections},"durationS":${spec.durationS},...}'${headers} ${url}`;
}

export function runLoad(tool: Tool, spec: LoadSpec): Promise<LoadResult> {
  const used = toolFor(tool, spec);
  return used === 'wrk' ? runWrk(spec) : runNodeTool(used, spec);
}
