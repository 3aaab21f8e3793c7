import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { loadConfig } from '../../src/config.js';
import { findTool, isContractEnvName, missingToolSkip, readContractEnv, repoRoot } from './contract.js';

type Obj = Record<string, any>;

const composeText = readFileSync(join(repoRoot, 'docker-compose.yml'), 'utf8');
const compose = parse(composeText, { merge: true }) as Obj;
const envExample = readFileSync(join(repoRoot, '.env.example'), 'utf8');
const contract = readContractEnv();
const SIGNERS = ['signer-1', 'signer-2'];
const SECRETS = ['KEY_ENCRYPTION_KEYS', 'API_TOKEN_SHA256', 'REDIS_PASSWORD'];

function exampleVariables(): Map<string, string> {
  const variables = new Map<string, string>();
  for (const line of envExample.split('\n')) {
    const match = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    if (match) variables.set(match[1] as string, match[2] as string);
  }
  return variables;
}

// A filled-in .env, as the commands in .env.example produce it.
function generatedEnv(): Record<string, string> {
  const env = Object.fromEntries(exampleVariables());
  env.KEY_ENCRYPTION_KEYS = `k1:${randomBytes(32).toString('base64')}`;
  env.API_TOKEN_SHA256 = randomBytes(32).toString('hex');
  env.REDIS_PASSWORD = randomBytes(24).toString('hex');
  return env;
}

// Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}; $$ is a literal $.
function interpolate(value: string, env: Record<string, string>): string {
  return value.replace(/\$\$|\$\{([A-Z0-9_]+)(?::([-?])([^}]*))?\}/g, (whole, name?: string, op?: string, arg?: string) => {
    if (whole === '$$') return '$';
    const set = env[name as string];
    if (set) return set;
    if (op === '?') throw new Error(`${name}: ${arg}`);
    return op === '-' ? (arg as string) : '';
  });
}

function service(name: string): Obj {
  const found = compose.services?.[name] as Obj | undefined;
  assert.ok(found, `service ${name} missing`);
  return found;
}

function portMappings(svc: Obj): Array<{ hostIp: string; host: number; container: number }> {
  return (svc.ports as string[]).map((spec) => {
    const parts = String(spec).split(':');
    assert.ok(parts.length === 2 || parts.length === 3, `port ${spec}: use HOST:CONTAINER or IP:HOST:CONTAINER`);
    const [hostIp, host, container] = parts.length === 3 ? parts : ['0.0.0.0', ...parts];
    return { hostIp: hostIp as string, host: Number(host), container: Number(container) };
  });
}

test('the stack is redis and two signer replicas', () => {
  assert.deepEqual(Object.keys(compose.services).sort(), ['redis', ...SIGNERS]);
});

test('each signer sets only variables of docs/CONTRACT.md, with secrets from .env', () => {
  for (const name of SIGNERS) {
    const env = service(name).environment as Obj;
    assert.ok(!Array.isArray(env), 'environment as a map');
    for (const variable of Object.keys(env)) {
      assert.ok(isContractEnvName(contract, variable), `${name}: ${variable} is not in docs/CONTRACT.md`);
    }
    assert.equal(env.KEY_ENCRYPTION_KEYS, '${KEY_ENCRYPTION_KEYS:?set KEY_ENCRYPTION_KEYS in .env (see .env.example)}');
    assert.match(env.API_TOKEN_SHA256, /^\$\{API_TOKEN_SHA256:\?/);
    assert.match(env.REDIS_URL, /^redis:\/\/:\$\{REDIS_PASSWORD:\?[^}]*\}@redis:6379\/\d+$/);
    assert.equal(service(name).env_file, undefined, 'secrets reach the signers by name, not as a whole env file');
  }
});

test('public ports are published once per replica, internal ports only on 127.0.0.1', () => {
  const hostPorts = new Set<number>();
  for (const name of SIGNERS) {
    const svc = service(name);
    const env = svc.environment as Obj;
    const publicPort = Number(env.PORT ?? contract.defaults.get('PORT'));
    const internalPort = Number(env.INTERNAL_PORT ?? contract.defaults.get('INTERNAL_PORT'));
    const mappings = portMappings(svc);
    assert.deepEqual(mappings.map((m) => m.container).sort(), [publicPort, internalPort].sort());
    for (const mapping of mappings) {
      assert.ok(!hostPorts.has(mapping.host), `host port ${mapping.host} published twice`);
      hostPorts.add(mapping.host);
      if (mapping.container === internalPort)
        assert.equal(mapping.hostIp, '127.0.0.1', `${name}: internal port bound to ${mapping.hostIp}`);
      else assert.equal(mapping.hostIp, '0.0.0.0');
    }
  }
  assert.equal(service('redis').ports, undefined, 'Redis is reachable on the compose network only');
});

