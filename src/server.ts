// Entry point: read the configuration, build the app, listen on both ports, shut down gracefully.
import closeWithGrace from 'close-with-grace';
import { pino } from 'pino';
import { buildApp } from './app.js';
import { type Config, loadConfig } from './config.js';
import { ConfigError, KeyStoreIntegrityError } from './errors.js';
import { lowerThreadPoolPriority } from './keys/thread-pool-priority.js';
import { lowerOwnThread } from './lib/thread-priority.js';
import { loggerOptions } from './logger.js';

function banner(config: Config, publicUrl: string, internalUrl: string): string {
  const lines = [
    '',
    'jwks-signer is running',
    `  JWKS (public):      ${publicUrl.replace('0.0.0.0', 'localhost')}/.well-known/jwks.json`,
    `  signing API:        ${internalUrl.replace('0.0.0.0', 'localhost')}/v1/assertions`,
  ];
  if (!config.redisUrl) {
    lines.push(
      '',
      '  WARNING: in-memory key store (REDIS_URL is not set). Keys vanish on restart and cannot be',
      '  shared by replicas: every restart publishes new keys. Set REDIS_URL for anything but a trial.',
    );
  }
  if (config.devApiToken) {
    lines.push(
      '',
      '  Development API token (no API client is configured; a new token at every start):',
      `    ${config.devApiToken}`,
      `  curl -s -H "Authorization: Bearer ${config.devApiToken}" -H 'content-type: application/json' \\`,
      `    -d '{"client_id":"my-client","audience":"https://example.com/identity/connect/token"}' \\`,
      `    ${internalUrl.replace('0.0.0.0', 'localhost')}/v1/assertions`,
    );
  }
  return `${lines.join('\n')}\n\n`;
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`jwks-signer: configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logger = pino(loggerOptions(config.logLevel));
  for (const warning of config.warnings) logger.warn(warning);
  if (!config.redisUrl) logger.warn('in-memory key store: keys vanish on restart and are not shared by replicas; set REDIS_URL');
  // Before any worker thread starts (the public port's), so that only libuv's pool threads are busy then.
  if (config.signingNice > 0) {
    const pool = await lowerThreadPoolPriority(config.signingNice);
    if (pool.threads.length === pool.expected) {
      logger.info(
        { nice: config.signingNice, threads: pool.threads.length, policy: pool.batch === pool.threads.length ? 'SCHED_BATCH' : 'SCHED_OTHER' },
        'signing threads (libuv thread pool) run at a lower priority',
      );
    } else logger.warn({ nice: config.signingNice, found: pool.threads.length, expected: pool.expected }, 'could not lower the priority of the signing threads (libuv thread pool); they run at the process priority');
  }

  let app;
  try {
    app = await buildApp(config, {
      logger,
      onFatal: () => {
        logger.fatal('stopping: the stored keys cannot be read with KEY_ENCRYPTION_KEYS');
        process.exit(1);
      },
    });
  } catch (err) {
    if (err instanceof KeyStoreIntegrityError) {
      logger.fatal({ code: err.code, err: err.message }, 'refusing to start: the stored keys cannot be read; nothing was changed');
      process.exit(1);
    }
    throw err;
  }

  const started = app;
  closeWithGrace({ delay: config.shutdownTimeoutMs, logger }, async ({ signal, err }) => {
    if (err) logger.error({ err }, 'shutting down after an error');
    else logger.info({ signal }, 'shutting down');
    await started.close();
  });

  const { publicUrl, internalUrl } = await app.listen();
  // After listen(): the public port's thread has started, and keeps the process priority (a thread inherits its
  // creator's). Only done with that thread (config): otherwise the main thread serves the JWKS.
  if (config.apiThreadNice > 0) {
    const lowered = lowerOwnThread(config.apiThreadNice);
    if (lowered.nice === config.apiThreadNice && lowered.batch) logger.info({ nice: lowered.nice, policy: 'SCHED_BATCH' }, 'main thread (internal API) runs at a lower priority than the public port');
    else logger.warn({ nice: lowered.nice, wanted: config.apiThreadNice, batch: lowered.batch }, 'could not fully lower the priority of the main thread (internal API)');
  }
  logger.info({ publicUrl, internalUrl, store: app.store.kind, keySets: [...config.keySets.keys()] }, 'listening');
  process.stderr.write(banner(config, publicUrl, internalUrl));
}

main().catch((err: unknown) => {
  process.stderr.write(`jwks-signer: failed to start: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
