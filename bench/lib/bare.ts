// The bare Fastify baseline (bench/baselines/bare-fastify.mjs) as a process, for the suite and bench/ab.ts.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Spawned, spawnLogged, waitHttp } from './procs.js';

const BENCH = dirname(dirname(fileURLToPath(import.meta.url)));

/** Starts it on `port`, serving `bodyFile` with `etag`, and waits until it answers. */
export async function startBareFastify({ port, bodyFile, etag, logFile }: { port: number; bodyFile: string; etag: string; logFile: string }): Promise<Spawned> {
  const env = { ...process.env, PORT: String(port), BODY_FILE: bodyFile, ETAG: etag };
  const proc = spawnLogged('bare-fastify', process.execPath, [join(BENCH, 'baselines', 'bare-fastify.mjs')], env, logFile, dirname(BENCH));
  await waitHttp(`http://127.0.0.1:${port}/.well-known/jwks.json`, 15_000, proc);
  return proc;
}
