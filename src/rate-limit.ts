// Public rate limiting: fixed windows counted in memory, no store round trip per request. With Redis, the
// replicas reconcile their counts in batches (one pipeline per interval: an HINCRBY per active address), so
// a client's budget is shared by every replica, up to what it sends during one interval and 1% of the limit
// per replica (README: RATE_LIMIT_SHARED).
import type { FastifyRateLimitStore, FastifyRateLimitStoreCtor } from '@fastify/rate-limit';

/**
 * What reconciliation needs of a Redis connection: ioredis's Redis or Cluster, or, in the public thread, a
 * proxy to the main thread's connection (src/public-thread.ts).
 */
export interface ReconcileClient {
  readonly status: string;
  pipeline(): ReconcilePipeline;
}

export interface ReconcilePipeline {
  hincrby(key: string, field: string, increment: number): unknown;
  pexpire(key: string, milliseconds: number): unknown;
  exec(): Promise<Array<[Error | null, unknown]> | null>;
}

export interface WindowCounterOptions {
  max: number;
  windowMs: number;
  now: () => number;
  shared?: {
    client: ReconcileClient;
    /** Prefix of the per-window hash (one hash per window: one key, so one slot in a Cluster). */
    keyPrefix: string;
    intervalMs: number;
    /** Told once when reconciliation starts failing (then the replica counts alone until it recovers). */
    onError?: (err: Error) => void;
    onRecovered?: () => void;
  };
}

export interface WindowCounter {
  /** Counts one request of `key` and returns its count in the window; max + 1 (not counted) when refused. */
  hit(key: string): number;
  /** Milliseconds until the current window ends. */
  msLeft(): number;
  /**
   * Sends the counts not yet reconciled of addresses with at least `threshold` (default: 1% of the limit)
   * pending (a no-op without Redis); resolves when done or failed.
   */
  reconcile(threshold?: number): Promise<void>;
  close(): Promise<void>;
}

interface Entry {
  /** Every replica's count as last read from Redis (includes this replica's reconciled requests). */
  known: number;
  /** This replica's requests since its last reconciliation. */
  pending: number;
}

/** Addresses tracked per window; past this the oldest entry is dropped (its count restarts), as in an LRU. */
const MAX_TRACKED = 100_000;
/** Addresses per pipeline. */
const BATCH = 1000;
/**
 * An address is reported once this share of the limit is pending for it: clients far below their limit (the
 * common case: consumers polling the JWKS) cost Redis nothing, and each replica's unreported requests of one
 * address stay under 1% of the limit.
 */
const REPORT_SHARE = 0.01;

export function createWindowCounter({ max, windowMs, now, shared }: WindowCounterOptions): WindowCounter {
  let window = Math.floor(now() / windowMs);
  let entries = new Map<string, Entry>();
  let inFlight: Promise<void> | undefined;
  let failing = false;
  /** The window whose hash this replica has given an expiry (once per window, not per batch). */
  let expirySetFor: number | undefined;
  const reportAt = Math.max(1, Math.ceil(max * REPORT_SHARE));

  function currentEntries(): Map<string, Entry> {
    const w = Math.floor(now() / windowMs);
    if (w !== window) {
      // Counts of the window that ended are dropped, reconciled or not: the new window starts at zero.
      window = w;
      entries = new Map();
    }
    return entries;
  }

  async function send(client: ReconcileClient, keyPrefix: string, threshold: number): Promise<void> {
    const forWindow = window;
    const batch: Array<[string, Entry, number]> = [];
    for (const [key, entry] of entries) if (entry.pending >= threshold) batch.push([key, entry, entry.pending]);
    if (batch.length === 0) return;
    // One hash per window: one key, so one slot in a Cluster and a pipeline that any mode accepts.
    const redisKey = `${keyPrefix}${forWindow}`;
    try {
      for (let i = 0; i < batch.length; i += BATCH) {
        const part = batch.slice(i, i + BATCH);
        const pipeline = client.pipeline();
        for (const [key, , n] of part) pipeline.hincrby(redisKey, key, n);
        // Kept one window past its end, so that a replica whose clock lags a little still finds it.
        const setExpiry = expirySetFor !== forWindow;
        if (setExpiry) pipeline.pexpire(redisKey, windowMs * 2);
        const results = (await pipeline.exec()) ?? [];
        const failed = results.find(([err]) => err);
        if (failed) throw failed[0];
        if (setExpiry) expirySetFor = forWindow;
        part.forEach(([, entry, n], j) => {
          entry.pending -= n;
          entry.known = Math.max(entry.known, Number(results[j]![1]));
        });
      }
      if (failing) shared?.onRecovered?.();
      failing = false;
    } catch (err) {
      // The requests stay pending (counted locally) and are sent with the next batch.
      if (!failing) shared?.onError?.(err as Error);
      failing = true;
    }
  }

  function reconcile(threshold = reportAt): Promise<void> {
    if (!shared) return Promise.resolve();
    currentEntries();
    // One batch at a time; while Redis is not connected, the replica counts alone (no queue, no errors).
    if (inFlight || shared.client.status !== 'ready') return inFlight ?? Promise.resolve();
    inFlight = send(shared.client, shared.keyPrefix, threshold).finally(() => {
      inFlight = undefined;
    });
    return inFlight;
  }

  const timer = shared ? setInterval(() => void reconcile(), shared.intervalMs) : undefined;
  timer?.unref();

  return {
    hit(key) {
      const map = currentEntries();
      let entry = map.get(key);
      if (entry === undefined) {
        if (map.size >= MAX_TRACKED) map.delete(map.keys().next().value!);
        entry = { known: 0, pending: 0 };
        map.set(key, entry);
      }
      const count = entry.known + entry.pending;
      if (count >= max) return max + 1;
      entry.pending += 1;
      return count + 1;
    },
    msLeft() {
      return (window + 1) * windowMs - now();
    },
    reconcile,
    async close() {
      if (timer) clearInterval(timer);
      await inFlight;
      await reconcile(1);
    },
  };
}

/**
 * The counter as a @fastify/rate-limit store (its `store` option takes a class): it answers synchronously,
 * and every route shares the one budget per address, as the plugin's own stores do.
 */
export function rateLimitStore(counter: WindowCounter): FastifyRateLimitStoreCtor {
  return class WindowCounterStore implements FastifyRateLimitStore {
    incr(key: string, callback: Parameters<FastifyRateLimitStore['incr']>[1]): void {
      callback(null, { current: counter.hit(key), ttl: counter.msLeft() });
    }
    child(): FastifyRateLimitStore {
      return this;
    }
  };
}
