import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { loadConfig } from '../../src/config.js';
import { findTool, isContractEnvName, missingToolSkip, readContractEnv, repoRoot } from './contract.js';

type Obj = Record<string, any>;

const helm = findTool('helm');
const skip = missingToolSkip('helm', helm);
const chart = join(repoRoot, 'helm/jwks-signer');
const ciValuesDir = join(repoRoot, 'helm/ci-values');
const release = 'rel';
const namespace = 'jwks';
const contract = readContractEnv();
const PUBLIC_PATHS = ['/.well-known/jwks.json', '/jwks/'];
const SCHEMA_ERROR = "values don't meet the specifications of the schema";

function runHelm(args: string[]) {
  return spawnSync(helm as string, args, { encoding: 'utf8' });
}

function renderChart(chartDir: string, args: string[] = []): Obj[] {
  const result = runHelm(['template', release, chartDir, '--namespace', namespace, ...args]);
  assert.equal(result.status, 0, `helm template ${args.join(' ')} failed:\n${result.stderr}`);
  return parseAllDocuments(result.stdout)
    .map((doc) => doc.toJS() as Obj | null)
    .filter((doc): doc is Obj => doc !== null);
}

function render(args: string[] = []): Obj[] {
  return renderChart(chart, args);
}

function isObj(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

// Helm's merge of a values file over values.yaml: maps merge, everything else replaces.
function mergeValues(base: Obj, override: Obj): Obj {
  const merged: Obj = { ...base };
  for (const [key, value] of Object.entries(override)) {
    merged[key] = isObj(value) && isObj(base[key]) ? mergeValues(base[key], value) : value;
  }
  return merged;
}

function valuesFor(file?: string): Obj {
  const defaults = parse(readFileSync(join(chart, 'values.yaml'), 'utf8')) as Obj;
  return file ? mergeValues(defaults, (parse(readFileSync(file, 'utf8')) ?? {}) as Obj) : defaults;
}

function tplRelease(value: string): string {
  return value.replaceAll('{{ .Release.Name }}', release);
}

function only(docs: Obj[], kind: string): Obj {
  const found = docs.filter((doc) => doc.kind === kind);
  assert.equal(found.length, 1, `expected one ${kind}, found ${found.length}`);
  return found[0] as Obj;
}

function ofKind(docs: Obj[], kind: string): Obj[] {
  return docs.filter((doc) => doc.kind === kind);
}

function container(deployment: Obj): Obj {
  const containers = deployment.spec.template.spec.containers as Obj[];
  assert.equal(containers.length, 1);
  return containers[0] as Obj;
}

function envOf(c: Obj): Map<string, Obj> {
  const env = new Map<string, Obj>();
  for (const entry of c.env as Obj[]) {
    assert.ok(!env.has(entry.name), `env ${entry.name} set twice`);
    env.set(entry.name, entry);
  }
  return env;
}

function envValue(env: Map<string, Obj>, name: string): string {
  const entry = env.get(name);
  assert.ok(entry, `env ${name} missing`);
  assert.equal(typeof entry.value, 'string', `env ${name} is not a plain value`);
  return entry.value as string;
}

function containerPort(c: Obj, port: string | number): number {
  if (typeof port === 'number') return port;
  const named = (c.ports as Obj[]).find((p) => p.name === port);
  assert.ok(named, `container has no port named ${port}`);
  return named.containerPort as number;
}

function matches(selector: Obj, labels: Obj): boolean {
  return Object.entries(selector).every(([key, value]) => labels[key] === value);
}

function serviceTargetPort(service: Obj, c: Obj): number {
  const ports = service.spec.ports as Obj[];
  assert.equal(ports.length, 1);
  return containerPort(c, (ports[0] as Obj).targetPort);
}

// Everything that must hold for any values: the rendered objects against the service's contract.
function assertDeployable(docs: Obj[], values: Obj): void {
  const deployment = only(docs, 'Deployment');
  const pod = deployment.spec.template;
  const podLabels = pod.metadata.labels as Obj;
  const c = container(deployment);
  const env = envOf(c);

  const publicPort = Number(envValue(env, 'PORT'));
  const internalPort = Number(envValue(env, 'INTERNAL_PORT'));
  assert.equal(publicPort, values.ports.public);
  assert.equal(internalPort, values.ports.internal);
  assert.equal(containerPort(c, 'http'), publicPort);
  assert.equal(containerPort(c, 'internal'), internalPort);

  assert.equal(c.livenessProbe.httpGet.path, '/healthz');
  assert.equal(c.readinessProbe.httpGet.path, '/readyz');
  assert.equal(c.startupProbe.httpGet.path, '/healthz');
  for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe]) {
    assert.equal(containerPort(c, probe.httpGet.port), publicPort);
  }

  const names = [...env.keys()];
  for (const [index, name] of names.entries()) {
    if (isContractEnvName(contract, name)) continue;
    const laterUse = names.slice(index + 1).some((other) => String(env.get(other)?.value ?? '').includes(`$(${name})`));
    assert.ok(laterUse, `env ${name} is neither in docs/CONTRACT.md nor expanded by a later variable`);
  }
  for (const [name, entry] of env) {
    for (const [, ref] of String(entry.value ?? '').matchAll(/\$\(([A-Z0-9_]+)\)/g)) {
      assert.ok(
        names.indexOf(ref as string) >= 0 && names.indexOf(ref as string) < names.indexOf(name),
        `${name} expands $(${ref}), which must be defined before it`,
      );
    }
  }

  const secrets = new Map(ofKind(docs, 'Secret').map((s) => [s.metadata.name as string, s]));
  const external = new Set([values.secrets.existingSecret, tplRelease(values.redis.existingSecret)].filter(Boolean));
  for (const [name, entry] of env) {
    const ref = entry.valueFrom?.secretKeyRef as Obj | undefined;
    if (!ref) continue;
    const secret = secrets.get(ref.name);
    if (secret) {
      assert.ok(
        ref.key in (secret.data ?? {}) || ref.key in (secret.stringData ?? {}),
        `${name} reads key ${ref.key}, missing from Secret ${ref.name}`,
      );
    } else {
      assert.ok(external.has(ref.name), `${name} reads Secret ${ref.name}, neither rendered nor configured`);
    }
  }
  assert.ok(env.get('KEY_ENCRYPTION_KEYS')?.valueFrom?.secretKeyRef, 'KEY_ENCRYPTION_KEYS comes from a Secret');
  for (const secret of secrets.values()) {
    assert.equal(secret.metadata.annotations?.['helm.sh/resource-policy'], 'keep');
  }

  const configMap = only(docs, 'ConfigMap');
  const volumes = new Map((pod.spec.volumes as Obj[]).map((v) => [v.name as string, v]));
  const mounts = new Map((c.volumeMounts as Obj[]).map((m) => [m.mountPath as string, m]));
  const readConfigFile = (variable: string): Obj => {
    const path = envValue(env, variable);
    const mount = mounts.get(posix.dirname(path));
    assert.ok(mount, `${variable}=${path}: its directory is not a mount`);
    assert.equal(mount.readOnly, true);
    assert.equal(volumes.get(mount.name)?.configMap?.name, configMap.metadata.name);
    const text = configMap.data[posix.basename(path)];
    assert.equal(typeof text, 'string', `${posix.basename(path)} missing from the ConfigMap`);
    return parse(text) as Obj;
  };
  const keySets = readConfigFile('KEY_SETS_FILE').keySets as Obj;
  assert.ok(envValue(env, 'DEFAULT_KEY_SET') in keySets, 'DEFAULT_KEY_SET names a key set of KEY_SETS_FILE');
  if (env.has('API_CLIENTS_FILE')) {
    const clients = readConfigFile('API_CLIENTS_FILE').clients as Obj[];
    assert.ok(clients.length > 0);
    for (const client of clients) {
      assert.ok(!('tokenSha256' in client), `client ${client.name}: token hash in the ConfigMap`);
      const hashEnv = `API_CLIENT_TOKEN_SHA256_${String(client.name)
        .toUpperCase()
        .replace(/[^A-Z0-9]/g, '_')}`;
      assert.ok(env.get(hashEnv)?.valueFrom?.secretKeyRef, `${hashEnv} from a Secret`);
    }
  } else {
    assert.ok(
      env.get('API_TOKEN_SHA256')?.valueFrom?.secretKeyRef,
      'without API clients, API_TOKEN_SHA256 must come from a Secret (else each replica makes its own dev token)',
    );
  }

  assert.match(pod.metadata.annotations['checksum/config'], /^[0-9a-f]{64}$/);
  assert.match(pod.metadata.annotations['checksum/secret'], /^[0-9a-f]{64}$/);

  const podSecurity = pod.spec.securityContext as Obj;
  const security = c.securityContext as Obj;
  assert.equal(security.runAsNonRoot ?? podSecurity.runAsNonRoot, true);
  assert.ok((security.runAsUser ?? podSecurity.runAsUser) > 0);
  assert.equal(security.readOnlyRootFilesystem, true);
  assert.equal(security.allowPrivilegeEscalation, false);
  assert.ok((security.capabilities.drop as string[]).includes('ALL'));
  assert.ok(volumes.get(mounts.get('/tmp')?.name)?.emptyDir, '/tmp is a writable emptyDir');
  assert.equal(pod.spec.automountServiceAccountToken, false);
  const spread = (pod.spec.topologySpreadConstraints ?? []) as Obj[];
  assert.ok(spread.length > 0 || pod.spec.affinity?.podAntiAffinity, 'replicas are spread');
  for (const constraint of spread) assert.ok(matches(constraint.labelSelector.matchLabels, podLabels));
  assert.ok(matches(deployment.spec.selector.matchLabels, podLabels));

  const services = ofKind(docs, 'Service');
  assert.equal(services.length, 2);
  const publicService = services.find((s) => s.metadata.labels['app.kubernetes.io/component'] === 'public') as Obj;
  const internalService = services.find((s) => s.metadata.labels['app.kubernetes.io/component'] === 'internal') as Obj;
  assert.ok(publicService && internalService);
  assert.equal(serviceTargetPort(publicService, c), publicPort);
  assert.equal(serviceTargetPort(internalService, c), internalPort);
  for (const service of services) assert.ok(matches(service.spec.selector, podLabels));

  const policy = only(docs, 'NetworkPolicy');
  assert.ok(matches(policy.spec.podSelector.matchLabels, podLabels));
  assert.ok((policy.spec.policyTypes as string[]).includes('Ingress'));
  const rules = policy.spec.ingress as Obj[];
  const admits = (rule: Obj, port: number, name: string) =>
    !rule.ports || (rule.ports as Obj[]).some((p) => p.port === port || p.port === name);
  const internalRules = rules.filter((rule) => admits(rule, internalPort, 'internal'));
  assert.ok(internalRules.length > 0, 'the NetworkPolicy names the internal port');
  for (const rule of internalRules) {
    assert.ok(Array.isArray(rule.from) && rule.from.length > 0, 'the internal port is admitted only from selected peers');
  }
  assert.deepEqual(
    internalRules.flatMap((rule) => rule.from),
    values.networkPolicy.internalFrom,
  );
  assert.ok(
    rules.some((rule) => admits(rule, publicPort, 'http')),
    'the public port is admitted',
  );

  for (const ingress of ofKind(docs, 'Ingress')) {
    const paths = (ingress.spec.rules as Obj[]).flatMap((rule) => rule.http.paths as Obj[]);
    assert.deepEqual([...new Set(paths.map((p) => p.path))].sort(), [...PUBLIC_PATHS].sort());
    for (const path of paths) {
      assert.equal(path.backend.service.name, publicService.metadata.name);
      assert.equal(path.backend.service.port.name, (publicService.spec.ports as Obj[])[0]?.name);
    }
  }

  const hpa = ofKind(docs, 'HorizontalPodAutoscaler')[0];
  if (values.autoscaling.enabled) {
    assert.ok(hpa);
    assert.equal(deployment.spec.replicas, undefined, 'the HPA owns the replica count');
    assert.equal(hpa.spec.scaleTargetRef.name, deployment.metadata.name);
    assert.equal(hpa.spec.minReplicas, values.autoscaling.minReplicas);
  } else {
    assert.equal(hpa, undefined);
    assert.equal(deployment.spec.replicas, values.replicaCount);
  }
  const pdb = only(docs, 'PodDisruptionBudget');
  assert.ok(matches(pdb.spec.selector.matchLabels, podLabels));
}

