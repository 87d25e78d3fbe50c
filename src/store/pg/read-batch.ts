/**
 * Small reads on PostgreSQL, several requests' keys in one statement: the v2 lookup of a few hashes, the session a
 * requestToken names (read before its lock by the repeat path, and for its sid once the lock is held).
 *
 * Why: a read by key is one index probe for the server, but as a statement of its own it is also a write to the
 * server's socket, the server's wake-up and its reply, which cost this process more CPU than everything else such a
 * request does (bench/README.md, "Code shaped by measurements"). The reads that arrive while `maxInFlight`
 * statements are out wait and go together when one returns; the others go at the end of the event loop's turn, with
 * the rest of that turn's. Each key carries all its request's values (a lookup's `now` too), so every request gets
 * exactly what it would get alone, and a failed statement fails each of its requests.
 */

/** A row of a batch statement: the position (1-based) of its key in the statement's list. */
export interface BatchRow {
  i: number;
}

/** Runs one statement for `keys`: at most one row per key, each with the key's position. */
export type BatchStatement<K, R extends BatchRow> = (keys: K[]) => Promise<R[]>;

export interface ReadBatchOptions {
  /** statements out at once; the reads that come meanwhile wait, and go together */
  maxInFlight: number;
  /** keys per statement, at most (a read is never split: one larger than this goes alone) */
  maxKeys: number;
}

interface Waiting<K, R> {
  keys: readonly K[];
  resolve(rows: (R | undefined)[]): void;
  reject(error: unknown): void;
}

export class ReadBatch<K, R extends BatchRow> {
  private waiting: Waiting<K, R>[] = [];
  private inFlight = 0;
  private scheduled = false;
  private readonly sendWaiting = (): void => {
    this.scheduled = false;
    this.send();
  };

  constructor(
    private readonly statement: BatchStatement<K, R>,
    private readonly opts: ReadBatchOptions,
  ) {}

  /** The row of each of `keys`, by position (undefined where there is none). */
  read(keys: readonly K[]): Promise<(R | undefined)[]> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ keys, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.inFlight >= this.opts.maxInFlight || this.waiting.length === 0) return;
    this.scheduled = true;
    setImmediate(this.sendWaiting);
  }

  private send(): void {
    while (this.waiting.length > 0 && this.inFlight < this.opts.maxInFlight) {
      let count = 0;
      let taken = 0;
      while (taken < this.waiting.length) {
        const size = this.waiting[taken]!.keys.length;
        if (taken > 0 && count + size > this.opts.maxKeys) break;
        count += size;
        taken++;
      }
      const batch = this.waiting.splice(0, taken);
      this.inFlight++;
      void this.run(batch, count).finally(() => {
        this.inFlight--;
        this.schedule();
      });
    }
  }

  private async run(batch: Waiting<K, R>[], count: number): Promise<void> {
    const keys = new Array<K>(count);
    // owner[k]: the request of keys[k]; first[w]: where request w's keys start
    const owner = new Array<number>(count);
    const first = new Array<number>(batch.length);
    let k = 0;
    for (let w = 0; w < batch.length; w++) {
      first[w] = k;
      for (const key of batch[w]!.keys) {
        keys[k] = key;
        owner[k++] = w;
      }
    }
    let rows: R[];
    try {
      rows = await this.statement(keys);
    } catch (error) {
      for (const w of batch) w.reject(error);
      return;
    }
    const found = batch.map((w) => new Array<R | undefined>(w.keys.length));
    for (const row of rows) {
      const w = owner[row.i - 1]!;
      found[w]![row.i - 1 - first[w]!] = row;
    }
    for (let w = 0; w < batch.length; w++) batch[w]!.resolve(found[w]!);
  }
}
