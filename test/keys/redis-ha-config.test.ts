// The Redis topology settings (REDIS_URL, REDIS_SENTINELS, REDIS_CLUSTER_NODES, ...) and the connections made
// from them, without servers; and the Helm chart's sentinel/cluster values read back by the config loader.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { Cluster, Redis } from 'ioredis';
import { parseAllDocuments } from 'yaml';
import { loadConfig } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';
import { connectRedis, reconnectOnReadonly } from '../../src/keys/redis-key-store.js';
import { findTool, repoRoot } from '../deploy/contract.js';

const KEK = `k1:${randomBytes(32).toString('base64')}`;
const load = (env: Record<string, string>) => loadConfig({ KEY_ENCRYPTION_KEYS: KEK, ...env });

function failsOn(env: Record<string, string>, variable: string, message?: RegExp): void {
  assert.throws(
    () => load(env),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.equal(err.variable, variable, err.message);
      if (message) assert.match(err.message, message);
      return true;
    },
  );
}

test('REDIS_URL alone: one server, as before; REDIS_PASSWORD / REDIS_USERNAME fill in what the URL leaves out', () => {
  const config = load({ REDIS_URL: 'rediss://user:pw@redis.example:6380/2' });
  assert.equal(config.redisUrl, 'rediss://user:pw@redis.example:6380/2');
  assert.deepEqual(config.redis, { mode: 'standalone', url: 'rediss://user:pw@redis.example:6380/2', nodes: [], username: 'user', password: 'pw', db: 2, tls: true });
  assert.equal(load({ REDIS_URL: 'redis://:from-url@r:6379', REDIS_PASSWORD: 'from-env' }).redis!.password, 'from-url', "the URL's password wins");
  const filled = load({ REDIS_URL: 'redis://r:6379', REDIS_PASSWORD: ' spaced pw ', REDIS_USERNAME: 'app' }).redis!;
  assert.equal(filled.password, ' spaced pw ', 'a password is taken as given, not trimmed');
  assert.equal(filled.username, 'app');
  assert.equal(load({ REDIS_URL: 'redis://:p%40ss%2Fw@r' }).redis!.password, 'p@ss/w', 'percent-decoded');
  assert.equal(loadConfig({}).redis, undefined, 'no Redis: the in-memory store');
  assert.equal(loadConfig({ REDIS_PASSWORD: 'x' }).redis, undefined, 'a password alone selects nothing');
});

test('Sentinel: REDIS_SENTINELS + REDIS_SENTINEL_MASTER, data-node credentials, database and TLS from REDIS_URL', () => {
  const config = load({
    REDIS_SENTINELS: 's0:26379, s1:26380,s2,[::1]:5000',
    REDIS_SENTINEL_MASTER: 'mymaster',
    REDIS_SENTINEL_PASSWORD: 'sentinel-pw',
    REDIS_URL: 'rediss://:data-pw@ignored:6379/3',
  });
  assert.deepEqual(config.redis, {
    mode: 'sentinel',
    nodes: [
      { host: 's0', port: 26379 },
      { host: 's1', port: 26380 },
      { host: 's2', port: 26379 },
      { host: '::1', port: 5000 },
    ],
    masterName: 'mymaster',
    sentinelPassword: 'sentinel-pw',
    password: 'data-pw',
    db: 3,
    tls: true,
  });
  const bare = load({ REDIS_SENTINELS: 's0:26379', REDIS_SENTINEL_MASTER: 'm', REDIS_PASSWORD: 'pw', REDIS_USERNAME: 'u' });
  assert.deepEqual({ ...bare.redis, nodes: undefined }, { mode: 'sentinel', nodes: undefined, masterName: 'm', username: 'u', password: 'pw', db: 0, tls: false });
  assert.equal(bare.redisUrl, 'redis+sentinel://s0:26379/m/0', 'set (the store is Redis), without credentials');
  assert.doesNotMatch(bare.redisUrl!, /pw/);
});

test('Sentinel: the redis+sentinel:// URL, alone or with REDIS_SENTINELS (as the Helm chart renders it)', () => {
  const config = load({ REDIS_URL: 'redis+sentinel://:pw@h1:26379,h2:26380/mymaster/2' });
  assert.deepEqual(config.redis, {
    mode: 'sentinel',
    nodes: [
      { host: 'h1', port: 26379 },
      { host: 'h2', port: 26380 },
    ],
    masterName: 'mymaster',
    password: 'pw',
    db: 2,
    tls: false,
  });
  assert.equal(load({ REDIS_URL: 'redis+sentinel://h1/m' }).redis!.db, 0);
  assert.equal(load({ REDIS_URL: 'rediss+sentinel://u:p@h1/m/1' }).redis!.tls, true);
  const chart = load({
    REDIS_URL: 'redis+sentinel://:pw@rel-redis:26379/mymaster/0',
    REDIS_SENTINELS: 'rel-redis-node-0.rel-redis-headless:26379,rel-redis-node-1.rel-redis-headless:26379',
    REDIS_SENTINEL_MASTER: 'mymaster',
  });
  assert.deepEqual(chart.redis!.nodes.map((n) => n.host), ['rel-redis-node-0.rel-redis-headless', 'rel-redis-node-1.rel-redis-headless'], 'REDIS_SENTINELS names the sentinels');
  assert.equal(chart.redis!.password, 'pw');
  assert.equal(chart.redisUrl, 'redis+sentinel://:pw@rel-redis:26379/mymaster/0');
});

