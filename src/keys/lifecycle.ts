// The key lifecycle as pure functions of a set's records and the time: next -> active -> retired -> deleted,
// and revoked. The key manager applies them under a lock and commits the result as one atomic change.
import type { KeySetConfig } from '../config.js';
import { Errors } from '../errors.js';
import type { KeyRecord } from './types.js';

export type LifecycleAction =
  | { type: 'maintain' }
  | { type: 'rotate'; force: boolean; ifActiveKid?: string }
  | { type: 'revoke'; kid: string }
  | { type: 'import'; record: KeyRecord };

export interface Transition {
  keys: KeyRecord[];
  changed: boolean;
  /** What happened, for the audit log and the admin API. */
  events: string[];
}

type MakeKey = (state: 'active' | 'next') => Promise<KeyRecord>;

/** When the set next needs maintenance (a due rotation, an expired retired or revoked key), or Infinity. */
export function nextDueAt(keys: KeyRecord[], set: KeySetConfig): number {
  let due = Infinity;
  const active = keys.find((k) => k.state === 'active');
  const next = keys.find((k) => k.state === 'next');
  if (!active || !next) return -Infinity;
  due = Math.min(due, Math.max((active.activatedAt ?? active.createdAt) + set.rotationPeriodMs, next.createdAt + set.prepublishPeriodMs));
  for (const key of keys) {
    if (key.state === 'retired') due = Math.min(due, (key.retiredAt ?? 0) + set.retireGraceMs);
    if (key.state === 'revoked') due = Math.min(due, (key.revokedAt ?? 0) + set.retireGraceMs);
  }
  return due;
}

/** A retired key never signs again, so its private key is dropped: what is not stored cannot leak. */
function retire(key: KeyRecord, now: number, events: string[]): void {
  key.state = 'retired';
  key.retiredAt = now;
  delete key.privateKey;
  events.push(`retired ${key.kid}`);
}

function promote(keys: KeyRecord[], now: number, events: string[]): void {
  const active = keys.find((k) => k.state === 'active');
  const next = keys.find((k) => k.state === 'next');
  if (active) retire(active, now, events);
  if (next) {
    next.state = 'active';
    next.activatedAt = now;
    events.push(`activated ${next.kid}`);
  }
}

export async function transition(
  current: KeyRecord[],
  set: KeySetConfig,
  now: number,
  action: LifecycleAction,
  makeKey: MakeKey,
): Promise<Transition> {
  const keys: KeyRecord[] = structuredClone(current);
  const events: string[] = [];

  const expired = (k: KeyRecord) =>
    (k.state === 'retired' && (k.retiredAt ?? 0) + set.retireGraceMs <= now) ||
    (k.state === 'revoked' && (k.revokedAt ?? 0) + set.retireGraceMs <= now);
  for (const key of keys.filter(expired)) events.push(`deleted ${key.kid}`);
  const kept = keys.filter((k) => !expired(k));

  const find = (state: KeyRecord['state']) => kept.find((k) => k.state === state);

  if (action.type === 'rotate') {
    const active = find('active');
    const next = find('next');
    if (action.ifActiveKid !== undefined && active?.kid !== action.ifActiveKid) {
      return { keys: current, changed: false, events: [] };
    }
    if (next && !action.force && next.createdAt + set.prepublishPeriodMs > now) {
      const wait = Math.ceil((next.createdAt + set.prepublishPeriodMs - now) / 1000);
      throw Errors.nextKeyNotReady(
        `next key ${next.kid} has been published for less than the pre-publish period; it can sign in ${wait}s (or rotate with force: true)`,
      );
    }
    if (next) promote(kept, now, events);
  }

  if (action.type === 'revoke') {
    const target = kept.find((k) => k.kid === action.kid);
    if (!target) throw Errors.keyNotFound(`key ${action.kid} is not in key set ${set.name}`);
    if (target.state === 'revoked') return { keys: current, changed: false, events: [] };
    const wasActive = target.state === 'active';
    target.state = 'revoked';
    target.revokedAt = now;
    delete target.privateKey;
    events.push(`revoked ${target.kid}`);
    if (wasActive) {
      const next = find('next');
      if (next) {
        next.state = 'active';
        next.activatedAt = now;
        events.push(`activated ${next.kid}`);
      }
    }
  }

  if (action.type === 'import') {
    const { record } = action;
    if (current.some((k) => k.kid === record.kid)) throw Errors.keyExists(`key ${record.kid} is already in key set ${set.name}`);
    if (record.state === 'active') {
      const active = find('active');
      if (active) retire(active, now, events);
    } else {
      // A next key has never signed: discarding it cannot break a token, and a set has one next key.
      const next = find('next');
      if (next) {
        kept.splice(kept.indexOf(next), 1);
        events.push(`discarded next ${next.kid}`);
      }
    }
    kept.push(structuredClone(record));
    events.push(`imported ${record.state} ${record.kid}`);
  }

  if (action.type === 'maintain') {
    const active = find('active');
    const next = find('next');
    if (!active && next) {
      next.state = 'active';
      next.activatedAt = now;
      events.push(`activated ${next.kid}`);
    } else if (
      active &&
      next &&
      (active.activatedAt ?? active.createdAt) + set.rotationPeriodMs <= now &&
      next.createdAt + set.prepublishPeriodMs <= now
    ) {
      promote(kept, now, events);
    }
  }

  if (!find('active')) {
    const record = await makeKey('active');
    kept.push(record);
    events.push(`created active ${record.kid}`);
  }
  if (!find('next')) {
    const record = await makeKey('next');
    kept.push(record);
    events.push(`created next ${record.kid}`);
  }

  return { keys: kept, changed: events.length > 0, events };
}
