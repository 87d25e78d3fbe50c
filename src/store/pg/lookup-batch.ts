/**
 * Small v2 lookups on PostgreSQL: the hashes of several requests in one statement.
 *
 * Why: a lookup of one hash is one index probe for the server, but as a statement of its own it is also a write to
 * the server's socket, the server's wake-up and its reply, which cost this process more CPU than everything else a
 * lookup does (bench/README.md, "Code shaped by measurements"). The lookups that arrive while `maxInFlight`
 * statements are out wait and go together when one returns; the others go at the end of the event loop's turn, with
 * the rest of that turn's. Each hash is checked against its own request's `now`, so every request gets exactly what
 * it would get alone, and a failed statement fails each of its requests.
 */

/** A row of the batch statement: the position (1-based) of a hash in the statement's list, and its mxid. */
export interface BatchRow {
  i: number;
  mxid: string;
}

/** Runs one statement for `hashes[k]` valid at `nows[k]`, each hash's newest valid mapping. */
export type BatchStatement = (hashes: string[], nows: number[]) => Promise<BatchRow[]>;

export interface LookupBatchOptions {
  /** statements out at once; the lookups that come meanwhile wait, and go together */
  maxInFlight: number;
  /** hashes per statement, at most (a lookup is never split: one larger than this goes alone) */
  maxHashes: number;
}

interface Waiting {
  hashes: readonly string[];
  now: number;
  resolve(found: Map<string, string>): void;
  reject(error: unknown): void;
}

export class LookupBatch {
  private waiting: Waiting[] = [];
  private inFlight = 0;
  private scheduled = false;
  private readonly sendWaiting = (): void => {
    this.scheduled = false;
    this.send();
  };

  constructor(
    private readonly statement: BatchStatement,
    private readonly opts: LookupBatchOptions,
  ) {}

  /** The newest mapping valid at `now` of each of `hashes` that has one, by hash. */
  lookup(hashes: readonly string[], now: number): Promise<Map<string, string>> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ hashes, now, resolve, reject });
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
        const size = this.waiting[taken]!.hashes.length;
        if (taken > 0 && count + size > this.opts.maxHashes) break;
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

  private async run(batch: Waiting[], count: number): Promise<void> {
    const hashes = new Array<string>(count);
    const nows = new Array<number>(count);
    // owner[k]: the request of hashes[k]
    const owner = new Array<number>(count);
    let k = 0;
    for (let w = 0; w < batch.length; w++) {
      const { hashes: own, now } = batch[w]!;
      for (const hash of own) {
        hashes[k] = hash;
        nows[k] = now;
        owner[k++] = w;
      }
    }
    let rows: BatchRow[];
    try {
      rows = await this.statement(hashes, nows);
    } catch (error) {
      for (const w of batch) w.reject(error);
      return;
    }
    const found = batch.map(() => new Map<string, string>());
    for (const { i, mxid } of rows) found[owner[i - 1]!]!.set(hashes[i - 1]!, mxid);
    for (let w = 0; w < batch.length; w++) batch[w]!.resolve(found[w]!);
  }
}
