// Compact JWS signing off the event loop that serves the JWKS: in a pool of worker threads that lower their
// own scheduling priority (nice 10), so that a JWKS request gets a core at once while signatures use all the
// spare CPU; or, when workers cannot start, node:crypto's callback form on libuv's thread pool.
import { availableParallelism } from 'node:os';
import { constants, type KeyObject, sign } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import type { Algorithm } from '../config.js';

interface SignParams {
  digest: string | null;
  options: { padding?: number; saltLength?: number; dsaEncoding?: 'ieee-p1363' };
}

const PSS = { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST };
const P1363 = { dsaEncoding: 'ieee-p1363' as const };

const PARAMS: Record<Algorithm, SignParams> = {
  RS256: { digest: 'sha256', options: {} },
  RS384: { digest: 'sha384', options: {} },
  RS512: { digest: 'sha512', options: {} },
  PS256: { digest: 'sha256', options: PSS },
  PS384: { digest: 'sha384', options: PSS },
  PS512: { digest: 'sha512', options: PSS },
  ES256: { digest: 'sha256', options: P1363 },
  ES384: { digest: 'sha384', options: P1363 },
  ES512: { digest: 'sha512', options: P1363 },
  EdDSA: { digest: null, options: {} },
};

function encode(json: string): string {
  return Buffer.from(json).toString('base64url');
}

/** Signs `input` and returns the signature, base64url-encoded. */
type SignBytes = (alg: Algorithm, key: KeyObject, input: string) => Promise<string>;

export interface Signer {
  /**
   * `header` is built by our own code and never carries `alg`: the algorithm always comes from the key.
   * `payloadJson`: the claims as serialised JSON (the caller has already serialised them to check their size).
   */
  signCompact(alg: Algorithm, key: KeyObject, header: { kid: string; typ: string; [name: string]: string }, payloadJson: string): Promise<string>;
  /** 'workers' or 'libuv' (workers could not start, or were not asked for). The pool starts on the first signature. */
  readonly mode: 'workers' | 'libuv';
  close(): Promise<void>;
}

const signOnThreadPool: SignBytes = (alg, key, input) => {
  const { digest, options } = PARAMS[alg];
  return new Promise((resolve, reject) => {
    sign(digest, Buffer.from(input), { key, ...options }, (err, signature) => {
      if (err) reject(err);
      else resolve(signature.toString('base64url'));
    });
  });
};

