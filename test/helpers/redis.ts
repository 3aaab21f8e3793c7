// Starts a real redis-server on a free loopback port for a test file; can stop and restart it on the same port.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

const BIN = process.env.REDIS_SERVER_BIN ?? 'redis-server';

/**
 * A loopback port that is free now, and that the kernel will not hand to a later listen(0) of this or another
 * test: it is picked below the ephemeral range (ip_local_port_range), which listen(0) draws from. A port taken
 * from that range and closed at once could go to the next server started on port 0 (an oidc-provider, a fake
 * token endpoint) before the test binds it.
 */
export async function freePort(): Promise<number> {
  const lowestEphemeral = ephemeralRangeStart();
  const floor = 10_000;
  for (let attempt = 0; attempt < 50 && lowestEphemeral > floor; attempt++) {
    const candidate = floor + Math.floor(Math.random() * (lowestEphemeral - floor));
    // Not one this process was already given (it may not be bound yet).
    if (handedOut.has(candidate) || !(await canListen(candidate))) continue;
    handedOut.add(candidate);
    return candidate;
  }
  return listenOnce(0);
}

const handedOut = new Set<number>();

function ephemeralRangeStart(): number {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 0;
  } catch {
    return 0;
  }
}

function canListen(port: number): Promise<boolean> {
  return listenOnce(port).then(
    () => true,
    () => false,
  );
}

function listenOnce(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

function requireBinary(): void {
  const probe = spawnSync(BIN, ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    throw new Error(
      `redis-server not found (tried "${BIN}"). The tests need a real Redis: install it with ` +
        '`apt-get install -y redis-server` (or set REDIS_SERVER_BIN to its path).',
    );
  }
}

export interface RedisServer {
  port: number;
  url: string;
  /** A client for inspecting raw values; reconnects after restarts. */
  client: Redis;
  stop(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

export async function startRedis(extraArgs: string[] = []): Promise<RedisServer> {
  requireBinary();
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'jwks-signer-redis-'));
  let child: ChildProcess | undefined;

  async function start(): Promise<void> {
    child = spawn(BIN, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extraArgs], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const started = child;
    let output = '';
    await new Promise<void>((resolve, reject) => {
      const timeout = setTimeout(() => reject(new Error(`redis-server did not start on port ${port}: ${output}`)), 10_000);
      started.stdout!.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('Ready to accept connections')) {
          clearTimeout(timeout);
          resolve();
        }
      });
      started.on('exit', (code) => {
        clearTimeout(timeout);
        reject(new Error(`redis-server exited with ${code}: ${output}`));
      });
    });
    started.removeAllListeners('exit');
  }

  async function stop(): Promise<void> {
    const running = child;
    child = undefined;
    if (!running || running.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      running.once('exit', () => resolve());
      running.kill('SIGKILL');
    });
  }

  await start();
  const client = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 100 });
  client.on('error', () => undefined);
  await client.connect();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    client,
    stop,
    start,
    async close() {
      client.disconnect();
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
