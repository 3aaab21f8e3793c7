// schemathesis (PyPI) against the OpenAPI document the service publishes: generated and mutated requests to
// every internal operation, with a valid token, must never get a 5xx.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { buildTestApp } from '../helpers/app.js';

const here = dirname(fileURLToPath(import.meta.url));
const st = join(here, '.venv', 'bin', 'st');

test('schemathesis: every internal operation, generated and mutated requests, never a 5xx', async (t) => {
  if (!existsSync(st)) {
    if (process.env.CI) assert.fail('schemathesis is missing: run bash .ci/fuzz-deps.sh');
    t.skip('schemathesis is not installed: run bash .ci/fuzz-deps.sh');
    return;
  }
  const { app } = await buildTestApp({ KEY_ALG: 'ES256', INTERNAL_BODY_LIMIT: '65536', LOG_LEVEL: 'warn' });
  t.after(() => app.close());
  const { internalUrl } = await app.listen();
  const child = spawn(
    st,
    ['run', `${internalUrl}/openapi.json`, '-H', `Authorization: Bearer ${app.config.devApiToken}`, '--checks', 'not_a_server_error', '--max-examples', '25', '--workers', '1', '--seed', '20261123', '--no-color'],
    { stdio: ['ignore', 'pipe', 'pipe'], cwd: tmpdir() },
  );
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 150_000);
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  clearTimeout(timer);
  const summary = /(\d+) generated, (\d+) passed/.exec(output);
  t.diagnostic(summary ? summary[0] : output.slice(-2000));
  assert.equal(code, 0, `schemathesis found failures:\n${output.slice(-6000)}`);
  assert.ok(summary && Number(summary[1]) >= 200, 'it generated a meaningful number of cases');
  assert.match(output, /Tested: 1\d/, 'every operation was tested');
  assert.equal(app.keys.view('default')!.keys.filter((k) => k.state === 'active').length, 1, 'the key set survived');
});