// The worker: CommonJS evaluated from this string, so that it runs the same under tsx and from dist/.
// Key objects arrive once per worker over the worker channel (postMessage clones a KeyObject's handle; no
// key material is exported or serialised) and are dropped when the main thread's KeyObject is collected.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { sign } = require('node:crypto');
const { setPriority } = require('node:os');
try { setPriority(0, 10); } catch {}
const keys = new Map();
parentPort.on('message', (m) => {
  if (m.op === 'key') { keys.set(m.keyId, m.key); return; }
  if (m.op === 'drop') { keys.delete(m.keyId); return; }
  try {
    const signature = sign(m.digest, Buffer.from(m.input), { key: keys.get(m.keyId), ...m.options });
    parentPort.postMessage({ id: m.id, signature: signature.toString('base64url') });
  } catch (err) {
    parentPort.postMessage({ id: m.id, error: String(err && err.message) });
  }
});
`;

interface Job {
  resolve: (signature: string) => void;
  reject: (err: Error) => void;
  retry: () => void;
}

interface PoolWorker {
  worker: Worker;
  jobs: Map<number, Job>;
  keys: Set<number>;
}

function startPool(size: number, onFailure: (err: Error) => void): { signBytes: SignBytes; close(): Promise<void>; healthy(): boolean } {
  const workers: PoolWorker[] = [];
  let closing = false;
  const keyIds = new WeakMap<KeyObject, number>();
  let nextKeyId = 0;
  let nextJob = 0;
  let failed = false;
  const dropped = new FinalizationRegistry<number>((keyId) => {
    for (const w of workers) {
      if (w.keys.delete(keyId)) w.worker.postMessage({ op: 'drop', keyId });
    }
  });

  function fail(err: Error): void {
    if (failed) return;
    failed = true;
    onFailure(err);
    // Signatures already handed to a worker are redone on the thread pool: a caller never sees the failure.
    for (const w of workers) {
      for (const job of w.jobs.values()) job.retry();
      w.jobs.clear();
      void w.worker.terminate();
    }
  }

  for (let i = 0; i < size; i++) {
    // Small heaps: a worker holds key handles and one message at a time (the default young generation alone
    // would add tens of MB of RSS per worker under load).
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      name: `jwks-signer-sign-${i}`,
      resourceLimits: { maxYoungGenerationSizeMb: 2, maxOldGenerationSizeMb: 32 },
    });
    const entry: PoolWorker = { worker, jobs: new Map(), keys: new Set() };
    worker.unref();
    worker.on('message', (m: { id: number; signature?: string; error?: string }) => {
      const job = entry.jobs.get(m.id);
      if (!job) return;
      entry.jobs.delete(m.id);
      if (m.signature !== undefined) job.resolve(m.signature);
      else job.reject(new Error(m.error ?? 'signing failed'));
    });
    worker.on('error', fail);
    worker.on('exit', (code) => {
      if (!closing) fail(new Error(`signing worker exited with code ${code}`));
    });
    workers.push(entry);
  }

  return {
    healthy: () => !failed,
    signBytes(alg, key, input) {
      if (failed) return signOnThreadPool(alg, key, input);
      let target = workers[0]!;
      for (const w of workers) if (w.jobs.size < target.jobs.size) target = w;
      let keyId = keyIds.get(key);
      if (keyId === undefined) {
        keyId = nextKeyId++;
        keyIds.set(key, keyId);
        dropped.register(key, keyId);
      }
      if (!target.keys.has(keyId)) {
        target.worker.postMessage({ op: 'key', keyId, key });
        target.keys.add(keyId);
      }
      const id = nextJob++;
      const { digest, options } = PARAMS[alg];
      return new Promise((resolve, reject) => {
        target.jobs.set(id, { resolve, reject, retry: () => signOnThreadPool(alg, key, input).then(resolve, reject) });
        target.worker.postMessage({ op: 'sign', id, keyId, digest, options, input });
      });
    },
    async close() {
      closing = true;
      await Promise.all(workers.map((w) => w.worker.terminate()));
    },
  };
}

/**
 * `workers`: the pool's size (default: one per core); 0 signs on libuv's thread pool. `onFallback` is told
 * once if the workers fail; signing then goes on on the thread pool.
 */
export function createSigner({ workers = availableParallelism(), onFallback }: { workers?: number; onFallback?: (err: Error) => void } = {}): Signer {
  // Started on the first signature: a replica that only serves the JWKS never pays for the workers' memory.
  let pool: ReturnType<typeof startPool> | undefined;
  let poolFailed = workers <= 0;
  let closed = false;
  function signBytes(alg: Algorithm, key: KeyObject, input: string): Promise<string> {
    if (!pool && !poolFailed && !closed) {
      try {
        pool = startPool(workers, (err) => onFallback?.(err));
      } catch (err) {
        poolFailed = true;
        onFallback?.(err as Error);
      }
    }
    return pool ? pool.signBytes(alg, key, input) : signOnThreadPool(alg, key, input);
  }
  return {
    get mode() {
      return !poolFailed && (pool?.healthy() ?? true) ? 'workers' : 'libuv';
    },
    async signCompact(alg, key, header, payloadJson) {
      const signingInput = `${encode(JSON.stringify({ alg, ...header }))}.${encode(payloadJson)}`;
      return `${signingInput}.${await signBytes(alg, key, signingInput)}`;
    },
    async close() {
      closed = true;
      await pool?.close();
    },
  };
}

/** The libuv signer, for callers without a pool. */
export const threadPoolSigner: Signer = createSigner({ workers: 0 });
