import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readContractEnv, repoRoot } from './contract.js';

interface Instruction {
  op: string;
  args: string;
}

interface Stage {
  base: string;
  name: string | undefined;
  instructions: Instruction[];
}

const dockerfile = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8');
const contract = readContractEnv();

function parseDockerfile(text: string): { args: Map<string, string>; stages: Stage[] } {
  const lines = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'));
  const args = new Map<string, string>();
  const stages: Stage[] = [];
  for (const line of lines) {
    const [op = '', ...rest] = line.split(/\s+/);
    const instruction = { op: op.toUpperCase(), args: rest.join(' ') };
    if (instruction.op === 'FROM') {
      const [base = '', as, name] = rest;
      const resolved = base.replace(/\$\{?([A-Z_]+)\}?/g, (_, arg: string) => args.get(arg) ?? '');
      stages.push({ base: resolved, name: as?.toUpperCase() === 'AS' ? name : undefined, instructions: [] });
    } else if (stages.length === 0 && instruction.op === 'ARG') {
      const [name = '', value = ''] = instruction.args.split('=');
      args.set(name, value);
    } else {
      stages.at(-1)?.instructions.push(instruction);
    }
  }
  return { args, stages };
}

const { stages } = parseDockerfile(dockerfile);
const runtime = stages.at(-1) as Stage;

function ops(stage: Stage, op: string): string[] {
  return stage.instructions.filter((i) => i.op === op).map((i) => i.args);
}

function execForm(args: string): string[] {
  const json = args.replace(/^(--\S+\s+)*(CMD\s+)?/, '');
  const parsed = JSON.parse(json) as unknown;
  assert.ok(Array.isArray(parsed), `${args} is not in exec form`);
  return parsed as string[];
}

// .dockerignore semantics: the last matching pattern wins; a pattern matching a folder covers its files.
function ignored(path: string): boolean {
  const patterns = readFileSync(join(repoRoot, '.dockerignore'), 'utf8')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'));
  const prefixes = path.split('/').map((_, i, parts) => parts.slice(0, i + 1).join('/'));
  let result = false;
  for (const raw of patterns) {
    const negated = raw.startsWith('!');
    const pattern = (negated ? raw.slice(1) : raw).replace(/^\/|\/$/g, '');
    const regex = new RegExp(
      `^${pattern
        .replace(/[.+^${}()|[\]\\]/g, '\\$&')
        .replace(/\*\*/g, '\u0000')
        .replace(/\*/g, '[^/]*')
        .replace(/\?/g, '[^/]')
        .replace(/\u0000/g, '.*')}$`,
    );
    if (prefixes.some((prefix) => regex.test(prefix))) result = !negated;
  }
  return result;
}

test('multi-stage build on a current Node LTS', () => {
  assert.ok(stages.length >= 2);
  for (const stage of stages) assert.match(stage.base, /^node:(22|24)[.-]/, `base ${stage.base}`);
  const names = stages.map((s) => s.name);
  assert.ok(names.includes('build'));
  assert.ok(ops(stages.find((s) => s.name === 'build') as Stage, 'RUN').includes('npm run build'));
});

test('the runtime stage holds production dependencies and compiled JS only', () => {
  const copies = ops(runtime, 'COPY');
  assert.equal(ops(runtime, 'RUN').length, 0, 'nothing runs in the runtime stage as root');
  const fromStages = copies.map((c) => /--from=(\S+)/.exec(c)?.[1]).filter(Boolean) as string[];
  for (const from of fromStages) {
    const stage = stages.find((s) => s.name === from);
    assert.ok(stage, `COPY --from=${from}: no such stage`);
    if (copies.some((c) => c.includes(`--from=${from}`) && c.includes('node_modules'))) {
      assert.ok(ops(stage, 'RUN').includes('npm ci --omit=dev'), `${from} installs production dependencies only`);
    }
  }
  assert.ok(
    copies.some((c) => /--from=build\s+\/app\/dist\s/.test(c)),
    'dist/ comes from the build stage',
  );
  assert.ok(
    copies.every((c) => !/\bsrc\b|\btest\b|tsconfig/.test(c)),
    'no sources in the runtime stage',
  );
  assert.ok(ops(runtime, 'ENV').some((e) => /NODE_ENV=production/.test(e)));
  // bench/run.ts reads this line to run the service as the image does; the RSS target depends on it.
  assert.ok(ops(runtime, 'ENV').some((e) => /^NODE_OPTIONS=--max-semi-space-size=\d+$/.test(e)));
  assert.ok(ops(runtime, 'ENV').some((e) => /^MALLOC_ARENA_MAX=\d+$/.test(e)));
});

test('runs as a non-root numeric user, exposes both ports, starts node directly', () => {
  const [user] = ops(runtime, 'USER');
  assert.match(user ?? '', /^[1-9]\d*(:\d+)?$/, 'numeric non-root user (Kubernetes runAsNonRoot can verify it)');
  const exposed = ops(runtime, 'EXPOSE').join(' ').split(/\s+/).map(Number);
  assert.deepEqual(
    exposed.sort(),
    [Number(contract.defaults.get('PORT')), Number(contract.defaults.get('INTERNAL_PORT'))].sort(),
  );
  const start = /Start command \(compiled\): `([^`]+)`/.exec(readFileSync(join(repoRoot, 'docs/CONTRACT.md'), 'utf8'))?.[1];
  assert.deepEqual(execForm(ops(runtime, 'CMD')[0] as string), start?.split(' '), 'CMD in exec form: SIGTERM reaches node');
  assert.equal(ops(runtime, 'ENTRYPOINT').length, 0);
});

test('the HEALTHCHECK uses node itself and honours PORT', () => {
  const [healthcheck] = ops(runtime, 'HEALTHCHECK');
  assert.ok(healthcheck);
  const command = execForm(healthcheck);
  assert.equal(command[0], 'node');
  assert.match(command.join(' '), /process\.env\.PORT/);
  assert.match(command.join(' '), /\/(readyz|healthz)/);
});

test('.dockerignore keeps tests, .git and local state out, and lets the build inputs in', () => {
  for (const path of [
    'test/deploy/helm.test.ts',
    '.git/HEAD',
    '.env',
    'node_modules/yaml/package.json',
    'dist/server.js',
    'helm/jwks-signer/Chart.yaml',
    'coverage/x',
  ]) {
    assert.ok(ignored(path), `${path} reaches the build context`);
  }
  const inputs = stages
    .flatMap((stage) => ops(stage, 'COPY'))
    .filter((c) => !c.includes('--from'))
    .flatMap((c) => c.split(/\s+/).slice(0, -1));
  assert.ok(inputs.length > 0);
  for (const input of inputs) assert.ok(!ignored(input.replace(/\/$/, '')), `${input} is copied but ignored`);
  assert.ok(!ignored('src/server.ts'));
});
