// Run as a child process by test/public-thread.test.ts (lowering a thread cannot be undone without privileges,
// so not in the test runner): lowers the main thread as server.ts does, ends the public thread as a crash would,
// and prints each thread's scheduling once the restarted thread serves.
import { setPriority } from 'node:os';
import { lowerOwnThread } from '../../src/lib/thread-priority.js';
import { buildTestApp } from './app.js';
import { threadStats } from './threads.js';

const { app } = await buildTestApp();
const { publicUrl } = await app.listen();
const lowered = lowerOwnThread(3);
await app.publicThread!.terminateForTest();
for (let i = 0; i < 200 && app.publicThread!.restarts < 1; i++) await new Promise((r) => setTimeout(r, 50));
const status = (await fetch(`${publicUrl}/.well-known/jwks.json`)).status;
const threads = [...threadStats()].map(([tid, t]) => ({ tid, ...t }));
// Whether this process may raise a thread's priority again (root with CAP_SYS_NICE may).
let privileged = true;
try {
  setPriority(0);
} catch {
  privileged = false;
}
await app.close();
process.stdout.write(`${JSON.stringify({ lowered, status, pid: process.pid, threads, privileged })}\n`);
