// Real Redis topologies for a test file, on 127.0.0.1 free ports, from the redis-server binary:
// - a primary with one replica watched by three sentinels (`redis-server <conf> --sentinel`, which is what
//   Debian's redis-sentinel package runs), with short down-after / failover timeouts;
// - a Redis Cluster of three primaries, made with `redis-cli --cluster create ... --cluster-yes`.
// Every wait is bounded; close() kills every process (SIGKILL) and removes the temp dir, and so does the
// process's exit if a test file dies before its after() hook.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from './redis.js';

const SERVER_BIN = process.env.REDIS_SERVER_BIN ?? 'redis-server';
/** Sentinel mode of the server binary; REDIS_SENTINEL_BIN may name Debian's redis-sentinel instead. */
const SENTINEL_BIN = process.env.REDIS_SENTINEL_BIN ?? SERVER_BIN;
const CLI_BIN = process.env.REDIS_CLI_BIN ?? 'redis-cli';
const HOST = '127.0.0.1';

function requireBinaries(): void {
  for (const [bin, pkg] of [
    [SERVER_BIN, 'redis-server'],
    [CLI_BIN, 'redis-tools'],
  ] as const) {
    const probe = spawnSync(bin, ['--version'], { encoding: 'utf8' });
    if (probe.error || probe.status !== 0) {
      throw new Error(`${bin} not found: the Redis HA tests need real servers (apt-get install -y ${pkg} redis-sentinel)`);
    }
  }
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function waitUntil(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number, everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err;
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
}

interface Proc {
  port: number;
  child: ChildProcess;
  output: () => string;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  running.add(child);
  child.once('exit', () => running.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of running) c.kill('SIGKILL');
    });
  }
}

async function spawnRedis(bin: string, args: string[], port: number, readyText: string): Promise<Proc> {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`${bin} on port ${port} did not start in 10 s:\n${output}`)), 10_000);
    const onData = () => {
      if (output.includes(readyText)) done();
    };
    const onExit = (code: number | null) => done(new Error(`${bin} on port ${port} exited with ${code}:\n${output}`));
    function done(err?: Error) {
      clearTimeout(timer);
      child.stdout!.off('data', onData);
      child.off('exit', onExit);
      if (err) {
        child.kill('SIGKILL');
        reject(err);
      } else resolve();
    }
    child.stdout!.on('data', onData);
    child.once('exit', onExit);
    onData();
  });
  return { port, child, output: () => output };
}

async function kill(proc: Proc | undefined): Promise<void> {
  if (!proc || proc.child.exitCode !== null || proc.child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    proc.child.once('exit', () => resolve());
    proc.child.kill('SIGKILL');
  });
}

/** An inspection client that never throws unhandled errors and gives up quickly. */
function inspector(port: number, password?: string): Redis {
  const client = new Redis({ host: HOST, port, ...(password ? { password } : {}), lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 1000, commandTimeout: 2000, retryStrategy: () => 200 });
  client.on('error', () => undefined);
  return client;
}

function asObject(flat: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  const list = flat as string[];
  for (let i = 0; i + 1 < list.length; i += 2) out[list[i]!] = String(list[i + 1]);
  return out;
}

function infoField(info: string, field: string): string | undefined {
  return new RegExp(`^${field}:(.*)\\r?$`, 'm').exec(info)?.[1]?.trim();
}

// ---------------------------------------------------------------------------------------------- Sentinel

export interface SentinelSetup {
  masterName: string;
  /** The data nodes' password (requirepass); the sentinels have their own. */
  dataPassword: string;
  sentinelPassword: string;
  /** `127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`, as REDIS_SENTINELS takes it. */
  sentinelsEnv: string;
  /** The primary's port as the sentinels report it. */
  primaryPort(): Promise<number>;
  /** A client on a data node (cached; reconnects on its own). */
  node(port: number): Redis;
  /** SIGKILLs the current primary; returns its port. */
  killPrimary(): Promise<number>;
  /** Waits until every live sentinel names a primary other than `oldPort` and that node says it is a master. */
  waitForFailover(oldPort: number, timeoutMs: number): Promise<number>;
  close(): Promise<void>;
}

