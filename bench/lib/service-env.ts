// The environment the bench runs the service with: production settings and the runtime image's ENV lines.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));

/** The runtime image's `ENV NAME=value` lines (Dockerfile), so that the bench runs the service as production does. */
export const IMAGE_ENV: Record<string, string> = Object.fromEntries(
  [...(readFileSync(join(ROOT, 'Dockerfile'), 'utf8').split(/^FROM .* AS runtime$/m)[1] ?? '').matchAll(/^ENV ([A-Z_]+)=(\S+)$/gm)].map((m) => [m[1]!, m[2]!]),
);
export const IMAGE_ENV_TEXT = Object.entries(IMAGE_ENV)
  .map(([k, v]) => `${k}=${v}`)
  .join(' ');

/** Loopback ports, Redis, the key encryption key and the API token; `extra` last. */
export function serviceEnv(
  { port, internalPort, redisUrl, kek, apiToken }: { port: number; internalPort: number; redisUrl: string; kek: string; apiToken: string },
  extra: Record<string, string>,
): NodeJS.ProcessEnv {
  return {
    ...process.env,
    NODE_ENV: 'production',
    PORT: String(port),
    INTERNAL_PORT: String(internalPort),
    HOST: '127.0.0.1',
    LOG_LEVEL: 'info',
    REDIS_URL: redisUrl,
    KEY_ENCRYPTION_KEYS: kek,
    API_TOKEN_SHA256: createHash('sha256').update(apiToken).digest('hex'),
    // The limiter stays on (it counts every request) with a limit that one client address never reaches.
    RATE_LIMIT_MAX: '10000000',
    ...IMAGE_ENV,
    ...extra,
  };
}
