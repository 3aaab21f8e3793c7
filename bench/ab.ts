// A/B of service builds (not part of the suite): each build in bench/out/<dir> runs as its own service on one
// private Redis, with the runtime image's environment; wrk runs against them interleaved (A, B, A, B, ...).
// The commit messages' A/B figures come from this tool.
//
//   node node_modules/typescript/bin/tsc -p tsconfig.build.json --outDir bench/out/dist-a   (one build per side;
//   git archive <rev> src tsconfig*.json | tar -x -C <dir> gives an older tree to build)
//   node --import tsx bench/ab.ts '<JSON>'
//
// JSON: { "dists": { "<name>": "bench/out/dist-a", ... },   builds, under bench/out (node_modules is found from there)
//         "env": { "<name>": { "VAR": "value" } },          per-side environment (the same build twice with different settings)
//         "nodeArgs": { "<name>": ["--cpu-prof", ...] },    per-side node flags (those NODE_OPTIONS refuses)
//         "mode": "assertions" | "jwks" | "close" | "contention",
//         "algs": ["ES256", "RS256"], "reps": 5, "s": 3,
//         "bare": true,                                     adds bench/baselines/bare-fastify.mjs as a side, serving the
//                                                           first service's JWKS bytes (and its HTTP floor of an assertion)
//         "fresh": true,                                    a fresh process per side before every run after the first
//                                                           (warmed 1 s), as section 1 of the suite does
//         "threads": true,                                  also prints, per side, each thread's CPU and run-queue wait
//                                                           in µs per request (summed over the runs; from schedstat),
//                                                           by thread name: main, jwks-public, sign-pool (libuv's pool),
//                                                           node (V8's helper threads)
//         "sched": true }                                   contention: records the loaded runs with `perf sched record`
//                                                           (root) and prints, per side, how long the JWKS thread's and
//                                                           the probe's wakeups waited for a CPU, by what was running on
//                                                           the CPU they were woken onto, and how long each group's
//                                                           threads ran before a switch (lib/sched-trace.ts)
// assertions: POST /v1/assertions, 16 connections; jwks: GET /.well-known/jwks.json, 64 connections (close: with
// Connection: close); contention: JWKS p99 at 200 req/s alone, then while assertions are signed at full rate.
// Prints each run, then medians: req/s, the service's CPU µs per request and wrk's p99.
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assertionLoad, type LoadSpec, runLoad } from './lib/load.js';
import { probe } from './lib/probe.js';
import { cpuMicrosOf, freePort, median, sleep, type Spawned, spawnLogged, stop, stopAll, threadTimes, waitHttp } from './lib/procs.js';
import { startBareFastify } from './lib/bare.js';
import { startRedis } from './lib/redis.js';
import { observe, schedTraceAvailable, serviceSched } from './lib/sched-trace.js';
import { serviceEnv } from './lib/service-env.js';

interface Options {
  dists: Record<string, string>;
  env?: Record<string, Record<string, string>>;
  nodeArgs?: Record<string, string[]>;
  mode?: 'assertions' | 'jwks' | 'close' | 'contention';
  algs?: string[];
  reps?: number;
  s?: number;
  bare?: boolean;
  fresh?: boolean;
  threads?: boolean;
  sched?: boolean;
}

const opts = JSON.parse(process.argv[2] ?? '{}') as Options;
if (!opts.dists || Object.keys(opts.dists).length === 0) throw new Error('usage: node --import tsx bench/ab.ts \'{"dists":{"a":"bench/out/dist-a","b":"bench/out/dist-b"}}\'');
const OUT = join(dirname(fileURLToPath(import.meta.url)), 'out', 'ab');
mkdirSync(OUT, { recursive: true });
const mode = opts.mode ?? 'assertions';
const algs = mode === 'jwks' || mode === 'close' ? ['-'] : (opts.algs ?? ['ES256']);
const reps = opts.reps ?? 5;
const seconds = opts.s ?? 3;
const KEK = `ab:${randomBytes(32).toString('base64')}`;
const API_TOKEN = randomBytes(32).toString('base64url');
const keySetsFile = join(OUT, 'key-sets.json');
writeFileSync(keySetsFile, JSON.stringify({ keySets: Object.fromEntries(['RS256', 'PS256', 'ES256', 'EdDSA'].map((a) => [a.toLowerCase(), { alg: a }])) }));

