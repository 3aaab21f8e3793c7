// pino options shared by both ports: request ids, and redaction of credentials and private key members.
import type { LoggerOptions } from 'pino';

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

// Exact paths only: no log call passes key records or JWKs (test/secrets.test.ts scans every line), and
// wildcard paths made each line ~3x as expensive to write. These guard the shapes a future call could pass.
export const REDACT_PATHS = [
  'req.headers.authorization',
  'headers.authorization',
  'authorization',
  'privateKey',
  ...PRIVATE_MEMBERS.flatMap((m) => [`jwk.${m}`, `key.${m}`]),
];

export function loggerOptions(level: string): LoggerOptions {
  return {
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: { service: 'jwks-signer' },
    timestamp: () => `,"time":"${new Date().toISOString()}"`,
  };
}
