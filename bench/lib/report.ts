// bench/RESULTS.md and bench/ratios.svg from one run's results.
import type { ProfileSummary } from './profile.js';
import type { SchedSummary } from './sched-trace.js';

export interface Target {
  name: string;
  goal: string;
  ratio: number;
  value: string;
  met: boolean | undefined;
  by?: string | undefined;
  /** Which profile explains a miss. */
  profile?: string;
}

export interface Results {
  mode: 'quick' | 'full';
  command: string;
  params: Record<string, unknown>;
  machine: Record<string, string>;
  sections: Record<string, unknown>;
  targets: Target[];
  profiles: Array<{ name: string; summary: ProfileSummary }>;
  commands: string[];
  notes: string[];
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

const n0 = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '-' : Math.round(x).toLocaleString('en-US'));
const n1 = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(1));
const n2 = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(2));
const n3 = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(3));
const mib = (bytes: number | undefined) => (bytes === undefined || !Number.isFinite(bytes) ? '-' : `${(bytes / 2 ** 20).toFixed(1)} MiB`);
const mb = (bytes: number | undefined) => (bytes === undefined || !Number.isFinite(bytes) ? '-' : `${(bytes / 1e6).toFixed(1)} MB`);

function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

function redisText(cmds: Record<string, number> | undefined): string {
  if (!cmds) return '-';
  const entries = Object.entries(cmds);
  return entries.length === 0 ? 'none' : entries.map(([c, k]) => `${c}×${k}`).join(', ');
}

interface Bar {
  label: string;
  value: number;
  goal?: number;
  dir?: 'min' | 'max';
  met?: boolean | undefined;
}

