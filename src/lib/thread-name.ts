// Thread names for per-thread tools (`top -H`, `ps -L`, /proc/<pid>/task/*/comm): without them every thread of
// the process, the public port's and the signing pool's included, shows as "node" like V8's helper threads.
import { writeFileSync } from 'node:fs';

/** libuv's pool threads (the signatures; src/keys/thread-pool-priority.ts) and the public port's thread. */
export const THREAD_NAMES = { signingPool: 'sign-pool', publicPort: 'jwks-public' } as const;

/** Names a thread of this process (Linux keeps the first 15 bytes); elsewhere, or without /proc, does nothing. */
export function nameThread(tid: number | 'thread-self', name: string): void {
  try {
    writeFileSync(tid === 'thread-self' ? '/proc/thread-self/comm' : `/proc/self/task/${tid}/comm`, name);
  } catch {
    // The thread keeps its name.
  }
}
