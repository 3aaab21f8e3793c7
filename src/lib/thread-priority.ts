// Scheduling of single threads (Linux). A thread's nice value and policy are its own: setpriority() on a thread
// id and `chrt --pid` without --all-tasks change that thread only, and a thread started later inherits them
// from the thread that starts it. Without privileges a thread's nice value can be raised but never lowered
// again, and SCHED_OTHER and SCHED_BATCH can be switched either way. Node has no call for the policy, so it
// is set with util-linux's `chrt`.
import { execFileSync } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';

export type Policy = 'batch' | 'other';

/** Sets a thread's policy; false when `chrt` is missing or refused. */
export function setPolicy(tid: number, policy: Policy): boolean {
  try {
    execFileSync('chrt', [`--${policy}`, '--pid', '0', String(tid)], { stdio: 'ignore', timeout: 5000 });
    return true;
  } catch {
    return false;
  }
}

/** The calling thread's id (the process id on the main thread); undefined without /proc. */
export function ownThreadId(): number | undefined {
  try {
    return Number(readlinkSync('/proc/thread-self').split('/').pop());
  } catch {
    return undefined;
  }
}

/** SCHED_BATCH as /proc gives a thread's policy (field 41 of its stat). */
const SCHED_BATCH = 3;

function policyOf(tid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[38]);
  } catch {
    return undefined;
  }
}

/**
 * Gives the calling thread (the main thread: the internal API, key management, logs) `nice` and SCHED_BATCH, so
 * that on waking it waits for the running thread's slice instead of preempting a signature, then handles all
 * that arrived meanwhile. Returns the nice value it now has and whether its policy is SCHED_BATCH.
 */
export function lowerOwnThread(nice: number): { nice: number; batch: boolean } {
  if (process.platform !== 'linux' || nice <= 0) return { nice: 0, batch: false };
  const tid = ownThreadId();
  try {
    setPriority(nice);
  } catch {
    // Keeps its priority; the policy alone is still worth setting.
  }
  return { nice: getPriority(), batch: tid !== undefined && setPolicy(tid, 'batch') };
}

export interface ThreadPriority {
  nice: number;
  batch: boolean;
}

/** The calling thread's nice value and whether it runs under SCHED_BATCH. */
export function ownPriority(): ThreadPriority {
  const tid = process.platform === 'linux' ? ownThreadId() : undefined;
  return { nice: getPriority(), batch: tid !== undefined && policyOf(tid) === SCHED_BATCH };
}

/**
 * A thread started by a lowered thread inherits its nice value and SCHED_BATCH. Gives the calling thread the
 * priority `to` (what the process had before anything was lowered) again: the policy can always be switched
 * back; a lower nice value only with CAP_SYS_NICE. Returns the nice value the thread is left with.
 */
export function restoreOwnThread(to: ThreadPriority): number {
  if (process.platform !== 'linux') return getPriority();
  const now = ownPriority();
  const tid = ownThreadId();
  if (tid !== undefined && now.batch !== to.batch) setPolicy(tid, to.batch ? 'batch' : 'other');
  if (now.nice > to.nice) {
    try {
      setPriority(to.nice);
    } catch {
      // EACCES without CAP_SYS_NICE or a RLIMIT_NICE that allows it.
    }
  }
  return getPriority();
}