const cases: Array<[string, string | undefined]> = [
  ['defaults', undefined],
  ...readdirSync(ciValuesDir)
    .filter((file) => file.endsWith('.yaml'))
    .sort()
    .map((file): [string, string] => [file, join(ciValuesDir, file)]),
];

for (const [label, file] of cases) {
  test(`helm template (${label}) renders a deployable release`, { skip }, () => {
    assertDeployable(render(file ? ['-f', file] : []), valuesFor(file));
  });
}

// What a pod would see: plain values, $(VAR) expanded as the kubelet does, keys of rendered Secrets,
// stand-ins for keys of Secrets managed outside the chart, the ConfigMap's files under a temp dir.
function podEnvironment(docs: Obj[], configDir: string): Record<string, string> {
  const c = container(only(docs, 'Deployment'));
  const configMap = only(docs, 'ConfigMap');
  for (const [file, text] of Object.entries(configMap.data as Obj)) writeFileSync(join(configDir, file), text as string);
  const mountPath = (c.volumeMounts as Obj[]).find((m) => m.name === 'config')?.mountPath as string;
  const secrets = new Map(ofKind(docs, 'Secret').map((s) => [s.metadata.name as string, s]));
  const resolved: Record<string, string> = {};
  for (const [name, entry] of envOf(c)) {
    const ref = entry.valueFrom?.secretKeyRef as Obj | undefined;
    if (!ref) {
      const value = String(entry.value).replace(/\$\(([A-Z0-9_]+)\)/g, (whole, v: string) => resolved[v] ?? whole);
      resolved[name] = value.startsWith(`${mountPath}/`) ? join(configDir, value.slice(mountPath.length + 1)) : value;
      continue;
    }
    const secret = secrets.get(ref.name);
    if (secret) {
      resolved[name] = Buffer.from(secret.data[ref.key], 'base64').toString();
    } else if (!ref.optional) {
      resolved[name] =
        ref.key === 'KEY_ENCRYPTION_KEYS'
          ? `k1:${randomBytes(32).toString('base64')}`
          : name.includes('SHA256')
            ? randomBytes(32).toString('hex')
            : randomBytes(16).toString('hex');
    }
  }
  return resolved;
}

