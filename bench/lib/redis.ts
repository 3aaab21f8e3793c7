// A private redis-server on a loopback port (no persistence: a restart loses everything, the harsh case),
// and the INFO commandstats deltas that count the service's Redis commands.
import { Redis } from 'ioredis';
import { join } from 'node:path';
import { type Spawned, sleep, spawnLogged, stop } from './procs.js';

export interface RedisServer {
  port: number;
  url: string;
  proc: Spawned;
  restart(downMs: number): Promise<void>;
  kill(): Promise<void>;
  start(): Promise<void>;
  commandStats(): Promise<Map<string, number>>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

async function ping(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.ping();
      client.disconnect();
      return;
    } catch {
      client.disconnect();
      if (Date.now() > deadline) throw new Error(`redis on port ${port} did not start`);
      await sleep(50);
    }
  }
}

export async function startRedis(port: number, dir: string): Promise<RedisServer> {
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--protected-mode', 'no'];
  const launch = () => spawnLogged(`redis-server:${port}`, 'redis-server', args, process.env, join(dir, `redis-${port}.log`));
  const server: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    proc: launch(),
    async kill() {
      server.proc.child.kill('SIGKILL');
      await server.proc.exited;
    },
    async start() {
      server.proc = launch();
      await ping(port, 10_000);
    },
    async restart(downMs) {
      await server.kill();
      await sleep(downMs);
      await server.start();
    },
    async commandStats() {
      // No ready check: it would send an INFO of its own that the next snapshot would count.
      const client = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 1, enableReadyCheck: false });
      try {
        const text = await client.info('commandstats');
        const stats = new Map<string, number>();
        for (const match of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) stats.set(match[1]!, Number(match[2]));
        return stats;
      } finally {
        client.disconnect();
      }
    },
    async flush() {
      const client = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
      try {
        await client.flushall();
        await client.config('RESETSTAT');
      } finally {
        client.disconnect();
      }
    },
    async close() {
      await stop(server.proc, 2000);
    },
  };
  await ping(port, 10_000);
  return server;
}

/** Commands between two snapshots, without the INFO calls that took the snapshots. */
export function statsDelta(before: Map<string, number>, after: Map<string, number>): Map<string, number> {
  const delta = new Map<string, number>();
  for (const [cmd, calls] of after) {
    let n = calls - (before.get(cmd) ?? 0);
    if (cmd === 'info') n -= 1;
    if (n > 0) delta.set(cmd, n);
  }
  return delta;
}

export function totalCommands(delta: Map<string, number>): number {
  let total = 0;
  for (const n of delta.values()) total += n;
  return total;
}
