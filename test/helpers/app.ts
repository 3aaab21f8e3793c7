// Builds the app the way server.ts does, with a fake clock, captured logs and the given environment.
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { type App, buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';

export class FakeClock {
  constructor(public current = Date.now()) {}
  now(): number {
    return this.current;
  }
  advance(ms: number): void {
    this.current += ms;
  }
}

export const TEST_KEK = `test:${randomBytes(32).toString('base64')}`;

export interface TestApp {
  app: App;
  clock: FakeClock;
  logs: string[];
}

export function logCapture(): { stream: Writable; logs: string[] } {
  const logs: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      logs.push(...chunk.toString().split('\n').filter(Boolean));
      callback();
    },
  });
  return { stream, logs };
}

export async function buildTestApp(env: Record<string, string | undefined> = {}, options: { clock?: FakeClock } = {}): Promise<TestApp> {
  const clock = options.clock ?? new FakeClock();
  const { stream, logs } = logCapture();
  const config = loadConfig({
    HOST: '127.0.0.1',
    PORT: '0',
    INTERNAL_PORT: '0',
    LOG_LEVEL: 'info',
    STORE_POLL_INTERVAL: '60s',
    ...(env.REDIS_URL ? { KEY_ENCRYPTION_KEYS: TEST_KEK } : {}),
    ...env,
  });
  const app = await buildApp(config, { logStream: stream, clock });
  return { app, clock, logs };
}

export function bearer(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
}