test('Cluster: REDIS_CLUSTER_NODES, credentials from REDIS_URL or REDIS_PASSWORD, database 0 only', () => {
  const config = load({ REDIS_CLUSTER_NODES: 'c0:7000,c1,c2:7002', REDIS_PASSWORD: 'pw' });
  assert.deepEqual(config.redis, {
    mode: 'cluster',
    nodes: [
      { host: 'c0', port: 7000 },
      { host: 'c1', port: 6379 },
      { host: 'c2', port: 7002 },
    ],
    password: 'pw',
    db: 0,
    tls: false,
  });
  assert.equal(config.redisUrl, 'redis+cluster://c0:7000,c1:6379,c2:7002');
  const viaUrl = load({ REDIS_CLUSTER_NODES: 'c0:7000', REDIS_URL: 'rediss://app:secret@ignored:6379/0' }).redis!;
  assert.deepEqual([viaUrl.username, viaUrl.password, viaUrl.tls], ['app', 'secret', true]);
});

test('topology errors name the variable', () => {
  failsOn({ REDIS_URL: 'http://r:6379' }, 'REDIS_URL');
  failsOn({ REDIS_URL: 'redis+sentinel://h1:26379' }, 'REDIS_URL', /mastername/);
  failsOn({ REDIS_URL: 'redis+sentinel://h1:99999/m' }, 'REDIS_URL');
  failsOn({ REDIS_SENTINELS: 's0:26379' }, 'REDIS_SENTINEL_MASTER', /required/);
  failsOn({ REDIS_SENTINELS: 's0:26379,bad host', REDIS_SENTINEL_MASTER: 'm' }, 'REDIS_SENTINELS', /bad host/);
  failsOn({ REDIS_SENTINELS: 's0:0', REDIS_SENTINEL_MASTER: 'm' }, 'REDIS_SENTINELS');
  failsOn({ REDIS_SENTINELS: ' , ', REDIS_SENTINEL_MASTER: 'm' }, 'REDIS_SENTINELS');
  failsOn({ REDIS_SENTINELS: 's0', REDIS_SENTINEL_MASTER: 'other', REDIS_URL: 'redis+sentinel://s0/mymaster' }, 'REDIS_SENTINEL_MASTER', /differs/);
  failsOn({ REDIS_SENTINELS: 's0', REDIS_SENTINEL_MASTER: 'm', REDIS_URL: 'redis://r/notadb' }, 'REDIS_URL', /database/);
  failsOn({ REDIS_SENTINEL_MASTER: 'm', REDIS_URL: 'redis://r:6379' }, 'REDIS_SENTINEL_MASTER', /REDIS_SENTINELS/);
  failsOn({ REDIS_SENTINEL_PASSWORD: 'x' }, 'REDIS_SENTINEL_PASSWORD');
  failsOn({ REDIS_SENTINELS: 's0', REDIS_SENTINEL_MASTER: 'm', REDIS_CLUSTER_NODES: 'c0' }, 'REDIS_CLUSTER_NODES', /REDIS_SENTINELS/);
  failsOn({ REDIS_CLUSTER_NODES: 'c0', REDIS_URL: 'redis+sentinel://s0/m' }, 'REDIS_URL', /Cluster/);
  failsOn({ REDIS_CLUSTER_NODES: 'c0', REDIS_SENTINEL_MASTER: 'm' }, 'REDIS_SENTINEL_MASTER', /Cluster/);
  failsOn({ REDIS_CLUSTER_NODES: 'c0', REDIS_URL: 'redis://:pw@r:6379/1' }, 'REDIS_URL', /database 0/);
  failsOn({ REDIS_CLUSTER_NODES: 'c0', REDIS_KEY_PREFIX: 'app{x}:' }, 'REDIS_KEY_PREFIX', /hash tag/);
  for (const env of [{ REDIS_SENTINELS: 's0', REDIS_SENTINEL_MASTER: 'm' }, { REDIS_URL: 'redis+sentinel://s0/m' }, { REDIS_CLUSTER_NODES: 'c0' }]) {
    assert.throws(() => loadConfig(env), (err: unknown) => err instanceof ConfigError && err.variable === 'KEY_ENCRYPTION_KEYS', JSON.stringify(env));
  }
});

