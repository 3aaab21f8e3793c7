// Per-thread scheduling figures of a process, from /proc/<pid>/task/<tid>/stat (Linux).
import { readdirSync, readFileSync } from 'node:fs';

/** Each thread's nice value (field 19) and CPU time in clock ticks (fields 14-15, utime + stime). */
export function threadStats(pid: number | 'self' = 'self'): Map<number, { nice: number; cpuTicks: number }> {
  const out = new Map<number, { nice: number; cpuTicks: number }>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    // Fields from the state (field 3) on, at index 0: the command name before it may contain spaces.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    out.set(Number(tid), { nice: Number(f[16]), cpuTicks: Number(f[11]) + Number(f[12]) });
  }
  return out;
}
