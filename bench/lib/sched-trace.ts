// The kernel scheduler's view of a latency tail (Linux, `perf sched record`: needs perf and access to the sched
// tracepoints, as root). For watched threads, each wakeup's wait for a CPU (from sched_waking to the switch that
// runs the thread), grouped by what was running on the CPU the thread was woken onto; and how long the threads
// of each group ran before they were switched out. bench/run.ts (section 3c) and bench/ab.ts's "sched" option use it.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { quantile, sleep, threadTimes } from './procs.js';

/** All CPUs' time counters of /proc/stat (ticks; guest time is already in user and nice): [total, steal]. */
function cpuTicks(): [number, number] {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  return [fields.reduce((a, b) => a + b, 0), fields[7] ?? 0];
}

/**
 * Starts counting the CPU time the hypervisor took from this virtual machine (steal, /proc/stat); the returned
 * function gives it as a share of all CPU time since. 0 on bare metal; undefined without /proc.
 */
function stealMeter(): () => number | undefined {
  let start: [number, number];
  try {
    start = cpuTicks();
  } catch {
    return () => undefined;
  }
  return () => {
    try {
      const [total, steal] = cpuTicks();
      return total > start[0] ? (steal - start[1]) / (total - start[0]) : 0;
    } catch {
      return undefined;
    }
  };
}

/** True when `perf sched record` can trace the whole machine here. */
export function schedTraceAvailable(): boolean {
  const r = spawnSync('perf', ['sched', 'record', '-o', '/dev/null', '--', 'true'], { stdio: 'ignore', timeout: 20_000 });
  return r.status === 0;
}

interface SchedRecording {
  /** Stops recording; resolves once perf has written its file, rejects when perf failed. */
  stop(): Promise<void>;
}

/** Recordings still running, stopped if the harness exits first: a system-wide perf left behind fills the disk. */
const recordings = new Set<() => void>();
process.on('exit', () => {
  for (const kill of recordings) kill();
});