for (const [label, file] of cases) {
  test(`the service's own config loader accepts what the chart renders (${label})`, { skip }, () => {
    const configDir = mkdtempSync(join(tmpdir(), 'jwks-signer-config-'));
    try {
      const values = valuesFor(file);
      const config = loadConfig(podEnvironment(render(file ? ['-f', file] : []), configDir));
      assert.equal(config.port, values.ports.public);
      assert.equal(config.internalPort, values.ports.internal);
      assert.equal(config.host, '0.0.0.0', 'probes and Services reach the pod address');
      assert.ok(config.redisUrl, 'replicas share a Redis store');
      assert.equal(config.redis?.mode, label === 'sentinel.yaml' ? 'sentinel' : 'standalone');
      assert.equal(config.devApiToken, undefined, 'replicas share configured API credentials');
      assert.deepEqual([...config.keySets.keys()].sort(), Object.keys(values.keySets).sort());
      assert.equal(config.defaultKeySet, values.defaultKeySet);
      for (const client of values.clients as Obj[]) {
        assert.ok(
          config.clients.some((c) => c.name === client.name),
          `client ${client.name} loaded`,
        );
      }
    } finally {
      rmSync(configDir, { recursive: true, force: true });
    }
  });
}

test('defaults: two replicas, Redis password from the paired Redis release, no Ingress', { skip }, () => {
  const docs = render();
  assert.equal(only(docs, 'Deployment').spec.replicas, 2);
  assert.equal(ofKind(docs, 'Ingress').length, 0);
  const env = envOf(container(only(docs, 'Deployment')));
  assert.deepEqual(env.get('REDIS_PASSWORD')?.valueFrom?.secretKeyRef, { name: `${release}-redis`, key: 'redis-password' });
  assert.equal(envValue(env, 'REDIS_URL'), `redis://:$(REDIS_PASSWORD)@${release}-redis-master:6379/0`);
  const secret = only(docs, 'Secret');
  const kek = Buffer.from(secret.data.KEY_ENCRYPTION_KEYS, 'base64').toString();
  assert.match(kek, /^k1:[A-Za-z0-9+/]{43}=$/);
  assert.equal(Buffer.from(kek.slice(3), 'base64').length, 32);
  const token = Buffer.from(secret.data.API_TOKEN, 'base64').toString();
  assert.equal(Buffer.from(secret.data.API_TOKEN_SHA256, 'base64').toString(), createHash('sha256').update(token).digest('hex'));
});

