// Per-thread scheduling figures of a process, from /proc/<pid>/task/<tid>/stat (Linux).
import { readdirSync, readFileSync } from 'node:fs';

/** SCHED_OTHER and SCHED_BATCH, as /proc gives a thread's policy. */
export const SCHED_OTHER = 0;
export const SCHED_BATCH = 3;

interface ThreadStat {
  name: string;
  nice: number;
  policy: number;
  cpuTicks: number;
}

/** Each thread's name (field 2), nice value (field 19), scheduling policy (field 41) and CPU time in clock ticks (fields 14-15, utime + stime). */
export function threadStats(pid: number | 'self' = 'self'): Map<number, ThreadStat> {
  const out = new Map<number, ThreadStat>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    } catch {
      continue; // The thread exited between the listing and the read.
    }
    // Fields from the state (field 3) on, at index 0: the command name before it may contain spaces.
    const end = stat.lastIndexOf(')');
    const f = stat.slice(end + 2).split(' ');
    out.set(Number(tid), { name: stat.slice(stat.indexOf('(') + 1, end), nice: Number(f[16]), policy: Number(f[38]), cpuTicks: Number(f[11]) + Number(f[12]) });
  }
  return out;
}

/** How many threads of this process carry `name`. */
export function threadsNamed(name: string): number {
  return [...threadStats().values()].filter((t) => t.name === name).length;
}