test('connections: fail-fast command connection, queued subscriber, READONLY reconnects; Sentinel and Cluster options', async () => {
  assert.equal(reconnectOnReadonly(new Error("READONLY You can't write against a read only replica.")), 2);
  assert.equal(reconnectOnReadonly(new Error('ERR something else')), false);
  const quiet = (c: Redis | Cluster) => c.on('error', () => undefined);

  const sentinel = connectRedis(load({ REDIS_SENTINELS: '127.0.0.1:1', REDIS_SENTINEL_MASTER: 'm', REDIS_SENTINEL_PASSWORD: 'sp', REDIS_URL: 'redis://:dp@x/4' }).redis!);
  try {
    [sentinel.client, sentinel.subscriber].forEach(quiet);
    assert.ok(sentinel.client instanceof Redis && sentinel.subscriber instanceof Redis);
    const { options } = sentinel.client as Redis;
    assert.deepEqual(options.sentinels, [{ host: '127.0.0.1', port: 1 }]);
    assert.deepEqual([options.name, options.role, options.sentinelPassword, options.password, options.db], ['m', 'master', 'sp', 'dp', 4]);
    assert.equal(options.enableOfflineQueue, false);
    assert.equal(options.reconnectOnError, reconnectOnReadonly);
    assert.equal((sentinel.subscriber as Redis).options.enableOfflineQueue, true);
  } finally {
    sentinel.client.disconnect();
    sentinel.subscriber.disconnect();
  }

  const cluster = connectRedis(load({ REDIS_CLUSTER_NODES: '127.0.0.1:1,127.0.0.1:2', REDIS_PASSWORD: 'cp' }).redis!);
  try {
    [cluster.client, cluster.subscriber].forEach(quiet);
    assert.ok(cluster.client instanceof Cluster, 'commands go through a Cluster client');
    const { options } = cluster.client as Cluster;
    assert.equal(options.scaleReads, 'master');
    assert.equal(options.enableOfflineQueue, false);
    assert.equal(options.redisOptions?.password, 'cp');
    assert.ok(cluster.subscriber instanceof Redis, 'the subscriber is one connection to any node (PUBLISH reaches every node)');
    assert.equal((cluster.subscriber as Redis).options.password, 'cp');
  } finally {
    cluster.client.disconnect();
    cluster.subscriber.disconnect();
  }

  const standalone = connectRedis(load({ REDIS_URL: 'redis://127.0.0.1:1/5', REDIS_PASSWORD: 'fill' }).redis!);
  try {
    [standalone.client, standalone.subscriber].forEach(quiet);
    const { options } = standalone.client as Redis;
    assert.deepEqual([options.port, options.db, options.password, options.enableOfflineQueue], [1, 5, 'fill', false]);
    assert.equal(options.reconnectOnError, reconnectOnReadonly);
  } finally {
    standalone.client.disconnect();
    standalone.subscriber.disconnect();
  }
});

const helm = findTool('helm');
test('the chart renders sentinel and cluster values into variables the config loader reads', { skip: helm ? false : 'helm not found' }, () => {
  const render = (args: string[]) => {
    const result = spawnSync(helm!, ['template', 'rel', join(repoRoot, 'helm/jwks-signer'), ...args], { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stderr);
    const deployment = parseAllDocuments(result.stdout)
      .map((d) => d.toJS() as { kind?: string; spec?: any })
      .find((d) => d?.kind === 'Deployment')!;
    const env: Record<string, string> = { KEY_ENCRYPTION_KEYS: KEK };
    for (const entry of deployment.spec.template.spec.containers[0].env as Array<{ name: string; value?: string; valueFrom?: unknown }>) {
      // Only the Redis variables: the chart's files (KEY_SETS_FILE, ...) are checked by test/deploy/helm.test.ts.
      if (!entry.name.startsWith('REDIS_')) continue;
      if (entry.name === 'REDIS_PASSWORD') env[entry.name] = 'chart-pw';
      else if (entry.value !== undefined) env[entry.name] = entry.value.replace(/\$\(([A-Z0-9_]+)\)/g, (_, v: string) => env[v] ?? '');
    }
    return env;
  };
  const cluster = loadConfig(render(['--set', 'redis.url=', '--set', 'redis.cluster.nodes[0].host=rc-0', '--set', 'redis.cluster.nodes[1].host=rc-1', '--set', 'redis.cluster.nodes[1].port=7000']));
  assert.deepEqual(cluster.redis, {
    mode: 'cluster',
    nodes: [
      { host: 'rc-0', port: 6379 },
      { host: 'rc-1', port: 7000 },
    ],
    password: 'chart-pw',
    db: 0,
    tls: false,
  });
  const sentinel = loadConfig(render(['-f', join(repoRoot, 'helm/ci-values/sentinel.yaml'), '--set', 'redis.sentinel.authWithRedisPassword=true']));
  assert.equal(sentinel.redis!.mode, 'sentinel');
  assert.equal(sentinel.redis!.masterName, 'mymaster');
  assert.equal(sentinel.redis!.nodes.length, 3);
  assert.equal(sentinel.redis!.password, 'chart-pw');
  assert.equal(sentinel.redis!.sentinelPassword, 'chart-pw');
});