const redis = await startRedis(await freePort(), OUT);
await redis.flush();
interface Side {
  name: string;
  proc: Spawned;
  base: string;
  internal: string;
  /** Starts the side's process again on the same ports and environment. */
  start: () => Promise<Spawned>;
}
const services: Side[] = [];
for (const [name, dist] of Object.entries(opts.dists)) {
  const [port, internalPort] = [await freePort(), await freePort()];
  const env = serviceEnv({ port, internalPort, redisUrl: redis.url, kek: KEK, apiToken: API_TOKEN }, { KEY_SETS_FILE: keySetsFile, ...(opts.env?.[name] ?? {}) });
  const base = `http://127.0.0.1:${port}`;
  const start = async () => {
    const proc = spawnLogged(name, process.execPath, [...(opts.nodeArgs?.[name] ?? []), join(resolve(dist), 'server.js')], env, join(OUT, `${name}.log`));
    await waitHttp(`${base}/readyz`, 60_000, proc);
    return proc;
  };
  services.push({ name, proc: await start(), base, internal: `http://127.0.0.1:${internalPort}`, start });
}
if (opts.bare) {
  const answer = await fetch(`${services[0]!.base}/.well-known/jwks.json`);
  const bodyFile = join(OUT, 'jwks-body.json');
  writeFileSync(bodyFile, Buffer.from(await answer.arrayBuffer()));
  const port = await freePort();
  const etag = answer.headers.get('etag') ?? '"bench"';
  const base = `http://127.0.0.1:${port}`;
  const start = () => startBareFastify({ port, bodyFile, etag, logFile: join(OUT, 'bare.log') });
  services.push({ name: 'bare', proc: await start(), base, internal: base, start });
}

const signing = (svc: (typeof services)[number], alg: string, durationS: number): LoadSpec => ({ ...assertionLoad(API_TOKEN, alg.toLowerCase(), 16), base: svc.internal, durationS });
const jwks = (svc: (typeof services)[number], durationS: number): LoadSpec => ({
  base: svc.base,
  paths: ['/.well-known/jwks.json'],
  connections: 64,
  durationS,
  ...(mode === 'close' ? { headers: { Connection: 'close' } } : {}),
});

/** The loaded runs' scheduler traces of one side: the JWKS thread's and the probe's waits for a CPU. */
async function printSched(name: string, servicePid: number, alg: string, traces: string[]): Promise<void> {
  const summary = await serviceSched(traces, servicePid);
  const ms = (x: number) => x.toFixed(2);
  for (const [label, rows] of Object.entries(summary.waits)) {
    const all = rows.reduce((a, r) => a + r.wakeups, 0);
    const over = rows.reduce((a, r) => a + r.over1Ms, 0);
    console.log(`${alg} ${name} sched: ${label} woken ${all} times under load, ${over} (${((over / Math.max(1, all)) * 100).toFixed(1)}%) waited > 1 ms for a CPU; by what the CPU was running:`);
    for (const r of rows.filter((x) => x.wakeups >= 10 || x.over1Ms > 0)) {
      console.log(`    ${r.on.padEnd(45)} ${String(r.wakeups).padStart(6)} wakeups, ${String(r.over1Ms).padStart(4)} > 1 ms, p50 ${ms(r.p50Ms)} p99 ${ms(r.p99Ms)} max ${ms(r.maxMs)} ms`);
    }
  }
  const runs = Object.entries(summary.runs).filter(([, r]) => r.switches >= 100).sort((a, b) => b[1].p90Ms - a[1].p90Ms);
  console.log(`${alg} ${name} sched: how long threads ran before a switch (p50 / p90 / max ms): ${runs.map(([g, r]) => `${g} ${ms(r.p50Ms)} / ${ms(r.p90Ms)} / ${ms(r.maxMs)}`).join('; ')}`);
}

