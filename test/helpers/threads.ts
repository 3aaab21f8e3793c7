// Per-thread scheduling figures of a process, from /proc/<pid>/task/<tid>/stat (Linux).
import { readdirSync, readFileSync } from 'node:fs';

/** SCHED_OTHER and SCHED_BATCH, as /proc gives a thread's policy. */
export const SCHED_OTHER = 0;
export const SCHED_BATCH = 3;

/** Each thread's nice value (field 19), scheduling policy (field 41) and CPU time in clock ticks (fields 14-15, utime + stime). */
export function threadStats(pid: number | 'self' = 'self'): Map<number, { nice: number; policy: number; cpuTicks: number }> {
  const out = new Map<number, { nice: number; policy: number; cpuTicks: number }>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    // Fields from the state (field 3) on, at index 0: the command name before it may contain spaces.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    out.set(Number(tid), { nice: Number(f[16]), policy: Number(f[38]), cpuTicks: Number(f[11]) + Number(f[12]) });
  }
  return out;
}
