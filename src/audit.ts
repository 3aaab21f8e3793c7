// The audit trail: one log line per signature and per admin or key event, and the same entries in a capped
// store (a Redis stream shared by the replicas, or a ring buffer in memory) read through GET /v1/audit.
import type { Cluster, Redis } from 'ioredis';
import type { Logger } from 'pino';

export interface AuditEntry {
  /** `sign`, `key_lifecycle`, `admin_rotate`, `admin_revoke`, `admin_import`, `admin_reencrypt`, `auth_lockout` */
  event: string;
  [field: string]: unknown;
}

export interface StoredAuditEntry extends AuditEntry {
  id: string;
  time: string;
}

export interface AuditSink {
  append(entry: StoredAuditEntry): Promise<void>;
  /** Newest first; `before` is an id from a previous page. */
  read(count: number, before?: string): Promise<StoredAuditEntry[]>;
}

export interface Audit {
  record(entry: AuditEntry, message?: string): void;
  read(count: number, before?: string): Promise<StoredAuditEntry[]>;
}

/** A fixed ring: appending never moves entries (a full array shifted per signature cost ~130 us). */
export function createMemoryAuditSink(maxLength: number): AuditSink {
  const ring: StoredAuditEntry[] = [];
  let next = 0;
  let size = 0;
  const newest = (i: number) => ring[(next - 1 - i + maxLength) % maxLength]!;
  return {
    async append(entry) {
      ring[next] = entry;
      next = (next + 1) % maxLength;
      size = Math.min(size + 1, maxLength);
    },
    async read(count, before) {
      let start = 0;
      if (before !== undefined) {
        start = -1;
        for (let i = 0; i < size; i++) {
          if (newest(i).id === before) {
            start = i + 1;
            break;
          }
        }
        if (start < 0) return [];
      }
      const out: StoredAuditEntry[] = [];
      for (let i = start; i < size && out.length < count; i++) out.push(newest(i));
      return out;
    },
  };
}

export function createRedisAuditSink(client: Redis | Cluster, key: string, maxLength: number): AuditSink {
  return {
    async append(entry) {
      const { id: _id, ...fields } = entry;
      await client.xadd(key, 'MAXLEN', '~', String(maxLength), '*', 'entry', JSON.stringify(fields));
    },
    async read(count, before) {
      const end = before === undefined ? '+' : `(${before}`;
      const rows = await client.xrevrange(key, end, '-', 'COUNT', count);
      return rows.map(([id, fields]) => ({ ...(JSON.parse(fields[1] ?? '{}') as AuditEntry), id }) as StoredAuditEntry);
    },
  };
}

let sequence = 0;

/**
 * Logs every entry at once and appends it to the sink without waiting: a store outage must not stop signing,
 * and the log line is the record of last resort.
 */
export function createAudit(sink: AuditSink, logger: Logger, onAppendError?: () => void): Audit {
  return {
    record(entry, message = entry.event) {
      logger.info({ audit: entry.event, ...entry, event: undefined }, message);
      const now = Date.now();
      const stored: StoredAuditEntry = { ...entry, id: `${now}-${sequence++}`, time: new Date(now).toISOString() };
      sink.append(stored).catch(() => onAppendError?.());
    },
    read: (count, before) => sink.read(count, before),
  };
}