test('ingress-on: routes only the public JWKS paths of each host, with TLS', { skip }, () => {
  const docs = render(['-f', join(ciValuesDir, 'ingress-on.yaml')]);
  const ingress = only(docs, 'Ingress');
  assert.deepEqual(
    (ingress.spec.rules as Obj[]).map((rule) => rule.host),
    ['jwks.example.com'],
  );
  const paths = (ingress.spec.rules[0].http.paths as Obj[]).map((p) => [p.path, p.pathType]);
  assert.deepEqual(paths, [
    ['/.well-known/jwks.json', 'Exact'],
    ['/jwks/', 'Prefix'],
  ]);
  assert.deepEqual(ingress.spec.tls[0].hosts, ['jwks.example.com']);
  const secret = only(docs, 'Secret');
  assert.deepEqual(Object.keys(secret.data).sort(), [
    'API_CLIENT_TOKEN_SHA256_BILLING_APP',
    'KEY_ENCRYPTION_KEYS',
    'REDIS_PASSWORD',
  ]);
  const env = envOf(container(only(docs, 'Deployment')));
  assert.equal(env.get('API_TOKEN_SHA256'), undefined);
  assert.equal(envValue(env, 'TRUST_PROXY'), '10.0.0.0/8');
  assert.equal(envValue(env, 'RATE_LIMIT_MAX'), '2400');
  assert.equal(envValue(env, 'AUDIT_FLUSH_INTERVAL'), '20ms');
});

