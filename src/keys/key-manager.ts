// The key manager: each replica's view of every key set, kept in step with the store, and the only code that
// changes key sets (under the set's lock, as one compare-and-swap on its generation).
import type { KeyObject } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { Config, KeySetConfig } from '../config.js';
import { Errors, KeyStoreIntegrityError, ServiceError } from '../errors.js';
import { associatedData, type KeyEncryption } from './key-encryption.js';
import { createKeyRecord, openPrivateKey, sealKeyPair } from './key-generation.js';
import { type KeyStore, StoreUnavailableError } from './key-store.js';
import { type RenderedJwks, renderJwks } from './jwks.js';
import { type LifecycleAction, nextDueAt, transition } from './lifecycle.js';
import type { KeyRecord, StoredKeySet } from './types.js';

export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

export interface KeySetView {
  config: KeySetConfig;
  generation: number;
  updatedAt: number;
  keys: KeyRecord[];
  active: KeyRecord;
  jwks: RenderedJwks;
  dueAt: number;
}

export interface SigningKey {
  record: KeyRecord;
  key: KeyObject;
}

export interface ChangeResult {
  changed: boolean;
  events: string[];
  view: KeySetView;
}

export interface KeyManager {
  start(): Promise<void>;
  isReady(): boolean;
  view(set: string): KeySetView | undefined;
  signingKey(set: string): Promise<SigningKey>;
  rotate(set: string, options: { force: boolean; ifActiveKid?: string }): Promise<ChangeResult>;
  revoke(set: string, kid: string): Promise<ChangeResult>;
  /** Adds an operator's existing key pair to a set, as its active key (the old one retires) or its next key. */
  importKey(set: string, keys: { privateKey: KeyObject; publicKey: KeyObject; certificate?: Buffer }, state: 'active' | 'next'): Promise<ChangeResult & { kid: string }>;
  /**
   * Re-encrypts every stored private key that is not under the first key-encryption key, set by set, each as
   * one atomic change. Afterwards the other key-encryption keys can be removed from KEY_ENCRYPTION_KEYS.
   */
  reencrypt(): Promise<Array<{ keySet: string; reencrypted: number }>>;
  /** One maintenance pass over every set: pick up changes, run due transitions. Timers call it; tests may too. */
  tick(): Promise<void>;
  refresh(set: string): Promise<void>;
  close(): Promise<void>;
}

export interface KeyManagerOptions {
  config: Config;
  store: KeyStore;
  encryption: KeyEncryption;
  logger: Logger;
  clock?: Clock;
  /** Called when the stored keys turn out to be unreadable after start-up (wrong KEY_ENCRYPTION_KEYS). */
  onFatal?: (err: Error) => void;
  /** Told of every committed change (for metrics). */
  onEvents?: (set: string, events: string[]) => void;
  onStoreError?: (operation: string) => void;
  /** Told each time a set's view is replaced (the public port serves the JWKS from these). */
  onViewChange?: (set: string, view: KeySetView) => void;
}

/** How long an admin change waits for another replica's lock; past the lock's expiry, a dead holder is gone. */
const adminLockWaitMs = (config: Config) => config.rotationLockTtlMs + 5_000;
const MIN_TIMER_MS = 50;
const STARTUP_STORE_WAIT_MS = 3000;
/** How often a replica that has not loaded every key set (store down at start-up) tries again. */
const NOT_READY_RETRY_MS = 1000;