/** Records the scheduler events of all CPUs to `file` until stopped; rejects when perf does not start. */
async function startSchedRecord(file: string): Promise<SchedRecording> {
  rmSync(file, { force: true });
  rmSync(`${file}.old`, { force: true });
  const perf = spawn('perf', ['sched', 'record', '-q', '-o', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  perf.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  // perf stops cleanly on SIGINT and then exits 0, 130 or with the signal itself.
  const exited = new Promise<string | undefined>((resolve) => {
    perf.on('error', (err) => resolve(err.message));
    perf.on('exit', (code, signal) => resolve(code === 0 || code === 130 || signal === 'SIGINT' ? undefined : `exited (${code ?? signal})`));
  });
  const kill = () => perf.kill('SIGINT');
  recordings.add(kill);
  const stop = async () => {
    kill();
    const why = await exited;
    recordings.delete(kill);
    if (why) throw new Error(`perf sched record -o ${file}: ${why}${stderr ? `: ${stderr.trim()}` : ''}`);
  };
  // perf writes the file's header once its events are open.
  const deadline = Date.now() + 10_000;
  while (!(existsSync(file) && statSync(file).size > 0)) {
    if (perf.exitCode !== null || perf.signalCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`perf sched record -o ${file}: did not start${stderr ? `: ${stderr.trim()}` : ''}`);
    }
    await sleep(50);
  }
  await sleep(100);
  return { stop };
}

/**
 * Runs `measure` (a latency probe) with the host's steal time counted and, given `traceFile`, under
 * `perf sched record`, which is stopped whatever happens.
 */
export async function observe<T>(measure: () => Promise<T>, traceFile?: string): Promise<{ result: T; steal: number | undefined }> {
  const recording = traceFile ? await startSchedRecord(traceFile) : undefined;
  try {
    const steal = stealMeter();
    const result = await measure();
    return { result, steal: steal() };
  } finally {
    await recording?.stop();
  }
}

export interface Task {
  pid: number;
  tid: number;
  comm: string;
}

export interface WaitRow {
  /** What was running on the CPU the watched thread was woken onto (a group of `classify`). */
  on: string;
  wakeups: number;
  over1Ms: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface SchedSummary {
  /** Per watched thread (its label), its waits by what it was woken behind, most frequent first. */
  waits: Record<string, WaitRow[]>;
  /** Per group, how long its threads ran before a switch (p50, p90, max ms). */
  runs: Record<string, { switches: number; p50Ms: number; p90Ms: number; maxMs: number }>;
}

/**
 * The JWKS thread's and the probe's waits (the probe runs on this process's main thread), with the threads on
 * the machine grouped as the service's (main, jwks-public, sign-pool, V8 helpers), this process's, wrk, Redis.
 */
export function serviceSched(files: string[], servicePid: number): Promise<SchedSummary> {
  const classify = (t: Task): string => {
    if (t.tid === 0) return 'idle CPU';
    if (t.tid < 0) return 'unknown (before the trace)';
    if (t.pid === servicePid) {
      if (t.tid === servicePid) return 'service main thread';
      if (t.comm === 'jwks-public' || t.comm === 'sign-pool') return t.comm;
      return 'service V8 helpers';
    }
    if (t.pid === process.pid) return t.tid === process.pid ? 'probe (harness main thread)' : 'harness V8 helpers';
    if (t.comm === 'wrk' || t.comm === 'redis-server') return t.comm;
    return 'other (perf included)';
  };
  const watch = (t: Task) => (t.comm === 'jwks-public' && t.pid === servicePid ? 'jwks-public' : t.tid === process.pid ? 'probe' : undefined);
  // The service's threads, so that each is classified from its first event (not only once it has run).
  return summarizeSched(files, classify, watch, new Map([...threadTimes(servicePid).keys()].map((tid) => [tid, servicePid])));
}

/**
 * Reads `perf sched record` files. `classify` names a thread's group (for "what was running"); `watch` gives a
 * label to the threads whose waits are wanted, undefined for the others. `knownPids` maps thread ids to process
 * ids ahead of the trace (a thread's process is otherwise learned from the first event it runs).
 */
export async function summarizeSched(files: string[], classify: (t: Task) => string, watch: (t: Task) => string | undefined, knownPids = new Map<number, number>()): Promise<SchedSummary> {
  const waits = new Map<string, Map<string, number[]>>();
  const runs = new Map<string, number[]>();
  for (const file of files) await readTrace(file, classify, watch, waits, runs, knownPids);
  const summary: SchedSummary = { waits: {}, runs: {} };
  for (const [label, byBehind] of waits) {
    const rows = [...byBehind].map(([on, ms]): WaitRow => {
      ms.sort((a, b) => a - b);
      return { on, wakeups: ms.length, over1Ms: ms.filter((x) => x > 1).length, p50Ms: quantile(ms, 0.5), p99Ms: quantile(ms, 0.99), maxMs: ms.at(-1)! };
    });
    summary.waits[label] = rows.sort((a, b) => b.wakeups - a.wakeups);
  }
  for (const [group, ms] of runs) {
    ms.sort((a, b) => a - b);
    summary.runs[group] = { switches: ms.length, p50Ms: quantile(ms, 0.5), p90Ms: quantile(ms, 0.9), maxMs: ms.at(-1)! };
  }
  return summary;
}

const LINE = /^\s*(\d+)\/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(sched_switch|sched_waking|sched_migrate_task):\s+(.*)$/;
const SWITCH = /^prev_comm=(.*) prev_pid=(\d+) prev_prio=-?\d+ prev_state=\S+ ==> next_comm=(.*) next_pid=(\d+) next_prio=-?\d+$/;
const WAKING = /^comm=(.*) pid=(\d+) prio=-?\d+ target_cpu=(\d+)$/;
const MIGRATE = /^comm=(.*) pid=(\d+) prio=-?\d+ orig_cpu=(\d+) dest_cpu=(\d+)$/;

async function readTrace(
  file: string,
  classify: (t: Task) => string,
  watch: (t: Task) => string | undefined,
  waits: Map<string, Map<string, number[]>>,
  runs: Map<string, number[]>,
  knownPids: Map<number, number>,
): Promise<void> {
  const perf = spawn('perf', ['script', '-i', file, '-F', 'pid,tid,cpu,time,event,trace'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  perf.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => {
    perf.on('error', () => resolve(-1));
    perf.on('exit', (code) => resolve(code));
  });
  const pidOf = new Map<number, number>([[0, 0], ...knownPids]);
  const commOf = new Map<number, string>();
  const running = new Map<number, { tid: number; since: number }>();
  // A wakeup not yet followed by the switch that runs the thread: when, onto which CPU, behind which thread.
  const pending = new Map<number, { at: number; cpu: number; behind: number }>();
  const task = (tid: number): Task => ({ pid: pidOf.get(tid) ?? -1, tid, comm: commOf.get(tid) ?? '?' });
  let switches = 0;
  for await (const line of createInterface({ input: perf.stdout })) {
    const m = LINE.exec(line);
    if (!m) continue;
    const [pid, tid, cpu, at] = [Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4]) * 1000];
    pidOf.set(tid, pid);
    if (m[5] === 'sched_switch') {
      const s = SWITCH.exec(m[6]!);
      if (!s) continue;
      switches += 1;
      const [prev, next] = [Number(s[2]), Number(s[4])];
      commOf.set(prev, s[1]!);
      commOf.set(next, s[3]!);
      const was = running.get(cpu);
      if (was && was.tid === prev) {
        const group = classify(task(prev));
        const list = runs.get(group) ?? [];
        list.push(at - was.since);
        runs.set(group, list);
      }
      // A wakeup seen while the thread was still on a CPU (about to sleep) did not make it wait for one.
      pending.delete(prev);
      running.set(cpu, { tid: next, since: at });
      const woken = pending.get(next);
      if (woken) {
        pending.delete(next);
        const label = watch(task(next));
        if (label) {
          const behind = classify(task(woken.behind)) + (woken.cpu === cpu ? '' : ' (then ran on another CPU)');
          const byBehind = waits.get(label) ?? new Map<string, number[]>();
          const list = byBehind.get(behind) ?? [];
          list.push(at - woken.at);
          byBehind.set(behind, list);
          waits.set(label, byBehind);
        }
      }
    } else if (m[5] === 'sched_waking') {
      const w = WAKING.exec(m[6]!);
      if (!w) continue;
      const wokenTid = Number(w[2]);
      commOf.set(wokenTid, w[1]!);
      // target_cpu is the CPU it last ran on; a migration that follows (the wakeup's CPU choice) moves it.
      if (!pending.has(wokenTid)) pending.set(wokenTid, { at, cpu: Number(w[3]), behind: running.get(Number(w[3]))?.tid ?? -1 });
    } else {
      const g = MIGRATE.exec(m[6]!);
      const woken = g ? pending.get(Number(g[2])) : undefined;
      if (g && woken) {
        woken.cpu = Number(g[4]);
        woken.behind = running.get(woken.cpu)?.tid ?? -1;
      }
    }
  }
  const code = await exited;
  if (code !== 0 || switches === 0) throw new Error(`perf script -i ${file}: ${code !== 0 ? `exit ${code}` : 'no sched_switch event in the expected format'}${stderr ? `: ${stderr.trim().slice(0, 500)}` : ''}`);
}
