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
function ownThreadId(): number | undefined {
  try {
    return Number(readlinkSync('/proc/thread-self').split('/').pop());
  } catch {
    return undefined;
  }
}

/**
 * The fields of /proc/self/task/<tid>/stat from the state (field 3) on, at index 0 (the command name before it
 * may contain spaces); undefined when the thread has exited or there is no /proc.
 */
export function threadStatFields(tid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** SCHED_BATCH as /proc gives a thread's policy (field 41 of its stat). */
const SCHED_BATCH = 3;

function isBatch(tid: number | undefined): boolean {
  return tid !== undefined && Number(threadStatFields(tid)?.[38]) === SCHED_BATCH;
}

export interface ThreadPriority {
  nice: number;
  batch: boolean;
}

/**
 * Gives the calling thread (the main thread: the internal API, key management, logs) `nice` and SCHED_BATCH, so
 * that on waking it waits for the running thread's slice instead of preempting a signature, then handles all
 * that arrived meanwhile. Returns the priority it now has.
 */
export function lowerOwnThread(nice: number): ThreadPriority {
  if (process.platform !== 'linux' || nice <= 0) return { nice: 0, batch: false };
  const tid = ownThreadId();
  try {
    setPriority(nice);
  } catch {
    // Keeps its priority; the policy alone is still worth setting.
  }
  return { nice: getPriority(), batch: tid !== undefined && setPolicy(tid, 'batch') };
}

/** The calling thread's nice value and whether it runs under SCHED_BATCH. */
export function ownPriority(): ThreadPriority {
  return { nice: getPriority(), batch: process.platform === 'linux' && isBatch(ownThreadId()) };
}

/**
 * A thread started by a lowered thread inherits its nice value and SCHED_BATCH. Gives the calling thread the
 * priority `to` (what the process had before anything was lowered) again: the policy can always be switched
 * back; a lower nice value only with CAP_SYS_NICE. Returns the nice value the thread is left with.
 */
export function restoreOwnThread(to: ThreadPriority): number {
  if (process.platform !== 'linux') return getPriority();
  const tid = ownThreadId();
  if (tid !== undefined && isBatch(tid) !== to.batch) setPolicy(tid, to.batch ? 'batch' : 'other');
  if (getPriority() > to.nice) {
    try {
      setPriority(to.nice);
    } catch {
      // EACCES without CAP_SYS_NICE or a RLIMIT_NICE that allows it.
    }
  }
  return getPriority();
}