export function createKeyManager({ config, store, encryption, logger, clock = systemClock, onFatal, onEvents, onStoreError, onViewChange }: KeyManagerOptions): KeyManager {
  const views = new Map<string, KeySetView>();
  /** The highest generation seen per set, kept even when the store loses it (see restore in `change`). */
  const lastGeneration = new Map<string, number>();
  const signingKeys = new LRUCache<string, KeyObject>({ max: Math.max(64, config.keySets.size * 4) });
  /** Kids of active and next keys already decrypted once by this replica. */
  const readable = new Set<string>();
  const chains = new Map<string, Promise<unknown>>();
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let storeWasDown = false;
  /** When this replica first saw the store down, by its clock; undefined while the store answers. */
  let storeDownSince: number | undefined;

  function trackStoreState(): void {
    if (store.state() === 'down') storeDownSince ??= clock.now();
    else storeDownSince = undefined;
  }

  function serial<T>(set: string, work: () => Promise<T>): Promise<T> {
    const previous = chains.get(set) ?? Promise.resolve();
    const run = previous.then(work, work);
    chains.set(set, run.catch(() => undefined));
    return run;
  }

  function setConfig(set: string): KeySetConfig {
    const cfg = config.keySets.get(set);
    if (!cfg) throw Errors.unknownKeySet(`key set "${set}" is not configured`);
    return cfg;
  }

  // Checks that the keys that sign now or next can be decrypted (AES-GCM authenticates the set, kid and bytes), so
  // that a wrong KEY_ENCRYPTION_KEYS or an altered value stops start-up. They are not parsed here: parsing 2,000
  // RSA keys doubled the start-up time of 1,000 sets and left native memory behind; signingKey parses a key and
  // checks that it matches its kid when it first signs (a mismatch is then refused with no_active_key).
  async function verifyReadable(stored: StoredKeySet): Promise<void> {
    for (const record of stored.keys) {
      if (record.state !== 'active' && record.state !== 'next') continue;
      if (readable.has(record.kid) || signingKeys.has(record.kid)) continue;
      if (!record.privateKey) throw new KeyStoreIntegrityError('no_private_key', `key ${record.kid} has no private key`);
      encryption.decrypt(associatedData(record.set, record.kid), record.privateKey).fill(0);
      readable.add(record.kid);
    }
  }

  function apply(cfg: KeySetConfig, stored: StoredKeySet): KeySetView | undefined {
    const active = stored.keys.find((k) => k.state === 'active');
    if (!active) return undefined;
    const current = views.get(cfg.name);
    if (current && current.generation > stored.generation && stored.generation !== 0) return current;
    const view: KeySetView = {
      config: cfg,
      generation: stored.generation,
      updatedAt: stored.updatedAt,
      keys: stored.keys,
      active,
      jwks: renderJwks(stored.keys, stored.updatedAt, cfg.publishX5c),
      dueAt: nextDueAt(stored.keys, cfg),
    };
    views.set(cfg.name, view);
    onViewChange?.(cfg.name, view);
    lastGeneration.set(cfg.name, Math.max(lastGeneration.get(cfg.name) ?? 0, stored.generation));
    for (const record of stored.keys) {
      if (record.state === 'active' || record.state === 'next') continue;
      signingKeys.delete(record.kid);
      readable.delete(record.kid);
    }
    return view;
  }

  async function withLock<T>(set: string, waitMs: number, work: () => Promise<T>): Promise<T | undefined> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const token = await store.lock(set, config.rotationLockTtlMs);
      if (token) {
        try {
          return await work();
        } finally {
          await store.unlock(set, token).catch((err: Error) => logger.warn({ keySet: set, err: err.message }, 'unlock failed; the lock expires by itself'));
        }
      }
      if (Date.now() >= deadline) return undefined;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** Loads the set, applies `action`, and commits the result if it changed. Runs under the set's lock. */
  async function change(set: string, action: LifecycleAction, waitMs: number): Promise<ChangeResult | undefined> {
    const cfg = setConfig(set);
    return withLock(set, waitMs, async () => {
      let stored = await store.load(set);
      const known = lastGeneration.get(set) ?? 0;
      const local = views.get(set);
      if (stored.generation === 0 && stored.keys.length === 0 && known > 0 && local) {
        // The store lost this set (flushed, or restarted without persistence) while this replica still
        // publishes it. Minting new keys would unpublish keys that tokens and consumers rely on, so the
        // last known set is written back, still encrypted as it was, under a higher generation.
        const restored: StoredKeySet = { generation: known + 1, updatedAt: local.updatedAt, keys: local.keys };
        if (await store.commit(set, 0, restored)) {
          logger.warn({ keySet: set, generation: restored.generation }, 'store had lost the key set; restored the last known keys');
          onEvents?.(set, ['restored set']);
          await store.publish(set, restored.generation).catch(() => undefined);
          stored = restored;
        } else {
          stored = await store.load(set);
        }
      }
      await verifyReadable(stored);
      const now = clock.now();
      const result = await transition(stored.keys, cfg, now, action, async (state) => {
        const { record, privateKey } = await createKeyRecord(cfg, state, now, encryption);
        signingKeys.set(record.kid, privateKey);
        return record;
      });
      if (!result.changed) {
        const view = apply(cfg, stored);
        if (!view) throw Errors.noActiveKey(`key set ${set} has no active key`);
        return { changed: false, events: [], view };
      }
      const next: StoredKeySet = { generation: Math.max(stored.generation, known) + 1, updatedAt: now, keys: result.keys };
      if (!(await store.commit(set, stored.generation, next))) {
        throw new StoreUnavailableError(`key set ${set} changed during the update (lock expired?); retry`);
      }
      const view = apply(cfg, next)!;
      if (onEvents) onEvents(set, result.events);
      else logger.info({ audit: 'key_lifecycle', keySet: set, generation: next.generation, events: result.events }, 'key set changed');
      await store.publish(set, next.generation).catch((err: Error) => logger.warn({ keySet: set, err: err.message }, 'publish failed; replicas poll'));
      return { changed: true, events: result.events, view };
    });
  }

  async function refresh(set: string): Promise<void> {
    const cfg = setConfig(set);
    await serial(set, async () => {
      const stored = await store.load(set);
      if (stored.keys.length === 0 || !stored.keys.some((k) => k.state === 'active')) {
        await change(set, { type: 'maintain' }, 0);
        return;
      }
      if (views.get(set)?.generation === stored.generation && stored.generation !== 0) return;
      await verifyReadable(stored);
      apply(cfg, stored);
    });
  }

  function handleError(set: string, err: unknown): void {
    if (err instanceof KeyStoreIntegrityError) {
      logger.fatal({ keySet: set, code: err.code, err: err.message }, 'stored keys are unreadable');
      onFatal?.(err);
      return;
    }
    if (err instanceof StoreUnavailableError) {
      onStoreError?.('maintenance');
      if (!storeWasDown) logger.warn({ keySet: set, err: err.message }, 'key store unavailable; serving the last known keys');
      storeWasDown = true;
      return;
    }
    logger.error({ keySet: set, err }, 'key maintenance failed; will retry');
  }

  async function maintainSet(set: string): Promise<void> {
    const view = views.get(set);
    const generation = await store.generation(set);
    if (!view || generation !== view.generation) await refresh(set);
    const current = views.get(set);
    if (!current || current.dueAt <= clock.now()) {
      await serial(set, () => change(set, { type: 'maintain' }, 0));
    }
  }

  async function tick(): Promise<void> {
    await Promise.all(
      [...config.keySets.keys()].map((set) =>
        maintainSet(set).then(
          () => undefined,
          (err) => handleError(set, err),
        ),
      ),
    );
    trackStoreState();
    if (storeWasDown && store.state() !== 'down') {
      storeWasDown = false;
      logger.info('key store available again');
    }
  }

  function schedule(): void {
    if (closed) return;
    const now = clock.now();
    let wait = views.size < config.keySets.size ? Math.min(NOT_READY_RETRY_MS, config.storePollIntervalMs) : config.storePollIntervalMs;
    for (const view of views.values()) wait = Math.min(wait, view.dueAt - now);
    timer = setTimeout(() => {
      tick().finally(schedule);
    }, Math.max(MIN_TIMER_MS, wait));
    timer.unref();
  }

  store.onChange((set, generation) => {
    if (!config.keySets.has(set)) return;
    if ((views.get(set)?.generation ?? -1) >= generation) return;
    refresh(set).catch((err) => handleError(set, err));
  });

  async function adminChange(set: string, action: LifecycleAction): Promise<ChangeResult> {
    setConfig(set);
    try {
      const result = await serial(set, () => change(set, action, adminLockWaitMs(config)));
      if (!result) throw Errors.rotationInProgress(`key set ${set} is locked by another replica; retry shortly`);
      return result;
    } catch (err) {
      if (err instanceof StoreUnavailableError) {
        onStoreError?.('admin');
        throw Errors.storeUnavailable(err.message);
      }
      throw err;
    }
  }

  return {
    async start() {
      await store.waitUntilAvailable(STARTUP_STORE_WAIT_MS);
      for (const set of config.keySets.keys()) {
        try {
          await serial(set, () => change(set, { type: 'maintain' }, config.rotationLockTtlMs));
        } catch (err) {
          if (err instanceof KeyStoreIntegrityError) throw err;
          if (!(err instanceof StoreUnavailableError)) throw err;
          handleError(set, err);
        }
      }
      schedule();
    },
    isReady: () => [...config.keySets.keys()].every((set) => views.has(set)),
    view: (set) => views.get(set),
    async signingKey(set) {
      setConfig(set);
      trackStoreState();
      // A replica cut off from the store cannot learn of a revocation made elsewhere: past the limit it stops
      // signing rather than go on with a key that may have been revoked.
      if (storeDownSince !== undefined && config.signWhileStoreDownMs > 0 && clock.now() - storeDownSince > config.signWhileStoreDownMs) {
        throw Errors.storeUnavailable(`the key store has been unreachable for longer than SIGN_WHILE_STORE_DOWN (${Math.round(config.signWhileStoreDownMs / 1000)}s); signing resumes when it answers`);
      }
      const view = views.get(set);
      if (!view) throw Errors.noActiveKey(`key set ${set} is not loaded yet`);
      const cached = signingKeys.get(view.active.kid);
      if (cached) return { record: view.active, key: cached };
      try {
        const key = await openPrivateKey(view.active, encryption);
        signingKeys.set(view.active.kid, key);
        return { record: view.active, key };
      } catch (err) {
        if (err instanceof ServiceError) throw err;
        logger.error({ keySet: set, kid: view.active.kid, err: (err as Error).message }, 'cannot open the active key');
        throw Errors.noActiveKey(`the active key of ${set} cannot be opened`);
      }
    },
    async reencrypt() {
      const results: Array<{ keySet: string; reencrypted: number }> = [];
      for (const set of config.keySets.keys()) {
        const cfg = setConfig(set);
        const count = await serial(set, async () => {
          const done = await withLock(set, adminLockWaitMs(config), async () => {
            const stored = await store.load(set);
            let changed = 0;
            const keys = stored.keys.map((record) => {
              if (!record.privateKey || record.privateKey.kek === encryption.currentKeyId) return record;
              const aad = associatedData(set, record.kid);
              const der = encryption.decrypt(aad, record.privateKey);
              const privateKey = encryption.encrypt(aad, der);
              der.fill(0);
              changed += 1;
              return { ...record, privateKey };
            });
            if (changed === 0) return 0;
            const next: StoredKeySet = { generation: Math.max(stored.generation, lastGeneration.get(set) ?? 0) + 1, updatedAt: stored.updatedAt, keys };
            if (!(await store.commit(set, stored.generation, next))) throw new StoreUnavailableError(`key set ${set} changed during re-encryption; retry`);
            apply(cfg, next);
            await store.publish(set, next.generation).catch(() => undefined);
            logger.info({ audit: 'key_reencrypt', keySet: set, reencrypted: changed, kek: encryption.currentKeyId }, 'keys re-encrypted');
            return changed;
          });
          if (done === undefined) throw Errors.rotationInProgress(`key set ${set} is locked by another replica; retry shortly`);
          return done;
        }).catch((err: unknown) => {
          if (err instanceof StoreUnavailableError) throw Errors.storeUnavailable(err.message);
          throw err;
        });
        results.push({ keySet: set, reencrypted: count });
      }
      return results;
    },
    rotate: (set, options) => adminChange(set, { type: 'rotate', ...options }),
    revoke: (set, kid) => adminChange(set, { type: 'revoke', kid }),
    async importKey(set, keys, state) {
      const record = await sealKeyPair(setConfig(set), state, clock.now(), encryption, keys);
      const result = await adminChange(set, { type: 'import', record });
      signingKeys.set(record.kid, keys.privateKey);
      return { ...result, kid: record.kid };
    },
    tick,
    refresh,
    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      await Promise.allSettled([...chains.values()]);
    },
  };
}
