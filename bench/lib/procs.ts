// Processes of the benchmark: free loopback ports, spawning with logs to files, readiness, and the
// /proc readings (CPU ticks, RSS) that measure a server from outside its process.
import { type ChildProcess, spawn } from 'node:child_process';
import { openSync, readFileSync, readdirSync, closeSync } from 'node:fs';

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// Below the ephemeral range, so that no listen(0) of another process can take it before it is bound.
export { freePort } from '../../test/helpers/ports.js';

export interface Spawned {
  name: string;
  child: ChildProcess;
  pid: number;
  logFile: string;
  exited: Promise<number | null>;
}

const running = new Set<Spawned>();

/** Starts a process with stdout and stderr appended to `logFile`. */
export function spawnLogged(name: string, command: string, args: string[], env: NodeJS.ProcessEnv, logFile: string, cwd?: string): Spawned {
  const fd = openSync(logFile, 'a');
  const child = spawn(command, args, { env, stdio: ['ignore', fd, fd], ...(cwd ? { cwd } : {}) });
  closeSync(fd);
  if (child.pid === undefined) throw new Error(`cannot start ${name} (${command})`);
  const exited = new Promise<number | null>((resolve) => {
    child.on('exit', (code, signal) => resolve(code ?? (signal ? -1 : null)));
    child.on('error', () => resolve(-1));
  });
  const spawned: Spawned = { name, child, pid: child.pid, logFile, exited };
  running.add(spawned);
  void exited.then(() => running.delete(spawned));
  return spawned;
}

/** SIGTERM, then SIGKILL after `graceMs`. Resolves once the process has exited. */
export async function stop(proc: Spawned | undefined, graceMs = 5000): Promise<void> {
  if (!proc || proc.child.exitCode !== null || proc.child.signalCode !== null) return;
  proc.child.kill('SIGTERM');
  const timer = setTimeout(() => proc.child.kill('SIGKILL'), graceMs);
  await proc.exited;
  clearTimeout(timer);
}

export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((p) => stop(p, 3000)));
}

export function isRunning(proc: Spawned): boolean {
  return proc.child.exitCode === null && proc.child.signalCode === null;
}

/** Polls `url` until it answers `status` (or throws after `timeoutMs`, or when `proc` dies). */
export async function waitHttp(url: string, timeoutMs: number, proc?: Spawned, status = 200): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (proc && !isRunning(proc)) throw new Error(`${proc.name} exited before ${url} was ready; see ${proc.logFile}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === status) return;
      last = `status ${res.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(100);
  }
  throw new Error(`${url} not ready after ${timeoutMs} ms (${last})${proc ? `; see ${proc.logFile}` : ''}`);
}

const CLK_TCK = 100; // Linux USER_HZ: /proc reports CPU time in 1/100 s on every mainstream kernel.

/** User + system CPU of a process (all its threads), in microseconds. */
export function cpuMicros(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start at field 3.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return ((utime + stime) * 1_000_000) / CLK_TCK;
  } catch {
    return 0;
  }
}

/** Per thread of a process: its name, time on a CPU and time waiting for one (ns, /proc/<pid>/task/<tid>/schedstat). */
export function threadTimes(pid: number): Map<number, { comm: string; cpuNs: number; waitNs: number }> {
  const out = new Map<number, { comm: string; cpuNs: number; waitNs: number }>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const [cpu, wait] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ');
      out.set(Number(tid), { comm: readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim(), cpuNs: Number(cpu), waitNs: Number(wait) });
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return out;
}

export function cpuMicrosOf(pids: number[]): number {
  return pids.reduce((sum, pid) => sum + cpuMicros(pid), 0);
}

/** Resident set size in bytes (0 when the process is gone). */
export function rssBytes(pid: number): number {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Direct children of a process (nginx's workers under its master). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
      if (text) out.push(...text.split(/\s+/).map(Number));
    }
  } catch {
    // gone
  }
  return out;
}

/** Samples the RSS of `pid` every `intervalMs` until stopped; reports the peak and the last value. */
export function sampleRss(pid: number, intervalMs = 100): { stop(): { peak: number; last: number; samples: number } } {
  let peak = rssBytes(pid);
  let last = peak;
  let samples = 1;
  const timer = setInterval(() => {
    last = rssBytes(pid);
    samples += 1;
    if (last > peak) peak = last;
  }, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      last = rssBytes(pid) || last;
      if (last > peak) peak = last;
      return { peak, last, samples };
    },
  };
}

/** The value at quantile q (0-1) of ascending values, by nearest rank (p99 of 1,000 values: the 990th). */
export function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? NaN;
}

export function median(values: number[]): number {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}
