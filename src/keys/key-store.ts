// Storage of key sets behind one small interface: an in-memory store and a Redis store.
import { EventEmitter } from 'node:events';
import type { StoredKeySet } from './types.js';

export type StoreState = 'memory' | 'up' | 'down';

export interface KeyStore {
  readonly kind: 'memory' | 'redis';
  /** The stored set, or generation 0 with no keys when the set was never written. */
  load(set: string): Promise<StoredKeySet>;
  generation(set: string): Promise<number>;
  /**
   * Replaces the whole set atomically if its generation is still `expectedGeneration`.
   * Refuses (throws) a set without exactly one active key. Returns false on a lost race.
   */
  commit(set: string, expectedGeneration: number, next: StoredKeySet): Promise<boolean>;
  /** A lock with expiry, so that one replica at a time generates keys for a set. */
  lock(set: string, ttlMs: number): Promise<string | null>;
  unlock(set: string, token: string): Promise<void>;
  publish(set: string, generation: number): Promise<void>;
  onChange(listener: (set: string, generation: number) => void): void;
  state(): StoreState;
  /** Resolves once the store can take commands, or after `timeoutMs` (the caller then sees it as down). */
  waitUntilAvailable(timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

/** The store could not be reached or answered an error: a retryable condition, not a verdict on the keys. */
export class StoreUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreUnavailableError';
  }
}

export function checkInvariants(next: StoredKeySet): void {
  const kids = new Set<string>();
  let active = 0;
  for (const key of next.keys) {
    if (kids.has(key.kid)) throw new Error(`duplicate kid ${key.kid}`);
    kids.add(key.kid);
    if (key.state === 'active') active += 1;
  }
  if (active !== 1) throw new Error(`a key set needs exactly one active key, this one has ${active}`);
}

export function createMemoryKeyStore(): KeyStore {
  const sets = new Map<string, string>();
  const locks = new Map<string, { token: string; until: number }>();
  const events = new EventEmitter();
  const empty: StoredKeySet = { generation: 0, updatedAt: 0, keys: [] };
  return {
    kind: 'memory',
    async load(set) {
      const stored = sets.get(set);
      return stored ? (JSON.parse(stored) as StoredKeySet) : structuredClone(empty);
    },
    async generation(set) {
      const stored = sets.get(set);
      return stored ? (JSON.parse(stored) as StoredKeySet).generation : 0;
    },
    async commit(set, expectedGeneration, next) {
      checkInvariants(next);
      const current = sets.get(set);
      const generation = current ? (JSON.parse(current) as StoredKeySet).generation : 0;
      if (generation !== expectedGeneration) return false;
      sets.set(set, JSON.stringify(next));
      return true;
    },
    async lock(set, ttlMs) {
      const held = locks.get(set);
      if (held && held.until > Date.now()) return null;
      const token = `${process.pid}-${Math.random().toString(36).slice(2)}`;
      locks.set(set, { token, until: Date.now() + ttlMs });
      return token;
    },
    async unlock(set, token) {
      if (locks.get(set)?.token === token) locks.delete(set);
    },
    async publish(set, generation) {
      events.emit('change', set, generation);
    },
    onChange(listener) {
      events.on('change', listener);
    },
    state: () => 'memory',
    async waitUntilAvailable() {},
    async close() {
      events.removeAllListeners();
    },
  };
}
