/**
 * Lookups of many hashes shared with worker threads, each reading the database file on a read-only connection of
 * its own. A lookup of thousands of hashes is thousands of index probes on the event loop's thread; cut into parts
 * of contiguous values (each sorted where it is read), the parts run at once on the other cores while the event
 * loop's thread reads its own (bench/README.md, "Code shaped by measurements").
 *
 * A worker's reads are each their own read transaction: they see every write committed before them, as the read
 * connection's snapshot does once it ends after a commit (lookup-connection.ts); each hash's answer is one
 * consistent read either way. Workers start on first use and answer only once they are ready: until then, and
 * whenever none is, the lookup runs on the read connection alone. An idle pool holds no reference on the event loop;
 * `release` ends the workers with nothing in flight (each holds its connection's page cache and mmap, which only a
 * lookup of many hashes uses: the next one starts them again), `close` ends them all.
 */
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';

import { WorkerCalls } from '../util/worker-calls.js';
import { BY_SORTED_HASHES_SQL, SORTED_SLICE } from './associations.js';
import { LOOKUP_CONNECTION_PRAGMAS } from './lookup-connection.js';
import { PIECE_CHARS } from './mappings-json.js';

interface SliceAnswer {
  id: number;
  /** the slice's members (mappings-json.ts), UTF-8; a Buffer sent across arrives as a plain Uint8Array */
  json?: Uint8Array;
  error?: string;
  /** the SQLite error code, so the caller can tell an unavailable database (503) from a bug */
  code?: string;
}

