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
  /** Stores the entry, now or at the sink's next flush; `onError` is called if it cannot be stored. */
  append(entry: StoredAuditEntry, onError?: (err: Error) => void): void;
  /** Newest first; `before` is an id from a previous page. */
  read(count: number, before?: string): Promise<StoredAuditEntry[]>;
  /** Stores what is buffered. */
  close?(): Promise<void>;
}

export interface Audit {
  record(entry: AuditEntry, message?: string): void;
  read(count: number, before?: string): Promise<StoredAuditEntry[]>;
  close(): Promise<void>;
}

/** A fixed ring: appending never moves entries (a full array shifted per signature cost ~130 us). */
export function createMemoryAuditSink(maxLength: number): AuditSink {
  const ring: StoredAuditEntry[] = [];
  let next = 0;
  let size = 0;
  const newest = (i: number) => ring[(next - 1 - i + maxLength) % maxLength]!;
  return {
    append(entry) {
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

// One command per batch: a pipeline of one XADD per entry cost ~18-28 us of client CPU per entry (an ioredis
// Command, its promise and reply each), the script ~5-12 us (bench/NOTES.md). A failing XADD aborts the script;
// the entries before it stay written, and the whole batch is reported as failed.
const APPEND_SCRIPT = `
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'entry', ARGV[i])
end
return #ARGV - 1
`;

interface ScriptedClient {
  jwksAuditAppend(key: string, maxLength: string, ...entries: string[]): Promise<number>;
}

/**
 * Entries are written in batches, one command each (at most `maxBatch` entries), never two at once. A batch goes
 * at the end of the current turn of the event loop, or `minIntervalMs` after the previous one was sent if that is
 * later, unless `maxBatch` entries are waiting; what arrives meanwhile waits for the next. So a quiet replica
 * writes each entry at once and a busy one about one command per interval: at one batch per turn, batches held
 * ~1.3 entries under RS256 load and their round trips cost ~10% of the assertions/s (bench/NOTES.md). Entries of
 * one replica keep their order; entries of different replicas are ordered by arrival, which a batch can delay by
 * up to the interval (their `time` is when they were recorded). A read or close first writes everything
 * appended before it.
 */
export function createRedisAuditSink(client: Redis | Cluster, key: string, maxLength: number, { maxBatch = 100, minIntervalMs = 0 } = {}): AuditSink {
  client.defineCommand('jwksAuditAppend', { numberOfKeys: 1, lua: APPEND_SCRIPT });
  const scripted = client as unknown as ScriptedClient;
  let buffer: Array<{ entry: StoredAuditEntry; onError: ((err: Error) => void) | undefined }> = [];
  let inFlight: Promise<void> | undefined;
  let timer: NodeJS.Timeout | NodeJS.Immediate | undefined;
  let lastSentAt = -Infinity;
  /** Entries handed to a batch so far: with the buffer's length, how far a flush must go. */
  let taken = 0;

  function write(): Promise<void> {
    const batch = buffer.slice(0, maxBatch);
    buffer = buffer.slice(batch.length);
    taken += batch.length;
    const entries = batch.map(({ entry }) => {
      const { id: _id, ...fields } = entry;
      return JSON.stringify(fields);
    });
    return scripted.jwksAuditAppend(key, String(maxLength), ...entries).then(
      () => undefined,
      (err: Error) => batch.forEach((pending) => pending.onError?.(err)),
    );
  }

  function send(): Promise<void> {
    if (timer) {
      if ('refresh' in timer) clearTimeout(timer);
      else clearImmediate(timer);
      timer = undefined;
    }
    lastSentAt = performance.now();
    const sent = write().finally(() => {
      inFlight = undefined;
      schedule();
    });
    inFlight = sent;
    return sent;
  }

  function fire(): void {
    timer = undefined;
    if (!inFlight && buffer.length > 0) void send();
  }

  function schedule(): void {
    if (inFlight || timer || buffer.length === 0) return;
    // A full batch waiting goes at once: the interval must not cap how many entries a replica can write.
    const wait = buffer.length >= maxBatch ? 0 : lastSentAt + minIntervalMs - performance.now();
    // Unref'd: a waiting batch does not keep a finished process alive; close() writes it.
    timer = wait > 0 ? setTimeout(fire, wait).unref() : setImmediate(fire);
  }

  /** Writes, without waiting for the interval, every entry appended before the call. */
  async function flush(): Promise<void> {
    const target = taken + buffer.length;
    while (taken < target) await (inFlight ?? send());
    if (inFlight) await inFlight;
  }

  return {
    append(entry, onError) {
      buffer.push({ entry, onError });
      schedule();
    },
    close: flush,
    async read(count, before) {
      await flush();
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
  const failed = () => onAppendError?.();
  return {
    record(entry, message = entry.event) {
      logger.info({ audit: entry.event, ...entry, event: undefined }, message);
      const now = Date.now();
      // Not `{ ...entry, id, time }`: see createTokenService (src/signing/token-service.ts).
      const stored: StoredAuditEntry = Object.assign({}, entry, { id: `${now}-${sequence++}`, time: new Date(now).toISOString() });
      sink.append(stored, failed);
    },
    read: (count, before) => sink.read(count, before),
    close: async () => sink.close?.(),
  };
}
