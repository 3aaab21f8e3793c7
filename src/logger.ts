// pino options shared by both ports: request ids, and redaction of credentials and private key members.
import type { LoggerOptions } from 'pino';

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

export const REDACT_PATHS = [
  'req.headers.authorization',
  'headers.authorization',
  'authorization',
  'privateKey',
  '*.privateKey',
  ...PRIVATE_MEMBERS.flatMap((m) => [`jwk.${m}`, `*.jwk.${m}`, `key.${m}`]),
];

export function loggerOptions(level: string): LoggerOptions {
  return {
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: { service: 'jwks-signer' },
    timestamp: () => `,"time":"${new Date().toISOString()}"`,
  };
}