test('hpa-on: an HPA instead of a replica count, a ServiceMonitor on the internal port', { skip }, () => {
  const docs = render(['-f', join(ciValuesDir, 'hpa-on.yaml')]);
  const hpa = only(docs, 'HorizontalPodAutoscaler');
  assert.equal(hpa.apiVersion, 'autoscaling/v2');
  assert.deepEqual([hpa.spec.minReplicas, hpa.spec.maxReplicas], [3, 10]);
  const monitor = only(docs, 'ServiceMonitor');
  const internal = ofKind(docs, 'Service').find((s) => s.metadata.name.endsWith('-internal')) as Obj;
  assert.ok(matches(monitor.spec.selector.matchLabels, internal.metadata.labels));
  assert.equal(monitor.spec.endpoints[0].port, internal.spec.ports[0].name);
  assert.deepEqual(monitor.spec.endpoints[0].bearerTokenSecret, { name: 'jwks-signer-metrics', key: 'token' });
});

test('existing-secret: no chart Secret; every secret value read from the named Secrets', { skip }, () => {
  const docs = render(['-f', join(ciValuesDir, 'existing-secret.yaml')]);
  assert.equal(ofKind(docs, 'Secret').length, 0);
  const env = envOf(container(only(docs, 'Deployment')));
  const refs = Object.fromEntries([...env].filter(([, e]) => e.valueFrom).map(([name, e]) => [name, e.valueFrom.secretKeyRef]));
  assert.deepEqual(refs, {
    REDIS_PASSWORD: { name: 'redis-credentials', key: 'password' },
    KEY_ENCRYPTION_KEYS: { name: 'jwks-signer-credentials', key: 'KEY_ENCRYPTION_KEYS' },
    API_TOKEN_SHA256: { name: 'jwks-signer-credentials', key: 'API_TOKEN_SHA256', optional: true },
    API_CLIENT_TOKEN_SHA256_BILLING_APP: { name: 'jwks-signer-credentials', key: 'API_CLIENT_TOKEN_SHA256_BILLING_APP' },
    API_CLIENT_TOKEN_SHA256_OPS_ADMIN: { name: 'jwks-signer-credentials', key: 'API_CLIENT_TOKEN_SHA256_OPS_ADMIN' },
  });
  assert.equal(envValue(env, 'REDIS_URL'), 'rediss://jwks:$(REDIS_PASSWORD)@redis.example.internal:6380/2');
});