// Source text, not a module file: the worker starts the same way from the TypeScript sources (tsx, vitest) and from
// the built `dist`. The driver is loaded by its resolved path, since the server's working directory is the operator's.
// A part's answer is what AssociationReads.membersOfSorted gives of its hashes sorted and each once (the same
// statement, slice size, newest row per hash and pieces as mappings-json.ts), as bytes, whose memory is handed over
// rather than copied when it can be.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.path, { fileMustExist: true });
for (const pragma of workerData.pragmas) db.pragma(pragma);
const rowsOf = db.prepare(workerData.sql).raw();
const { slice: SLICE, pieceChars: PIECE_CHARS } = workerData;
function members(sorted, now) {
  const pieces = [];
  let text = '';
  let empty = true;
  const add = (key, value) => {
    text += (empty ? '' : ',') + JSON.stringify(key) + ':' + JSON.stringify(value);
    empty = false;
    if (text.length >= PIECE_CHARS) {
      pieces.push(Buffer.from(text));
      text = '';
    }
  };
  for (let i = 0; i < sorted.length; i += SLICE) {
    let hash;
    let mxid = '';
    let ts = 0;
    let id = 0;
    for (const [h, m, t, n] of rowsOf.all(JSON.stringify(sorted.slice(i, i + SLICE)), now, now)) {
      if (h === hash) {
        if (t > ts || (t === ts && n > id)) { mxid = m; ts = t; id = n; }
        continue;
      }
      if (hash !== undefined) add(hash, mxid);
      hash = h; mxid = m; ts = t; id = n;
    }
    if (hash !== undefined) add(hash, mxid);
  }
  if (text !== '') pieces.push(Buffer.from(text));
  return Buffer.concat(pieces);
}
function sortedUnique(items) {
  items.sort();
  let kept = 0;
  for (let i = 0; i < items.length; i++) if (kept === 0 || items[i] !== items[kept - 1]) items[kept++] = items[i];
  items.length = kept;
  return items;
}
parentPort.on('message', ({ id, hashes, now }) => {
  try {
    const json = members(sortedUnique(hashes), now);
    const own = json.byteOffset === 0 && json.byteLength === json.buffer.byteLength;
    parentPort.postMessage({ id, json }, own ? [json.buffer] : []);
  } catch (error) {
    parentPort.postMessage({ id, error: String(error && error.message), code: error && error.code });
  }
});
parentPort.postMessage({ ready: true });
`;

/** A failure a worker reported, with SQLite's code (store/unavailable.ts reads it). */
class LookupWorkerError extends Error {
  override name = 'LookupWorkerError';
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

class LookupWorker {
  private readonly calls: WorkerCalls<Buffer>;
  ready = false;

  constructor(path: string, onDeath: (w: LookupWorker) => void) {
    const workerData = {
      driver: createRequire(import.meta.url).resolve('better-sqlite3'),
      path,
      pragmas: LOOKUP_CONNECTION_PRAGMAS,
      sql: BY_SORTED_HASHES_SQL,
      slice: SORTED_SLICE,
      pieceChars: PIECE_CHARS,
    };
    this.calls = new WorkerCalls<Buffer>(WORKER_SOURCE, {
      workerData,
      failure: (end) =>
        'error' in end ? end.error : new LookupWorkerError(`hash lookup worker exited (code ${end.exitCode})`),
      onDeath: () => onDeath(this),
    });
    this.calls.worker.on('message', (answer: SliceAnswer | { ready: true }) => {
      if ('ready' in answer) this.ready = true;
      else if (answer.json)
        this.calls.resolve(answer.id, Buffer.from(answer.json.buffer, answer.json.byteOffset, answer.json.byteLength));
      else this.calls.reject(answer.id, new LookupWorkerError(`hash lookup failed: ${answer.error}`, answer.code));
    });
  }

  /** set once the thread has failed, exited or been ended */
  get dead(): boolean {
    return this.calls.dead;
  }

  /** The members (mappings-json.ts) of `hashes` that have a mapping, in their sorted order, as UTF-8. */
  members(hashes: readonly string[], now: number): Promise<Buffer> {
    const { id, answer } = this.calls.start();
    this.calls.worker.postMessage({ id, hashes, now });
    return answer;
  }

  /** No slice is in flight. */
  get idle(): boolean {
    return this.calls.size === 0;
  }

  terminate(): Promise<number> {
    return this.calls.terminate(() => new LookupWorkerError('the hash lookup pool is closed'));
  }
}

/** The default number of workers: one per core beside the event loop's, at most 3. */
export function defaultLookupPoolSize(): number {
  return Math.min(3, availableParallelism() - 1);
}

export class HashLookupPool {
  private readonly workers: Array<LookupWorker | undefined> = [];
  private closed = false;

  constructor(
    private readonly path: string,
    readonly size: number = defaultLookupPoolSize(),
  ) {}

  /**
   * The workers ready to take a slice now; those not started yet (first use, or after one died) are started, to be
   * ready for a later lookup.
   */
  readyWorkers(): Array<{ members(hashes: readonly string[], now: number): Promise<Buffer> }> {
    if (this.closed) return [];
    const ready: LookupWorker[] = [];
    for (let slot = 0; slot < this.size; slot++) {
      let w = this.workers[slot];
      if (!w || w.dead) {
        w = new LookupWorker(this.path, (dead) => {
          if (this.workers[slot] === dead) this.workers[slot] = undefined;
        });
        this.workers[slot] = w;
      }
      if (w.ready) ready.push(w);
    }
    return ready;
  }

  /** Resolves once every worker is ready (tests); rejects if they are not within `timeoutMs`. */
  async warm(timeoutMs = 10_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (!this.closed && this.readyWorkers().length < this.size) {
      if (Date.now() > until) throw new Error('the hash lookup workers did not start');
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /**
   * Ends the workers with no slice in flight, giving back their connections' memory (the store is idle:
   * idle-release.ts). Those still busy are kept.
   */
  release(): void {
    for (let slot = 0; slot < this.workers.length; slot++) {
      const w = this.workers[slot];
      if (!w?.idle) continue;
      this.workers[slot] = undefined;
      void w.terminate();
    }
  }

  /** Workers started and not ended (tests). */
  get live(): number {
    return this.workers.filter((w) => w && !w.dead).length;
  }

  async close(): Promise<void> {
    this.closed = true;
    const workers = this.workers.splice(0).filter((w): w is LookupWorker => w !== undefined);
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