try {
  for (const alg of algs) {
    if (mode === 'contention') {
      for (const svc of services) await probe(`${svc.base}/.well-known/jwks.json`, 200, 1);
      const sched = opts.sched && schedTraceAvailable();
      if (opts.sched && !sched) console.log('sched: `perf sched record` is not available here (perf, root); runs without it');
      const p99 = new Map(services.map((s) => [s.name, { idle: [] as number[], load: [] as number[], rate: [] as number[], steal: [] as number[], traces: [] as string[] }]));
      for (let i = 0; i < reps; i++) {
        for (const svc of services) {
          const idle = await probe(`${svc.base}/.well-known/jwks.json`, 200, seconds);
          const load = runLoad('wrk', signing(svc, alg, seconds + 1));
          load.catch(() => undefined); // awaited below; not an unhandled rejection meanwhile
          // Recording starts after the load has settled; perf itself takes ~150 ms to start.
          await sleep(sched ? 200 : 500);
          const trace = sched ? join(OUT, `${svc.name}-${alg}-${i + 1}.perf.data`) : undefined;
          const { result: loaded, steal: stolen } = await observe(() => probe(`${svc.base}/.well-known/jwks.json`, 200, seconds), trace);
          const rate = (await load).rps;
          const r = p99.get(svc.name)!;
          r.idle.push(idle.p99Ms);
          r.load.push(loaded.p99Ms);
          r.rate.push(rate);
          if (stolen !== undefined) r.steal.push(stolen);
          if (trace) r.traces.push(trace);
          console.log(
            `${alg} #${i + 1} ${svc.name}: JWKS p99 idle ${idle.p99Ms.toFixed(2)} ms, under signing ${loaded.p99Ms.toFixed(2)} ms; ${Math.round(rate)} assertions/s` +
              (stolen !== undefined ? `; steal ${(stolen * 100).toFixed(1)}%` : ''),
          );
        }
      }
      for (const [name, r] of p99) {
        console.log(
          `${alg} ${name} median: JWKS p99 idle ${median(r.idle).toFixed(2)} ms, under signing ${median(r.load).toFixed(2)} ms (${(median(r.load) / median(r.idle)).toFixed(2)}x), ${Math.round(median(r.rate))} assertions/s` +
            (r.steal.length ? `, steal ${(median(r.steal) * 100).toFixed(1)}% of CPU time under load` : ''),
        );
      }
      for (const svc of sched ? services : []) {
        const traces = p99.get(svc.name)!.traces;
        await printSched(svc.name, svc.proc.pid, alg, traces);
        for (const file of traces) rmSync(file, { force: true });
      }
      continue;
    }
    const spec = (svc: (typeof services)[number], durationS: number) => (mode === 'assertions' ? signing(svc, alg, durationS) : jwks(svc, durationS));
    const runs = new Map(services.map((s) => [s.name, { rps: [] as number[], cpu: [] as number[], p99: [] as number[], errors: 0 }]));
    // Per side: thread label -> summed CPU and wait (ns), and the requests they served.
    const threads = new Map(services.map((s) => [s.name, { requests: 0, byThread: new Map<string, { cpuNs: number; waitNs: number }>() }]));
    for (const svc of services) {
      const warm = await runLoad('wrk', { ...spec(svc, 1), countCodes: true });
      console.log(`warm ${svc.name} ${alg}: ${Math.round(warm.rps)}/s, codes ${JSON.stringify(warm.codes)}`);
    }
    for (let i = 0; i < reps; i++) {
      for (const svc of services) {
        if (opts.fresh && i > 0) {
          await stop(svc.proc, 15_000);
          svc.proc = await svc.start();
          await runLoad('wrk', spec(svc, 1));
        }
        const cpu0 = cpuMicrosOf([svc.proc.pid]);
        const t0 = opts.threads ? threadTimes(svc.proc.pid) : undefined;
        const r = await runLoad('wrk', spec(svc, seconds));
        if (t0) {
          const side = threads.get(svc.name)!;
          side.requests += r.requests;
          for (const [tid, now] of threadTimes(svc.proc.pid)) {
            const before = t0.get(tid) ?? { cpuNs: 0, waitNs: 0 };
            // Threads are told apart by name; the main thread's id is the process id.
            const label = tid === svc.proc.pid ? 'main' : now.comm;
            const sum = side.byThread.get(label) ?? { cpuNs: 0, waitNs: 0 };
            sum.cpuNs += now.cpuNs - before.cpuNs;
            sum.waitNs += now.waitNs - before.waitNs;
            side.byThread.set(label, sum);
          }
        }
        const run = runs.get(svc.name)!;
        run.rps.push(r.rps);
        run.p99.push(r.p99Ms);
        run.cpu.push((cpuMicrosOf([svc.proc.pid]) - cpu0) / Math.max(1, r.requests));
        run.errors += r.errors;
      }
      console.log(`${alg} #${i + 1}: ${[...runs].map(([n, v]) => `${n} ${Math.round(v.rps.at(-1)!)}/s (${v.cpu.at(-1)!.toFixed(0)} us, p99 ${v.p99.at(-1)!.toFixed(1)} ms)`).join('  ')}`);
    }
    for (const [name, side] of opts.threads ? threads : []) {
      const rows = [...side.byThread].filter(([, t]) => t.cpuNs > 0).sort((a, b) => b[1].cpuNs - a[1].cpuNs);
      const us = (ns: number) => (ns / 1000 / Math.max(1, side.requests)).toFixed(1);
      console.log(`${alg} ${name} threads, µs per request (CPU / waiting for a CPU): ${rows.map(([label, t]) => `${label} ${us(t.cpuNs)} / ${us(t.waitNs)}`).join(', ')}`);
    }
    const [first] = runs.values();
    console.log(
      `${alg} median: ${[...runs].map(([n, v]) => `${n} ${Math.round(median(v.rps))}/s ${median(v.cpu).toFixed(1)} us/req, p99 ${median(v.p99).toFixed(2)} ms, ${v.errors} errors, ${(median(v.rps) / median(first!.rps)).toFixed(3)}x`).join(' | ')}`,
    );
  }
} finally {
  for (const svc of services) await stop(svc.proc, 15_000);
  await redis.close();
  await stopAll();
}
