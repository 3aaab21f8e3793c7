// Prometheus metrics, served on the internal port. Labels carry names (key sets, clients, routes), never secrets.
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { Config } from './config.js';
import type { Clock, KeyManager } from './keys/key-manager.js';
import type { KeyStore } from './keys/key-store.js';

export interface Metrics {
  registry: Registry;
  /**
   * Counts one HTTP response (or `count`, as the public thread reports them in batches); the child per label
   * set is cached, so the JWKS path pays a map lookup.
   */
  request(port: 'public' | 'internal', route: string, status: number, count?: number): void;
  rateLimited(port: 'public' | 'internal', count?: number): void;
  signed(keySet: string, alg: string, client: string, kind: 'assertion' | 'jwt', seconds: number): void;
  keyEvents(keySet: string, events: string[]): void;
  /** One upstream token request of the broker (each retry counts). */
  tokenRequest(client: string, grant: string, outcome: string): void;
  /** A broker call served from the cache (`hit`), sent upstream (`miss`) or not cacheable (`bypass`). */
  tokenCache(result: 'hit' | 'miss' | 'bypass'): void;
  storeError(operation: string): void;
  /** Reads key ages and store state from these when scraped. */
  observe(keys: KeyManager, store: KeyStore, clock: Clock): void;
}

export function createMetrics(config: Config): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'jwks_signer_' });
  const requests = new Counter({ name: 'jwks_signer_http_requests_total', help: 'HTTP responses by port, route and status', labelNames: ['port', 'route', 'status'], registers: [registry] });
  const limited = new Counter({ name: 'jwks_signer_rate_limited_total', help: 'Requests refused by rate limiting', labelNames: ['port'], registers: [registry] });
  const signatures = new Counter({ name: 'jwks_signer_signatures_total', help: 'Tokens signed', labelNames: ['key_set', 'alg', 'client', 'kind'], registers: [registry] });
  const signingSeconds = new Histogram({
    name: 'jwks_signer_signing_duration_seconds',
    help: 'Time to build and sign one token',
    labelNames: ['alg'],
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [registry],
  });
  const keyChanges = new Counter({ name: 'jwks_signer_key_events_total', help: 'Key lifecycle events (created, activated, retired, revoked, deleted, imported)', labelNames: ['key_set', 'event'], registers: [registry] });
  const tokenRequests = new Counter({ name: 'jwks_signer_token_requests_total', help: 'Token requests the broker sent upstream, by outcome', labelNames: ['client', 'grant', 'outcome'], registers: [registry] });
  const tokenCacheResults = new Counter({ name: 'jwks_signer_token_cache_total', help: 'Broker calls by cache result (hit, miss, bypass)', labelNames: ['result'], registers: [registry] });
  const storeErrors = new Counter({ name: 'jwks_signer_store_errors_total', help: 'Failed key store operations', labelNames: ['operation'], registers: [registry] });
  let source: { keys: KeyManager; store: KeyStore; clock: Clock } | undefined;
  new Gauge({
    name: 'jwks_signer_store_up',
    help: '1 when the key store answers (always 1 for the in-memory store)',
    registers: [registry],
    collect() {
      if (source) this.set(source.store.state() === 'down' ? 0 : 1);
    },
  });
  new Gauge({
    name: 'jwks_signer_ready',
    help: '1 when every key set is loaded',
    registers: [registry],
    collect() {
      if (source) this.set(source.keys.isReady() ? 1 : 0);
    },
  });
  const perSet = (name: string, help: string, read: (set: string, now: number) => number | undefined) =>
    new Gauge({
      name,
      help,
      labelNames: ['key_set'],
      registers: [registry],
      collect() {
        if (!source) return;
        const now = source.clock.now();
        for (const set of config.keySets.keys()) {
          const value = read(set, now);
          if (value !== undefined) this.set({ key_set: set }, value);
        }
      },
    });
  perSet('jwks_signer_active_key_age_seconds', 'Time since the active key started signing', (set, now) => {
    const active = source!.keys.view(set)?.active;
    return active ? (now - (active.activatedAt ?? active.createdAt)) / 1000 : undefined;
  });
  perSet('jwks_signer_next_rotation_seconds', 'Time until the next rotation is due (negative: overdue)', (set, now) => {
    const view = source!.keys.view(set);
    if (!view) return undefined;
    const next = view.keys.find((k) => k.state === 'next');
    const activeSince = view.active.activatedAt ?? view.active.createdAt;
    return next ? (Math.max(activeSince + view.config.rotationPeriodMs, next.createdAt + view.config.prepublishPeriodMs) - now) / 1000 : undefined;
  });
  perSet('jwks_signer_published_keys', 'Keys in the published JWKS', (set) => source!.keys.view(set)?.jwks.keyCount);
  perSet('jwks_signer_key_set_generation', 'Generation of the key set as this replica knows it', (set) => source!.keys.view(set)?.generation);

  // port -> route -> status -> counter child: no key string is built per response.
  const children = { public: new Map<string, Map<number, { inc(n?: number): void }>>(), internal: new Map<string, Map<number, { inc(n?: number): void }>>() };
  const signedChildren = new Map<string, { count: { inc(): void }; seconds: { observe(value: number): void } }>();
  return {
    registry,
    request(port, route, status, count = 1) {
      let byStatus = children[port].get(route);
      if (!byStatus) {
        byStatus = new Map();
        children[port].set(route, byStatus);
      }
      let child = byStatus.get(status);
      if (!child) {
        child = requests.labels(port, route, String(status));
        byStatus.set(status, child);
      }
      child.inc(count);
    },
    rateLimited: (port, count = 1) => limited.inc({ port }, count),
    signed(keySet, alg, client, kind, seconds) {
      // Children cached per label set: prom-client hashes the labels object on every call otherwise.
      const key = `${keySet}\u0000${alg}\u0000${client}\u0000${kind}`;
      let child = signedChildren.get(key);
      if (!child) {
        child = { count: signatures.labels(keySet, alg, client, kind), seconds: signingSeconds.labels(alg) };
        signedChildren.set(key, child);
      }
      child.count.inc();
      child.seconds.observe(seconds);
    },
    keyEvents(keySet, events) {
      for (const event of events) keyChanges.inc({ key_set: keySet, event: event.split(' ').slice(0, -1).join('_') });
    },
    tokenRequest: (client, grant, outcome) => tokenRequests.inc({ client, grant, outcome }),
    tokenCache: (result) => tokenCacheResults.inc({ result }),
    storeError: (operation) => storeErrors.inc({ operation }),
    observe(keys, store, clock) {
      source = { keys, store, clock };
    },
  };
}