test('sentinel: the URL passes through as given, sentinels and master as their own variables', { skip }, () => {
  const env = envOf(container(only(render(['-f', join(ciValuesDir, 'sentinel.yaml')]), 'Deployment')));
  assert.equal(envValue(env, 'REDIS_URL'), `redis+sentinel://:$(REDIS_PASSWORD)@${release}-redis:26379/mymaster/0`);
  assert.equal(
    envValue(env, 'REDIS_SENTINELS'),
    ['0', '1', '2'].map((n) => `${release}-redis-node-${n}.${release}-redis-headless:26379`).join(','),
  );
  assert.equal(envValue(env, 'REDIS_SENTINEL_MASTER'), 'mymaster');
});

test('a config or secret change rolls the pods (checksum annotations)', { skip }, () => {
  const annotations = (args: string[]) => only(render(args), 'Deployment').spec.template.metadata.annotations as Obj;
  const base = annotations([]);
  assert.deepEqual(annotations([]), base, 'checksums are stable across renders');
  const configChanged = annotations(['--set', 'keySets.default.rotationPeriod=7d']);
  assert.notEqual(configChanged['checksum/config'], base['checksum/config']);
  assert.equal(configChanged['checksum/secret'], base['checksum/secret']);
  const secretChanged = annotations(['--set', `secrets.apiTokenSha256=${'a'.repeat(64)}`]);
  assert.notEqual(secretChanged['checksum/secret'], base['checksum/secret']);
});

const invalidDir = join(ciValuesDir, 'invalid');
for (const file of readdirSync(invalidDir)
  .filter((f) => f.endsWith('.yaml'))
  .sort()) {
  test(`schema rejects invalid/${file}`, { skip }, () => {
    const path = join(invalidDir, file);
    const expected = /^# expect: (.+)$/m.exec(readFileSync(path, 'utf8'))?.[1];
    assert.ok(expected, `${file} needs a "# expect: <schema error>" line`);
    const result = runHelm(['template', release, chart, '-f', path]);
    assert.notEqual(result.status, 0, `${file} was accepted`);
    assert.ok(result.stderr.includes(SCHEMA_ERROR), result.stderr);
    assert.ok(result.stderr.includes(expected), `expected "${expected}" in:\n${result.stderr}`);
  });
}