test('signers run read-only, unprivileged, healthchecked, after a healthy Redis', () => {
  for (const name of SIGNERS) {
    const svc = service(name);
    assert.equal(svc.read_only, true);
    assert.deepEqual(svc.tmpfs, ['/tmp']);
    assert.deepEqual(svc.cap_drop, ['ALL']);
    assert.ok((svc.security_opt as string[]).includes('no-new-privileges:true'));
    assert.deepEqual(svc.depends_on, { redis: { condition: 'service_healthy' } });
    const check = svc.healthcheck.test as string[];
    assert.equal(check[0], 'CMD');
    assert.equal(check[1], 'node', 'the image has node, not curl or wget');
    assert.match(check.join(' '), new RegExp(`http://127\\.0\\.0\\.1:${svc.environment.PORT}/(readyz|healthz)`));
    assert.ok(svc.build && svc.image, `${name} builds the repository's Dockerfile`);
  }
});

test('Redis persists with AOF, requires the password, and is healthchecked with it', () => {
  const redis = service('redis');
  const command = (redis.command as string[]).join(' ');
  assert.match(command, /--appendonly yes/);
  assert.match(command, /--requirepass \$\{REDIS_PASSWORD:\?/);
  assert.ok(
    (redis.volumes as string[]).some((v) => v.endsWith(':/data')),
    'a volume holds /data',
  );
  assert.ok('redis-data' in compose.volumes);
  assert.match(redis.environment.REDISCLI_AUTH, /^\$\{REDIS_PASSWORD:\?/);
  assert.match((redis.healthcheck.test as string[]).join(' '), /redis-cli ping/);
});

test('.env.example defines every interpolated variable and commits no secret', () => {
  const variables = exampleVariables();
  for (const [, name] of composeText.matchAll(/\$\{([A-Z0-9_]+)/g)) {
    assert.ok(variables.has(name as string), `${name} is used by docker-compose.yml but not in .env.example`);
  }
  for (const secret of SECRETS) {
    assert.equal(variables.get(secret), '', `${secret} must be empty in .env.example`);
    assert.ok(
      envExample.includes(`${secret}=$(`) || envExample.includes(`echo "${secret}=`),
      `${secret}: the command to generate it`,
    );
  }
});

test("the service's own config loader accepts each signer's environment", () => {
  const env = generatedEnv();
  for (const name of SIGNERS) {
    const resolved = Object.fromEntries(
      Object.entries(service(name).environment as Obj).map(([variable, value]) => [variable, interpolate(String(value), env)]),
    );
    const config = loadConfig(resolved);
    assert.equal(config.redisUrl, `redis://:${env.REDIS_PASSWORD}@redis:6379/0`);
    assert.equal(config.devApiToken, undefined, 'both replicas accept the token from .env');
    assert.equal(config.host, '0.0.0.0');
  }
  assert.throws(() => interpolate(String(service('signer-1').environment.KEY_ENCRYPTION_KEYS), {}), /KEY_ENCRYPTION_KEYS/);
});

const dockerCompose = findTool('docker-compose');

test(
  'docker-compose config resolves the file with a generated .env',
  { skip: missingToolSkip('docker-compose', dockerCompose) },
  () => {
    const dir = mkdtempSync(join(tmpdir(), 'jwks-signer-compose-'));
    try {
      const env = generatedEnv();
      writeFileSync(
        join(dir, '.env'),
        Object.entries(env)
          .map(([k, v]) => `${k}=${v}\n`)
          .join(''),
      );
      const run = (envFile: string) =>
        spawnSync(dockerCompose as string, ['-f', join(repoRoot, 'docker-compose.yml'), '--env-file', envFile, 'config'], {
          encoding: 'utf8',
        });
      const result = run(join(dir, '.env'));
      assert.equal(result.status, 0, result.stderr);
      const resolved = parse(result.stdout) as Obj;
      for (const name of SIGNERS) {
        assert.equal(resolved.services[name].environment.KEY_ENCRYPTION_KEYS, env.KEY_ENCRYPTION_KEYS);
        assert.equal(resolved.services[name].depends_on.redis.condition, 'service_healthy');
      }
      assert.ok((resolved.services.redis.command as string[]).includes(env.REDIS_PASSWORD as string));
      const unfilled = run(join(repoRoot, '.env.example'));
      assert.notEqual(unfilled.status, 0, 'compose refuses to start with the empty secrets of .env.example');
      assert.match(unfilled.stderr, /set [A-Z_]+ in \.env/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
