// Liveness and readiness, on both ports: /healthz while the process runs, /readyz once every key set is loaded.
import type { FastifyInstance } from 'fastify';
import type { StoreState } from '../keys/key-store.js';

export interface HealthSource {
  isReady(): boolean;
  storeState(): StoreState;
}

export function healthRoutes(source: HealthSource) {
  return async function register(app: FastifyInstance): Promise<void> {
    app.get('/healthz', { config: { rateLimit: false } }, async () => ({ status: 'ok' }));
    app.get('/readyz', { config: { rateLimit: false } }, async (_request, reply) => {
      const ready = source.isReady();
      const storeState = source.storeState();
      reply.code(ready ? 200 : 503).header('cache-control', 'no-store');
      return {
        status: ready ? (storeState === 'down' ? 'degraded' : 'ready') : 'not_ready',
        store: storeState,
      };
    });
  };
}