test('values the schema cannot judge fail the render with a message', { skip }, () => {
  const failures: Array<[string[], string]> = [
    [['--set', 'ports.internal=8080'], 'ports.public and ports.internal must differ'],
    [['--set', 'redis.url='], 'without Redis each replica keeps its own keys'],
    [['--set', 'defaultKeySet=missing'], 'defaultKeySet "missing" is not a key of keySets'],
    [['--set', 'clients[0].name=app', '--set', 'clients[0].scopes[0]=sign'], 'secrets.clientTokenSha256.app is required'],
    [['--set', 'redis.url=redis://:pw@redis:6379'], 'redis.url already holds credentials'],
    [['--set', 'redis.sentinel.sentinels[0].host=s0'], 'redis.sentinel.masterName is required'],
  ];
  for (const [args, message] of failures) {
    const result = runHelm(['template', release, chart, ...args]);
    assert.notEqual(result.status, 0, `${args.join(' ')} was accepted`);
    assert.ok(result.stderr.includes(message), `expected "${message}" in:\n${result.stderr}`);
  }
  const single = render(['--set', 'redis.url=', '--set', 'replicaCount=1']);
  const env = envOf(container(only(single, 'Deployment')));
  assert.equal(env.has('REDIS_URL'), false, 'one replica may use the in-memory store');
  assert.equal(ofKind(single, 'PodDisruptionBudget').length, 0, 'no PDB that would block drains of a single pod');
});

test('NOTES.txt names the JWKS URL to register', { skip }, () => {
  const copy = mkdtempSync(join(tmpdir(), 'jwks-signer-chart-'));
  try {
    cpSync(chart, join(copy, 'jwks-signer'), { recursive: true });
    writeFileSync(
      join(copy, 'jwks-signer/templates/zz-notes.yaml'),
      [
        'apiVersion: v1',
        'kind: ConfigMap',
        'metadata:',
        '  name: rendered-notes',
        'data:',
        '  NOTES.txt: {{ include (print $.Template.BasePath "/NOTES.txt") . | quote }}',
        '',
      ].join('\n'),
    );
    const notes = (args: string[]) =>
      renderChart(join(copy, 'jwks-signer'), [...args, '--show-only', 'templates/zz-notes.yaml'])[0]?.data['NOTES.txt'] as string;
    const withIngress = notes(['-f', join(ciValuesDir, 'ingress-on.yaml')]);
    assert.match(withIngress, /https:\/\/jwks\.example\.com\/\.well-known\/jwks\.json/);
    assert.match(withIngress, /https:\/\/jwks\.example\.com\/jwks\/partners\.json/);
    assert.match(withIngress, /Add JSON Web Key Set URL/);
    const withoutIngress = notes([]);
    assert.match(withoutIngress, new RegExp(`http://${release}-jwks-signer\\.${namespace}\\.svc:80/\\.well-known/jwks\\.json`));
    assert.match(withoutIngress, /\.data\.API_TOKEN/);
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
});

test('every variable the chart sets from docs/CONTRACT.md is read by src/', { skip }, (t) => {
  const srcFiles = spawnSync('git', ['ls-files', '--cached', '--others', '--exclude-standard', 'src'], {
    cwd: repoRoot,
    encoding: 'utf8',
  })
    .stdout.split('\n')
    .filter((file) => file.endsWith('.ts'));
  if (srcFiles.length === 0) {
    t.skip('src/ has no TypeScript files yet');
    return;
  }
  const source = srcFiles.map((file) => readFileSync(join(repoRoot, file), 'utf8')).join('\n');
  const names = new Set<string>();
  for (const [, file] of cases) {
    for (const name of envOf(container(only(render(file ? ['-f', file] : []), 'Deployment'))).keys()) names.add(name);
  }
  for (const name of names) {
    if (!contract.names.has(name)) continue;
    assert.ok(source.includes(name), `the chart sets ${name}, which nothing in src/ reads`);
  }
  if ([...names].some((name) => name.startsWith('API_CLIENT_TOKEN_SHA256_'))) {
    assert.ok(source.includes('API_CLIENT_TOKEN_SHA256_'), 'src/ reads no API_CLIENT_TOKEN_SHA256_<NAME>');
  }
});

test('CI renders the values files of issue 3', () => {
  const files = cases.map(([label]) => label);
  for (const file of ['ingress-on.yaml', 'hpa-on.yaml', 'existing-secret.yaml', 'sentinel.yaml']) {
    assert.ok(files.includes(file), `helm/ci-values/${file} is missing`);
  }
});
