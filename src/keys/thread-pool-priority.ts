// Signatures run on libuv's thread pool (node:crypto's callback sign()). On 2 cores an RSA signature at full
// rate would otherwise take a core from the threads that answer JWKS and HTTP requests, so the pool's threads
// are given a lower scheduling priority (a higher nice value: allowed without privileges) and the SCHED_BATCH
// policy (also allowed without privileges): a pool thread woken for a new signature then waits for the running
// thread's slice to end instead of preempting it, as sleeping threads otherwise may whatever their nice value.
// The policy is set with util-linux's `chrt` (src/lib/thread-priority.ts); without it the threads keep nice only.
//
// Node neither names the pool's threads nor exposes their ids, so they are found by what they do: while one
// long pbkdf2 job per pool thread runs (each job holds its thread: no thread can take two within the window),
// exactly the pool's threads are runnable in every sample of /proc/self/task/<tid>/stat taken before the first
// job ends. A round that finds any other number of threads (a V8 helper thread busy in every sample) is
// repeated; after four, nothing is changed. Linux only; elsewhere the pool keeps the process's priority.
import { pbkdf2 } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { setPriority } from 'node:os';
import { nameThread, THREAD_NAMES } from '../lib/thread-name.js';
import { setPolicy, threadStatFields } from '../lib/thread-priority.js';

/** libuv's pool size: UV_THREADPOOL_SIZE when set (1-1024), else 4. */
function threadPoolSize(env: NodeJS.ProcessEnv = process.env): number {
  const n = Number.parseInt(env.UV_THREADPOOL_SIZE ?? '', 10);
  if (!Number.isFinite(n)) return 4;
  return Math.min(1024, Math.max(1, n));
}

function runnableThreads(): number[] {
  // A thread that exited between the listing and the read has no fields.
  return readdirSync('/proc/self/task')
    .map(Number)
    .filter((tid) => threadStatFields(tid)?.[0] === 'R');
}

const SAMPLE_INTERVAL_MS = 2;
const MIN_SAMPLES = 3;

/**
 * The threads runnable in every sample taken before the first job ended; undefined when fewer than
 * MIN_SAMPLES were taken by then (the jobs were too short for this machine). The last sample before the
 * end is left out: the job may have finished on its thread before its callback reached this loop.
 */
async function findPoolThreads(size: number, iterations: number): Promise<number[] | undefined> {
  let ended = false;
  const jobs = Array.from(
    { length: size },
    () =>
      new Promise<void>((resolve) =>
        pbkdf2('jwks-signer', 'thread pool', iterations, 32, 'sha256', () => {
          ended = true;
          resolve();
        }),
      ),
  );
  const samples: number[][] = [];
  while (!ended) {
    await new Promise((resolve) => setTimeout(resolve, SAMPLE_INTERVAL_MS));
    if (!ended) samples.push(runnableThreads());
  }
  await Promise.all(jobs);
  samples.pop();
  if (samples.length < MIN_SAMPLES) return undefined;
  const [first, ...rest] = samples as [number[], ...number[][]];
  return first.filter((tid) => tid !== process.pid && rest.every((sample) => sample.includes(tid)));
}

export interface ThreadPoolPriority {
  /** The pool threads given `nice`: empty when they could not be told apart, or off Linux. */
  threads: number[];
  expected: number;
  /** How many of them also run under SCHED_BATCH (0 when `chrt` is missing or refused). */
  batch: number;
}

/** Gives libuv's pool threads the nice value `nice` and their name (THREAD_NAMES). Call it before starting worker threads. */
export async function lowerThreadPoolPriority(nice: number, size = threadPoolSize()): Promise<ThreadPoolPriority> {
  if (process.platform !== 'linux' || nice <= 0) return { threads: [], expected: size, batch: 0 };
  // ~25 ms of one core per job on this project's 2-core test VM; doubled while the jobs end too soon.
  let iterations = 50_000;
  for (let round = 0; round < 4; round++) {
    const threads = await findPoolThreads(size, iterations);
    if (threads === undefined) {
      iterations *= 2;
      continue;
    }
    if (threads.length !== size) continue;
    const lowered = threads.filter((tid) => {
      try {
        setPriority(tid, nice);
        return true;
      } catch {
        return false;
      }
    });
    for (const tid of threads) nameThread(tid, THREAD_NAMES.signingPool);
    return { threads: lowered, expected: size, batch: lowered.filter((tid) => setPolicy(tid, 'batch')).length };
  }
  return { threads: [], expected: size, batch: 0 };
}