/** The ratios of the run as a horizontal bar chart, each with its target mark (SVG, no dependencies). */
export function renderChart(r: Results): string {
  const bars: Bar[] = [];
  for (const t of r.targets) {
    if (!Number.isFinite(t.ratio) || t.name.startsWith('Redis') || t.name.startsWith('Errors')) continue;
    const goal = Number(t.goal.replace(/[^\d.]/g, ''));
    bars.push({ label: t.name, value: t.ratio, goal, dir: t.goal.startsWith('>=') ? 'min' : 'max', met: t.met });
  }
  const jwks = r.sections.jwks as { keepAlive: Record<string, Summary>; close: Record<string, Summary> } | undefined;
  if (jwks?.keepAlive.nginx) bars.push({ label: 'JWKS keep-alive: service / nginx throughput (info)', value: jwks.keepAlive.service!.rps / jwks.keepAlive.nginx.rps });
  if (jwks?.close.nginx) bars.push({ label: 'JWKS Connection: close: service / nginx throughput (info)', value: jwks.close.service!.rps / jwks.close.nginx.rps });
  const cond = r.sections.conditional as Record<string, Summary> | undefined;
  if (cond?.['service 304'] && cond['bare 304']) bars.push({ label: 'If-None-Match 304: service / bare Fastify (info)', value: cond['service 304'].rps / cond['bare 304'].rps });
  if (cond?.['service HEAD'] && cond['bare HEAD']) bars.push({ label: 'HEAD: service / bare Fastify (info)', value: cond['service HEAD'].rps / cond['bare HEAD'].rps });
  const a = r.sections.assertions as Record<string, { http: Summary; raw: { rate: number } }> | undefined;
  for (const alg of ['PS256', 'EdDSA']) if (a?.[alg]) bars.push({ label: `${alg} assertions over HTTP / raw crypto.sign (info)`, value: a[alg].http.rps / a[alg].raw.rate });

  const labelW = 470;
  const plotW = 400;
  const rowH = 26;
  const top = 50;
  const height = top + bars.length * rowH + 40;
  const maxX = Math.min(4, Math.max(1.6, ...bars.map((b) => Math.max(b.value, b.goal ?? 0) * 1.1)));
  const x = (v: number) => labelW + (Math.min(v, maxX) / maxX) * plotW;
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${labelW + plotW + 90}" height="${height}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="100%" height="100%" fill="white"/>`);
  parts.push(`<text x="10" y="20" font-size="15" font-weight="bold">jwks-signer benchmark: same-run ratios (${esc(r.mode)} run, ${esc(r.machine.date ?? '')})</text>`);
  parts.push(`<text x="10" y="38" fill="#555">green: target met, red: missed, grey: no target; black tick: the target</text>`);
  for (let t = 0; t <= maxX + 1e-9; t += maxX > 2 ? 0.5 : 0.25) {
    parts.push(`<line x1="${x(t)}" y1="${top - 4}" x2="${x(t)}" y2="${top + bars.length * rowH}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${x(t)}" y="${top + bars.length * rowH + 16}" text-anchor="middle" fill="#555">${t.toFixed(2)}</text>`);
  }
  parts.push(`<line x1="${x(1)}" y1="${top - 4}" x2="${x(1)}" y2="${top + bars.length * rowH}" stroke="#999" stroke-dasharray="3,3"/>`);
  bars.forEach((b, i) => {
    const y = top + i * rowH;
    const color = b.met === undefined ? '#9e9e9e' : b.met ? '#2e7d32' : '#c62828';
    parts.push(`<text x="${labelW - 8}" y="${y + 16}" text-anchor="end">${esc(b.label)}</text>`);
    parts.push(`<rect x="${labelW}" y="${y + 5}" width="${Math.max(1, x(b.value) - labelW)}" height="${rowH - 10}" fill="${color}"/>`);
    if (b.goal !== undefined) parts.push(`<line x1="${x(b.goal)}" y1="${y + 1}" x2="${x(b.goal)}" y2="${y + rowH - 1}" stroke="black" stroke-width="2"/>`);
    const goalText = b.goal !== undefined ? ` (${b.dir === 'min' ? '≥' : '≤'} ${b.goal})` : '';
    parts.push(`<text x="${Math.max(x(b.value), b.goal !== undefined ? x(b.goal) : 0) + 5}" y="${y + 16}">${b.value.toFixed(2)}${esc(goalText)}</text>`);
  });
  parts.push(`<text x="${labelW}" y="${height - 6}" fill="#555">ratio (bars past ${maxX.toFixed(1)} are cut)</text>`);
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

function profileSection(p: { name: string; summary: ProfileSummary }): string {
  const s = p.summary;
  const rows = (list: ProfileSummary['topSelf']) => list.map((row) => [row.name.replace(/\|/g, '\\|'), n1(row.ms), `${(row.share * 100).toFixed(1)}%`]);
  return [
    `### Profile: ${p.name}`,
    '',
    `\`${s.file}\` (open in Chrome DevTools or speedscope): ${n0(s.busyMs)} ms of CPU on the profiled thread (JWKS loads: the public port's thread; assertion loads: the main thread, which runs the internal API) out of ${n0(s.totalMs)} ms sampled (the rest idle)${s.windowed ? ', counting only the samples taken during the measured load (start-up, warm-up and shutdown left out)' : ', the whole process life (start-up included: the measured window could not be isolated)'}. Shares are of the busy time. Node writes a profile per JavaScript thread; signatures run on libuv's thread pool (nice 10, SCHED_BATCH), which has no JavaScript and no profile. The profiler samples on a wall clock: time the thread spends waiting for a CPU (2 cores shared with the load generator and the signing threads) is charged to the frame it resumes in, which inflates \`writev\` (each response wakes the client); the same-run CPU µs per request and the ablations are the better measure of cost.`,
    '',
    'Self time by component:',
    '',
    table(['component', 'ms', 'share'], rows(s.byComponent)),
    '',
    'Top functions by self time:',
    '',
    table(['function (source)', 'ms', 'share'], rows(s.topSelf)),
    '',
    "The service's own functions, inclusive time (everything they call):",
    '',
    table(['function (source)', 'ms', 'share'], rows(s.serviceInclusive)),
    '',
    'All JavaScript frames (packages and service), inclusive time:',
    '',
    table(['function (source)', 'ms', 'share'], rows(s.topInclusive)),
    '',
  ].join('\n');
}