export async function startSentinelSetup(options: { downAfterMs?: number; failoverTimeoutMs?: number } = {}): Promise<SentinelSetup> {
  requireBinaries();
  const masterName = 'jwksmaster';
  const dataPassword = 'data-pw-0123';
  const sentinelPassword = 'sentinel-pw-4567';
  const dir = mkdtempSync(join(tmpdir(), 'jwks-signer-sentinel-'));
  const nodes = new Map<number, Proc>();
  const sentinels: Proc[] = [];
  const clients = new Map<number, Redis>();
  const sentinelClients: Redis[] = [];

  const close = async () => {
    for (const client of [...clients.values(), ...sentinelClients]) client.disconnect();
    await Promise.all([...nodes.values(), ...sentinels].map(kill));
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    const startNode = async (replicaOf?: number) => {
      const port = await freePort();
      const nodeDir = join(dir, `node-${port}`);
      mkdirSync(nodeDir);
      const args = ['--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no', '--dir', nodeDir];
      args.push('--requirepass', dataPassword, '--masterauth', dataPassword, '--repl-diskless-sync', 'yes', '--repl-diskless-sync-delay', '0');
      if (replicaOf !== undefined) args.push('--replicaof', HOST, String(replicaOf));
      nodes.set(port, await spawnRedis(SERVER_BIN, args, port, 'Ready to accept connections'));
      return port;
    };
    const node = (port: number) => {
      let client = clients.get(port);
      if (!client) {
        client = inspector(port, dataPassword);
        clients.set(port, client);
      }
      return client;
    };

    const primary = await startNode();
    const replica = await startNode(primary);
    await waitUntil('the replica to sync', async () => infoField(await node(replica).info('replication'), 'master_link_status') === 'up', 10_000);

    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      const conf = join(dir, `sentinel-${port}.conf`);
      writeFileSync(
        conf,
        [
          `port ${port}`,
          `bind ${HOST}`,
          `dir ${dir}`,
          `requirepass ${sentinelPassword}`,
          `sentinel sentinel-pass ${sentinelPassword}`,
          `sentinel monitor ${masterName} ${HOST} ${primary} 2`,
          `sentinel auth-pass ${masterName} ${dataPassword}`,
          `sentinel down-after-milliseconds ${masterName} ${options.downAfterMs ?? 1000}`,
          `sentinel failover-timeout ${masterName} ${options.failoverTimeoutMs ?? 3000}`,
          `sentinel parallel-syncs ${masterName} 1`,
          '',
        ].join('\n'),
      );
      const args = SENTINEL_BIN === SERVER_BIN ? [conf, '--sentinel'] : [conf];
      sentinels.push(await spawnRedis(SENTINEL_BIN, args, port, '+monitor master'));
      const client = inspector(port, sentinelPassword);
      sentinelClients.push(client);
    }
    // Quorum and failover need every sentinel to know the others (hello messages every 2 s) and the replica.
    await waitUntil(
      'the sentinels to discover each other and the replica',
      async () => {
        for (const client of sentinelClients) {
          const master = asObject(await client.call('SENTINEL', 'MASTER', masterName));
          if (master['num-other-sentinels'] !== '2' || master['num-slaves'] !== '1' || master.flags !== 'master') return false;
        }
        return true;
      },
      15_000,
      100,
    );

    const liveSentinels = () => sentinelClients.filter((_, i) => sentinels[i]!.child.exitCode === null);
    const primaryPort = async () => {
      for (const client of liveSentinels()) {
        try {
          const [, port] = (await client.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', masterName)) as [string, string];
          return Number(port);
        } catch {
          // try the next sentinel
        }
      }
      throw new Error('no sentinel answered');
    };

    return {
      masterName,
      dataPassword,
      sentinelPassword,
      sentinelsEnv: sentinels.map((s) => `${HOST}:${s.port}`).join(','),
      primaryPort,
      node,
      async killPrimary() {
        const port = await primaryPort();
        await kill(nodes.get(port));
        return port;
      },
      async waitForFailover(oldPort, timeoutMs) {
        let promoted = 0;
        await waitUntil(
          `the sentinels to promote a new primary (old one on ${oldPort})`,
          async () => {
            const ports = await Promise.all(
              liveSentinels().map(async (c) => Number(((await c.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', masterName)) as string[])[1])),
            );
            if (ports.length === 0 || ports.some((p) => p === oldPort || p !== ports[0])) return false;
            if (infoField(await node(ports[0]!).info('replication'), 'role') !== 'master') return false;
            promoted = ports[0]!;
            return true;
          },
          timeoutMs,
          100,
        );
        return promoted;
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

// ----------------------------------------------------------------------------------------------- Cluster

export interface ClusterSetup {
  password: string;
  ports: number[];
  /** `127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`, as REDIS_CLUSTER_NODES takes it. */
  nodesEnv: string;
  /** A plain client on one node (cached). */
  node(port: number): Redis;
  keyslot(key: string): Promise<number>;
  /** The port of the primary that serves `slot`. */
  ownerOf(slot: number): Promise<number>;
  /** SIGKILLs one node. */
  kill(port: number): Promise<void>;
  close(): Promise<void>;
}

export async function startCluster(): Promise<ClusterSetup> {
  requireBinaries();
  const password = 'cluster-pw-89ab';
  const dir = mkdtempSync(join(tmpdir(), 'jwks-signer-cluster-'));
  const procs: Proc[] = [];
  const clients = new Map<number, Redis>();
  const close = async () => {
    for (const client of clients.values()) client.disconnect();
    await Promise.all(procs.map(kill));
    rmSync(dir, { recursive: true, force: true });
  };
  const node = (port: number) => {
    let client = clients.get(port);
    if (!client) {
      client = inspector(port, password);
      clients.set(port, client);
    }
    return client;
  };

  try {
    for (let i = 0; i < 3; i++) {
      // The node's cluster bus listens on port + 10000.
      const port = await freePort({ withOffset: 10_000 });
      const nodeDir = join(dir, `node-${port}`);
      mkdirSync(nodeDir);
      const args = ['--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no', '--dir', nodeDir];
      args.push('--cluster-enabled', 'yes', '--cluster-config-file', join(nodeDir, 'nodes.conf'), '--cluster-node-timeout', '2000');
      args.push('--requirepass', password, '--masterauth', password);
      procs.push(await spawnRedis(SERVER_BIN, args, port, 'Ready to accept connections'));
    }
    const ports = procs.map((p) => p.port);
    const create = spawn(CLI_BIN, ['--cluster', 'create', ...ports.map((p) => `${HOST}:${p}`), '--cluster-replicas', '0', '--cluster-yes'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, REDISCLI_AUTH: password },
    });
    track(create);
    let output = '';
    create.stdout!.on('data', (c: Buffer) => (output += c.toString()));
    create.stderr!.on('data', (c: Buffer) => (output += c.toString()));
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => create.kill('SIGKILL'), 20_000);
      create.once('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    if (code !== 0) throw new Error(`redis-cli --cluster create failed (${code}):\n${output}`);
    await waitUntil(
      'every node to report cluster_state:ok',
      async () => {
        for (const port of ports) {
          const info = (await node(port).call('CLUSTER', 'INFO')) as string;
          if (infoField(info, 'cluster_state') !== 'ok' || infoField(info, 'cluster_known_nodes') !== '3') return false;
        }
        return true;
      },
      15_000,
      100,
    );
    return {
      password,
      ports,
      nodesEnv: ports.map((p) => `${HOST}:${p}`).join(','),
      node,
      keyslot: async (key) => Number(await node(ports[0]!).call('CLUSTER', 'KEYSLOT', key)),
      async ownerOf(slot) {
        const ranges = (await node(ports[0]!).call('CLUSTER', 'SLOTS')) as Array<[number, number, [string, number, ...unknown[]], ...unknown[]]>;
        const range = ranges.find(([from, to]) => slot >= from && slot <= to);
        if (!range) throw new Error(`slot ${slot} is not served`);
        return Number(range[2][1]);
      },
      kill: (port) => kill(procs.find((p) => p.port === port)),
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
