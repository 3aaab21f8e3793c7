// Liveness and readiness, on both ports: /healthz while the process runs, /readyz once every key set is loaded.
import type { FastifyInstance } from 'fastify';
import type { KeyManager } from '../keys/key-manager.js';
import type { KeyStore } from '../keys/key-store.js';

export function healthRoutes(keys: KeyManager, store: KeyStore) {
  return async function register(app: FastifyInstance): Promise<void> {
    app.get('/healthz', { config: { rateLimit: false } }, async () => ({ status: 'ok' }));
    app.get('/readyz', { config: { rateLimit: false } }, async (_request, reply) => {
      const ready = keys.isReady();
      const storeState = store.state();
      reply.code(ready ? 200 : 503).header('cache-control', 'no-store');
      return {
        status: ready ? (storeState === 'down' ? 'degraded' : 'ready') : 'not_ready',
        store: storeState,
      };
    });
  };
}