export function renderResults(r: Results, notes?: string): string {
  const out: string[] = [];
  out.push('# Benchmark results (issue 5)');
  out.push('');
  out.push(
    `Generated by \`${r.command}\` (\`npm run bench${r.mode === 'quick' ? ':quick' : ''}\`), a **${r.mode}** run, ${r.machine.date}. ` +
      'Do not edit: rerun the command. Only ratios measured in the same run count: the machine has 2 cores, shared by the load generator, the servers and whatever else runs. ' +
      'Every comparison is interleaved (A, B, A, B, ...) and reports the median of its runs.',
  );
  out.push('');
  out.push('## Targets');
  out.push('');
  out.push(
    table(
      ['target', 'goal', 'measured', 'result'],
      r.targets.map((t) => [t.name, t.goal, t.value, t.met === undefined ? 'n/a' : t.met ? '**met**' : `**missed** (${t.by ?? ''})`]),
    ),
  );
  out.push('');
  out.push('![same-run ratios](ratios.svg)');
  out.push('');
  out.push('## Machine');
  out.push('');
  out.push(table(['', ''], Object.entries(r.machine).map(([k, v]) => [k, v])));
  out.push('');
  out.push(`Parameters: \`${JSON.stringify(r.params)}\``);
  out.push('');
  out.push(
    'Service configuration in every case: the compiled service (`node dist/server.js`, with the runtime image\'s `ENV` lines from the Dockerfile), Redis store (a private redis-server on a loopback port, no persistence), ' +
      '`LOG_LEVEL=info` (production default; logs go to a file under bench/out/logs), `NODE_ENV=production`, rate limiting on with `RATE_LIMIT_MAX=10000000` ' +
      '(the limiter counts every request; one client address never reaches the limit), four key sets rs256 (default), ps256, es256, eddsa. ' +
      'The public port runs in its own worker thread (PUBLIC_SERVER_THREAD=true, the default; src/public-thread.ts) unless a row says otherwise. ' +
      'Metrics are on, as always in the service (prom-client: every response counted, on the public port by its thread, which sends the counts to the main thread every second; a signing histogram); /metrics is not scraped during the runs. Signatures run on libuv\'s thread pool (node:crypto\'s callback `sign()`, 4 threads lowered to nice 10 under SCHED_BATCH at start-up; src/keys/signer.ts, src/keys/thread-pool-priority.ts, SIGNING_NICE); once the public port\'s thread runs, the main thread (internal API) is lowered to nice 5 under SCHED_BATCH (API_THREAD_NICE), and the public thread stays at nice 0 under SCHED_OTHER.',
  );
  out.push('');

  const jwks = r.sections.jwks as { keepAlive: Record<string, Summary>; close: Record<string, Summary> } | undefined;
  if (jwks) {
    out.push('## 1. JWKS: service vs bare Fastify vs nginx');
    out.push('');
    out.push(
      `GET /.well-known/jwks.json, ${r.params.jwksConnections} connections, ${r.params.jwksS} s per run. CPU per request is the server process's user+system time (all threads; nginx: its worker) over the run, from /proc. Every run after the first starts the service configurations and bare Fastify afresh (then warms them for ${r.params.warmS} s), so that no process's placement on the cores biases all runs of its configuration; nginx keeps its process. ` +
        '"bare Fastify" is bench/baselines/bare-fastify.mjs: `Fastify()` (no logger, no plugins) with one route sending the same bytes and an ETag.',
    );
    for (const [title, set] of [['Keep-alive', jwks.keepAlive], ['Connection: close (a new TCP connection per request)', jwks.close]] as const) {
      out.push('');
      out.push(`### ${title}`);
      out.push('');
      const bare = set.bare;
      out.push(
        table(
          ['server', 'req/s (median)', 'runs', 'vs bare', 'p50 ms', 'p99 ms', 'p99 vs bare', 'CPU µs/req', 'errors', 'Redis commands in the runs'],
          Object.values(set).map((s) => [
            ({ service: 'service (all features)', 'service-no-rl': 'service, rate limit off', 'service-log-silent': 'service, LOG_LEVEL=silent', bare: 'bare Fastify' } as Record<string, string>)[s.label] ?? s.label,
            n0(s.rps),
            s.all.join(' / '),
            bare ? n3(s.rps / bare.rps) : '-',
            n2(s.p50Ms),
            n2(s.p99Ms),
            bare ? n2(s.p99Ms / bare.p99Ms) : '-',
            n1(s.cpuUsPerReq),
            String(s.errors),
            redisText(s.redisCommands),
          ]),
        ),
      );
    }
    out.push('');
  }

  const cond = r.sections.conditional as Record<string, Summary> | undefined;
  if (cond) {
    out.push('## 2. Conditional requests (If-None-Match → 304) and HEAD');
    out.push('');
    out.push(
      `Keep-alive, ${r.params.jwksConnections} connections, ${r.params.condS} s per run. 304: the request carries the current ETag. ` +
        'HEAD runs use bench/lib/raw-loadgen.mjs for every server (wrk and autocannon both wait for a body after HEAD and count 0 requests), so HEAD numbers compare with each other only.',
    );
    out.push('');
    const ref = (k: string) => (k.includes('304') ? cond['bare 304'] : cond['bare HEAD']);
    out.push(
      table(
        ['case', 'tool', 'req/s (median)', 'runs', 'vs bare (same case)', 'p50 ms', 'p99 ms', 'CPU µs/req', 'errors'],
        Object.entries(cond).map(([k, s]) => [k, s.tool, n0(s.rps), s.all.join(' / '), ref(k) ? n3(s.rps / ref(k)!.rps) : '-', n2(s.p50Ms), n2(s.p99Ms), n1(s.cpuUsPerReq), String(s.errors)]),
      ),
    );
    out.push('');
  }

  const a = r.sections.assertions as
    | Record<string, { http: Summary; silent?: Summary; floor?: Summary; raw: { rate: number; cpuUsPerOp: number; all: number[] }; signingInputBytes: number; tokenBytes: number }>
    | undefined;
  if (a) {
    out.push('## 3. Assertions over HTTP vs raw crypto.sign');
    out.push('');
    out.push(
      `POST /v1/assertions (bearer token, JSON body with client_id, audience, key_set), ${r.params.signConnections} connections, ${r.params.signS} s per run, ` +
        `vs bench/baselines/raw-sign.mjs: node:crypto's callback \`sign()\` (what the service calls; src/keys/signer.ts) with the **same private key** (read from Redis and decrypted with the service's modules), ` +
        `the same signing input bytes (taken from a real assertion), ${r.params.signConnections} signatures in flight, on the same libuv pool (UV_THREADPOOL_SIZE ${r.params.threadpool}). ` +
        'The HTTP side also pays for the load generator on the same 2 cores, its pool threads run at nice 10 under SCHED_BATCH (SIGNING_NICE) and its main thread at nice 5 under SCHED_BATCH (API_THREAD_NICE); the raw side has no client and runs at nice 0 under SCHED_OTHER. ' +
        `Runs are interleaved (service, raw, and for ES256 the HTTP floor; RS256 and ES256 also the LOG_LEVEL=silent service); every run after the first starts each side afresh (raw-sign.mjs is a new process per run; the services and bare Fastify are restarted and warmed for ${r.params.warmS} s).`,
    );
    out.push('');
    out.push(
      table(
        ['alg', 'HTTP assertions/s', 'runs', 'raw crypto.sign/s', 'runs', 'ratio', 'HTTP p50 ms', 'HTTP p99 ms', 'service CPU µs/assertion', 'raw CPU µs/sign', 'errors', 'token bytes'],
        Object.entries(a).map(([alg, v]) => [
          alg,
          n0(v.http.rps),
          v.http.all.join(' / '),
          n0(v.raw.rate),
          v.raw.all.join(' / '),
          n3(v.http.rps / v.raw.rate),
          n2(v.http.p50Ms),
          n2(v.http.p99Ms),
          n1(v.http.cpuUsPerReq),
          n1(v.raw.cpuUsPerOp),
          String(v.http.errors),
          String(v.tokenBytes),
        ]),
      ),
    );
    out.push('');
    for (const [alg, v] of Object.entries(a).filter(([, v]) => v.floor)) {
      const f = v.floor!;
      out.push(
        `HTTP floor, same run: bench/baselines/bare-fastify.mjs answers the same POST (Fastify parses the JSON body and serialises a JSON answer of the service's shape; no authentication, validation, signature, audit or metrics), ${f.runs} runs interleaved with the ${alg} runs above: ` +
          `**${n0(f.rps)} requests/s** (${f.all.join(' / ')}), ${n1(f.cpuUsPerReq)} µs of CPU per request. That is ${n3(f.rps / v.raw.rate)} of raw ${alg} crypto.sign/s: ` +
          `a service on this stack (Fastify, one HTTP request per assertion, the load generator on the same 2 cores) cannot answer faster than this floor even before it signs, so the ${alg} ratio cannot exceed ~${n2(f.rps / v.raw.rate)} here (the service reaches ${n3(v.http.rps / f.rps)} of the floor).`,
      );
      out.push('');
    }
    const ablation = Object.entries(a).filter(([, v]) => v.silent);
    if (ablation.length > 0) {
      out.push('Logging ablation, same run: the same service with `LOG_LEVEL=silent` (no request log lines, no audit log line).');
      out.push('');
      out.push(
        table(
          ['alg', 'assertions/s, LOG_LEVEL=info', 'assertions/s, silent', 'silent / info', 'CPU µs/assertion, info', 'CPU µs/assertion, silent', 'logging CPU µs/assertion'],
          ablation.map(([alg, v]) => [alg, n0(v.http.rps), n0(v.silent!.rps), n3(v.silent!.rps / v.http.rps), n1(v.http.cpuUsPerReq), n1(v.silent!.cpuUsPerReq), n1(v.http.cpuUsPerReq - v.silent!.cpuUsPerReq)]),
        ),
      );
      out.push('');
    }
  }

  const c = r.sections.contention as
    | Record<string, { p50Ms: number; p99Ms: number; maxMs: number; requests: number; errors: number; assertionsPerS?: number; allP99: number[]; stealShare?: number }>
    | undefined;
  if (c) {
    out.push('## 3b. JWKS latency while assertions are signed at full rate');
    out.push('');
    out.push(
      `A paced probe (in the harness process, keep-alive) requests the JWKS ${r.params.probeRate} times a second for ${r.params.contentionS} s per run, ` +
        `alone ("idle") and while wrk drives POST /v1/assertions with ${r.params.signConnections} connections. Latency is measured by the probe, so it includes the probe's own scheduling delay on the busy machine. ` +
        'The rows marked "public port in the main thread" are the same service with PUBLIC_SERVER_THREAD=false (JWKS and signing API on one event loop), each compared with its own idle row. ' +
        `Every run after the first starts both services afresh and warms them (the probe for 1 s, ES256 assertions for ${r.params.warmS} s); a run's idle and loaded rows share one process.`,
    );
    out.push('');
    // Rows "... (public port in the main thread)" are the PUBLIC_SERVER_THREAD=false ablation, compared with their own idle row.
    const idleOf = (k: string) => {
      const suffix = /( \(.*\))$/.exec(k)?.[1] ?? '';
      return c[`idle${suffix}`]?.p99Ms;
    };
    out.push(
      table(
        ['condition', 'JWKS p50 ms', 'JWKS p99 ms', 'p99 runs', 'p99 vs idle', 'max ms', 'assertions/s meanwhile', 'probe requests', 'errors', 'CPU time stolen by the host'],
        Object.entries(c).map(([k, v]) => {
          const idle = idleOf(k);
          const steal = v.stealShare === undefined ? '-' : `${(v.stealShare * 100).toFixed(1)}%`;
          return [k, n2(v.p50Ms), n2(v.p99Ms), v.allP99.join(' / '), idle ? n2(v.p99Ms / idle) : '-', n2(v.maxMs), n0(v.assertionsPerS), String(v.requests), String(v.errors), steal];
        }),
      ),
    );
    out.push('');
  }

  const trace = r.sections.contentionTrace as Record<string, SchedSummary & { p99Ms: number; assertionsPerS?: number }> | undefined;
  if (trace) out.push(...schedSection(trace));

  if (jwks || a) {
    out.push('## 4. Redis commands per request');
    out.push('');
    const idle = r.sections.redisIdle as { seconds: number; commands: Record<string, number>; perS: number } | undefined;
    out.push(
      'From `INFO commandstats` deltas around every measured run (the snapshots\' own INFO calls removed). Three service replicas share the Redis (all features; rate limit off; LOG_LEVEL=silent); each polls every key set (HGET of its generation) every STORE_POLL_INTERVAL (5 s), whatever the load' +
        (idle ? `: with no load at all, ${redisText(idle.commands)} in ${idle.seconds} s (${idle.perS.toFixed(2)}/s). "Net" subtracts that rate over the runs' duration.` : '.'),
    );
    out.push('');
    const rows: string[][] = [];
    const netOf = (s: Summary) =>
      idle && s.redisCommands ? (Math.max(0, Object.values(s.redisCommands).reduce((x, y) => x + y, 0) - idle.perS * s.seconds) / Math.max(1, s.requests)).toFixed(6) : '-';
    if (jwks) {
      for (const [mode, set] of [['JWKS keep-alive', jwks.keepAlive], ['JWKS Connection: close', jwks.close]] as const) {
        const s = set.service;
        if (s) rows.push([mode, n0(s.requests), n1(s.seconds), redisText(s.redisCommands), s.redisPerRequest !== undefined ? s.redisPerRequest.toFixed(6) : '-', netOf(s)]);
      }
    }
    if (a) for (const [alg, v] of Object.entries(a)) rows.push([`assertion ${alg}`, n0(v.http.requests), n1(v.http.seconds), redisText(v.http.redisCommands), v.http.redisPerRequest !== undefined ? v.http.redisPerRequest.toFixed(6) : '-', netOf(v.http)]);
    out.push(table(['requests', 'count', 'seconds', 'Redis commands during the runs', 'per request', 'net per request'], rows));
    out.push('');
  }

  const g = r.sections.growth as
    | (Record<string, { jwks: Summary; startMs: number; idleRss: number; jwksPeakRss: number; peakRss: number; bodyBytes: number }> & {
        seedMs: number;
        seedCached?: boolean;
        mixed: Record<string, { jwksRps: number; assertionsRps: number; errors: number; peakRss: number; memory?: { heapUsed: number; heapTotal: number; external: number; rss: number } }>;
      })
    | undefined;
  if (g) {
    out.push('## 5. Growth: 1, 100 and 1,000 key sets');
    out.push('');
    out.push(
      'Each size is its own service process (all three run at once, interleaved loads) on a second Redis holding 1,000 RS256 key sets in steady state: ' +
        `a retired, an active and a next RSA-2048 key each (seeded in ${n0(g.seedMs)} ms${g.seedCached ? ' from records sealed by an earlier run, bench/out/cache' : ''} through the service's own modules and store; the keys are products of pairs from a pool of random primes, see bench/lib/keys.ts, because generating 3,000 RSA keys takes minutes). ` +
        `JWKS load: GET /jwks/{set}.json with a random set per request, ${r.params.jwksConnections} connections. ` +
        'Mixed load: the same JWKS load plus POST /v1/assertions (8 connections) at once. RSS sampled every 50 ms from /proc. MB = 10^6 bytes.',
    );
    out.push('');
    const sizes = Object.keys(g).filter((k) => /^\d+$/.test(k));
    const one = g[sizes[0]!];
    out.push(
      table(
        ['key sets', 'start-up to ready', 'JWKS bytes', 'JWKS req/s', 'vs 1 set', 'p50 ms', 'p99 ms', 'CPU µs/req', 'RSS idle', 'RSS peak (JWKS load)', 'RSS peak (mixed load)', 'mixed: JWKS/s + assertions/s', 'errors'],
        sizes.map((k) => {
          const v = g[k]!;
          const m = g.mixed[k];
          return [
            k,
            `${n0(v.startMs)} ms`,
            String(v.bodyBytes),
            n0(v.jwks.rps),
            one ? n3(v.jwks.rps / one.jwks.rps) : '-',
            n2(v.jwks.p50Ms),
            n2(v.jwks.p99Ms),
            n1(v.jwks.cpuUsPerReq),
            `${mb(v.idleRss)} (${mib(v.idleRss)})`,
            mb(v.jwksPeakRss),
            mb(m?.peakRss),
            m ? `${n0(m.jwksRps)} + ${n0(m.assertionsRps)}` : '-',
            String(v.jwks.errors + (m?.errors ?? 0)),
          ];
        }),
      ),
    );
    out.push('');
    out.push("The service's own view right after the mixed load (its /metrics, prom-client default gauges):");
    out.push('');
    out.push(
      table(
        ['key sets', 'V8 heap used', 'V8 heap total', 'external (Buffers, OpenSSL keys not included)', 'RSS'],
        sizes.map((k) => {
          const m = g.mixed[k]?.memory;
          return [k, mb(m?.heapUsed), mb(m?.heapTotal), mb(m?.external), mb(m?.rss)];
        }),
      ),
    );
    out.push('');
  }

  const res = r.sections.resilience as
    | {
        durationS: number;
        keepAlive: { requests: number; errors: number; errorDetail: Record<string, number>; codes?: Record<string, number>; rps: number; p99Ms: number; maxMs: number };
        close: { requests: number; errors: number; errorDetail: Record<string, number>; codes?: Record<string, number>; rps: number; p99Ms: number; maxMs: number };
        probe: { requests: number; errors: number; statuses: Record<string, number>; distinctEtags: number };
        events: string[];
        kidsBefore: string[];
        kidsAfter: string[];
        replicaAgrees: boolean;
        activeAfter: string;
        activeServed: boolean;
        errors: number;
      }
    | undefined;
  if (res) {
    out.push('## 6. Rotation and Redis restart during a JWKS load');
    out.push('');
    out.push(
      `${res.durationS} s of JWKS load on the service: keep-alive (32 connections) and Connection: close (16 connections) at once, plus a 100 req/s probe that records every ETag it sees. Meanwhile:`,
    );
    out.push('');
    for (const e of res.events) out.push(`- ${e}`);
    out.push('');
    out.push(
      table(
        ['load', 'requests', 'req/s', 'p99 ms', 'max ms', 'status codes', 'errors'],
        [
          ['keep-alive', n0(res.keepAlive.requests), n0(res.keepAlive.rps), n2(res.keepAlive.p99Ms), n2(res.keepAlive.maxMs), JSON.stringify(res.keepAlive.codes ?? {}), `${res.keepAlive.errors} ${JSON.stringify(res.keepAlive.errorDetail)}`],
          ['Connection: close', n0(res.close.requests), n0(res.close.rps), n2(res.close.p99Ms), n2(res.close.maxMs), JSON.stringify(res.close.codes ?? {}), `${res.close.errors} ${JSON.stringify(res.close.errorDetail)}`],
          ['probe', n0(res.probe.requests), '100', '-', '-', JSON.stringify(res.probe.statuses), String(res.probe.errors)],
        ],
      ),
    );
    out.push('');
    out.push(
      `Total errors: **${res.errors}**. The probe saw ${res.probe.distinctEtags} successive ETag(s). Published kids before: ${res.kidsBefore.join(', ')}; after: ${res.kidsAfter.join(', ')}. ` +
        `The active kid returned by the last rotation (${res.activeAfter || '-'}) is ${res.activeServed ? '' : 'NOT '}first in the served JWKS; the second replica serves ${res.replicaAgrees ? 'the same' : 'a DIFFERENT'} JWKS afterwards.`,
    );
    out.push('');
  }

  if (r.profiles.length > 0) {
    out.push('## Profiles (node --cpu-prof) of the missed targets');
    out.push('');
    out.push('Each profile is a separate service process under the same load as the measurement (a warm-up, then the profiled run), stopped with SIGTERM. Positions are mapped back to src/ through the build\'s source maps.');
    out.push('');
    for (const p of r.profiles) out.push(profileSection(p));
  }

  if (r.notes.length > 0) {
    out.push('## Notes from the run');
    out.push('');
    for (const n of r.notes) out.push(`- ${n}`);
    out.push('');
  }

  if (notes) {
    out.push('## Analysis (bench/NOTES.md, hand-written; check it against the numbers above)');
    out.push('');
    out.push(notes.replace(/^# .*\n/, '').trim());
    out.push('');
  }

  out.push('## Commands');
  out.push('');
  out.push(`The whole suite: \`${r.command}\`. The loads it ran (ports vary per run):`);
  out.push('');
  out.push('```');
  for (const c of r.commands) out.push(c);
  out.push('```');
  out.push('');
  return out.join('\n');
}

/** 3c: the traced run of each contention condition (bench/lib/sched-trace.ts). */
function schedSection(trace: Record<string, SchedSummary & { p99Ms: number; assertionsPerS?: number }>): string[] {
  const out = ['## 3c. Where the probe waits: the scheduler trace of one more run per condition', ''];
  out.push(
    'One more run of each condition on the service (not in the medians above), recorded with `perf sched record`. A JWKS request of the probe needs three wakeups: ' +
      "the probe's timer (its thread in the harness process), the service's `jwks-public` thread on the request, and the probe again on the answer. " +
      'Each row counts the wakeups of one of the two watched threads by what was running on the CPU it was woken onto, and how long each waited for that or another CPU ' +
      '(from `sched_waking` to the switch that ran it). A wait over 1 ms is one that did not preempt the running thread and waited for it to leave the CPU or for the next scheduler tick.',
  );
  out.push('');
  for (const [condition, t] of Object.entries(trace)) {
    const rows: string[][] = [];
    for (const [thread, waits] of Object.entries(t.waits)) {
      const all = waits.reduce((a, w) => a + w.wakeups, 0);
      const over = waits.reduce((a, w) => a + w.over1Ms, 0);
      rows.push([`**${thread}**`, '**all**', n0(all), `**${over} (${((over / Math.max(1, all)) * 100).toFixed(1)}%)**`, '', '', '']);
      for (const w of waits.filter((x) => x.wakeups >= 20 || x.over1Ms > 0)) {
        rows.push([thread, w.on, n0(w.wakeups), `${w.over1Ms} (${((w.over1Ms / w.wakeups) * 100).toFixed(1)}%)`, n2(w.p50Ms), n2(w.p99Ms), n2(w.maxMs)]);
      }
    }
    out.push(`**${condition}** (JWKS p99 of this run ${n2(t.p99Ms)} ms${t.assertionsPerS ? `, ${n0(t.assertionsPerS)} assertions/s meanwhile` : ''}):`);
    out.push('');
    out.push(table(['woken thread', 'running on the CPU it was woken onto', 'wakeups', 'waited > 1 ms', 'wait p50 ms', 'wait p99 ms', 'max ms'], rows));
    out.push('');
    const runs = Object.entries(t.runs)
      .filter(([, x]) => x.switches >= 100)
      .sort((a, b) => b[1].p90Ms - a[1].p90Ms)
      .map(([g, x]) => `${g} ${n2(x.p50Ms)} / ${n2(x.p90Ms)} / ${n2(x.maxMs)}`);
    out.push(`How long threads ran before being switched out (p50 / p90 / max ms): ${runs.join('; ')}.`);
    out.push('');
  }
  return out;
}
