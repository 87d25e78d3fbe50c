/**
 * Ed25519 checks of many payloads under one key, spread over a few worker threads: a large replication push is
 * verified on every core while the event loop stays free for requests.
 *
 * A batch is cut into one contiguous slice per worker and each slice goes in one message, its payloads and
 * signatures packed into two buffers that are moved, not copied. Workers start on first use; an idle pool holds no
 * reference on the event loop; `close` terminates them.
 */
import { availableParallelism } from 'node:os';
import type { KeyObject } from 'node:crypto';

import { WorkerCalls } from '../util/worker-calls.js';

export interface PayloadToVerify {
  /** the bytes signed (canonical JSON as UTF-8) */
  payload: Uint8Array;
  /** 64 bytes */
  signature: Uint8Array;
}

export class VerifyPoolClosedError extends Error {
  override name = 'VerifyPoolClosedError';
}

const SIGNATURE_BYTES = 64;

/** A slice, as it is sent with its call's id. */
interface SliceParts {
  key: KeyObject;
  /** the payloads one after the other; `ends[i]` is where payload i ends */
  payloads: Uint8Array<ArrayBuffer>;
  ends: Uint32Array<ArrayBuffer>;
  /** 64 bytes per payload, in the same order */
  signatures: Uint8Array<ArrayBuffer>;
}

type SliceAnswer =
  | {
      id: number;
      /** indices (in the slice) of the signatures that do not verify */
      bad: number[];
    }
  /** the slice could not be checked at all (a key of the wrong kind) */
  | { id: number; error: string };

// The worker runs from source text, not from a module file, so it starts the same way from the TypeScript sources
// (tsx, vitest) and from the built `dist`; it needs nothing but node:crypto.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { verify } = require('node:crypto');
parentPort.on('message', ({ id, key, payloads, ends, signatures }) => {
  const bad = [];
  let start = 0;
  try {
    for (let i = 0; i < ends.length; i++) {
      const payload = payloads.subarray(start, ends[i]);
      const signature = signatures.subarray(i * ${SIGNATURE_BYTES}, (i + 1) * ${SIGNATURE_BYTES});
      if (!verify(null, payload, key, signature)) bad.push(i);
      start = ends[i];
    }
  } catch (error) {
    parentPort.postMessage({ id, error: String(error && error.message) });
    return;
  }
  parentPort.postMessage({ id, bad });
});
`;

/** One thread and the slices it has been given. */
class PoolWorker {
  private readonly calls: WorkerCalls<number[]>;

  constructor(onDeath: (w: PoolWorker) => void) {
    this.calls = new WorkerCalls<number[]>(WORKER_SOURCE, {
      failure: (end) =>
        'error' in end ? end.error : new Error(`signature verification worker exited (code ${end.exitCode})`),
      onDeath: () => onDeath(this),
    });
    this.calls.worker.on('message', (answer: SliceAnswer) => {
      if ('error' in answer) this.calls.reject(answer.id, new Error(`signature verification failed: ${answer.error}`));
      else this.calls.resolve(answer.id, answer.bad);
    });
  }

  /** set once the thread has failed or exited: the pool replaces it */
  get dead(): boolean {
    return this.calls.dead;
  }

  send(slice: SliceParts): Promise<number[]> {
    const { id, answer } = this.calls.start();
    try {
      this.calls.worker.postMessage({ id, ...slice }, [
        slice.payloads.buffer,
        slice.ends.buffer,
        slice.signatures.buffer,
      ]);
    } catch (error) {
      // not sent (a key that cannot be cloned): nothing will answer it
      this.calls.reject(id, error instanceof Error ? error : new Error(String(error)));
    }
    return answer;
  }

  terminate(): Promise<number> {
    return this.calls.terminate(() => new VerifyPoolClosedError('the signature verification pool is closed'));
  }
}

/** The default size: one worker per core the process may use. */
export function defaultVerifyPoolSize(): number {
  return Math.max(1, availableParallelism());
}

export class VerifyPool {
  /** one slot per thread; empty until first use or after its thread died */
  private readonly workers: Array<PoolWorker | undefined> = [];
  private closed = false;

  constructor(readonly size: number = defaultVerifyPoolSize()) {
    if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`pool size must be a positive integer: ${size}`);
  }

  /** Threads running now (started on first use, ended by `close`). */
  get threads(): number {
    return this.workers.filter((w) => w !== undefined && !w.dead).length;
  }

  /**
   * Checks every payload's signature under `key`; resolves with the indices of those that do not verify, in
   * increasing order. Rejects if a worker fails (the caller learns nothing about the batch) or the pool is closed.
   */
  async verifyAll(key: KeyObject, items: readonly PayloadToVerify[]): Promise<number[]> {
    if (this.closed) throw new VerifyPoolClosedError('the signature verification pool is closed');
    if (items.length === 0) return [];
    const slices = Math.min(this.size, items.length);
    const per = Math.ceil(items.length / slices);
    const answers: Array<Promise<number[]>> = [];
    for (let s = 0, first = 0; first < items.length; s++, first += per) {
      const slice = items.slice(first, first + per);
      answers.push(
        this.worker(s)
          .send(this.pack(key, slice))
          .then((bad) => bad.map((i) => i + first)),
      );
    }
    return (await Promise.all(answers)).flat();
  }

  /** Terminates the threads; slices in flight are refused. */
  async close(): Promise<void> {
    this.closed = true;
    const workers = this.workers.splice(0).filter((w): w is PoolWorker => w !== undefined);
    await Promise.all(workers.map((w) => w.terminate()));
  }

  private worker(index: number): PoolWorker {
    const slot = index % this.size;
    let w = this.workers[slot];
    if (!w || w.dead) {
      w = new PoolWorker((dead) => {
        if (this.workers[slot] === dead) this.workers[slot] = undefined;
      });
      this.workers[slot] = w;
    }
    return w;
  }

  private pack(key: KeyObject, slice: readonly PayloadToVerify[]): SliceParts {
    let total = 0;
    for (const item of slice) total += item.payload.length;
    const payloads = new Uint8Array(total);
    const ends = new Uint32Array(slice.length);
    const signatures = new Uint8Array(slice.length * SIGNATURE_BYTES);
    let at = 0;
    slice.forEach((item, i) => {
      if (item.signature.length !== SIGNATURE_BYTES) throw new RangeError('an ed25519 signature is 64 bytes');
      payloads.set(item.payload, at);
      at += item.payload.length;
      ends[i] = at;
      signatures.set(item.signature, i * SIGNATURE_BYTES);
    });
    return { key, payloads, ends, signatures };
  }
}
