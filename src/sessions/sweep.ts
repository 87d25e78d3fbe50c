/**
 * Sydent's clean-up of validation sessions (five lifetimes after their last change, every 10 minutes), done a slice
 * at a time: each slice is one short write, and the event loop serves requests between slices, so neither start-up
 * nor a sweep over many expired sessions holds the server up.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';

/** The writes a sweep needs (the store supervisor's, through its facade). */
export interface SweepStore {
  /** deletes up to `limit` sessions untouched since before `cutoffMs` and their rows; resolves to how many */
  deleteExpired(cutoffMs: number, limit: number): Promise<number>;
}

export interface SweeperOptions {
  store: SweepStore;
  now: () => number;
  /** sessions untouched for this long are deleted */
  purgeAfterMs: number;
  everyMs: number;
  /** the first sweep, this long after start: start-up's own work goes first */
  firstAfterMs: number;
  /** rows per slice */
  slice: number;
  onError: (err: unknown) => void;
}

export class SessionSweeper {
  private readonly timers: NodeJS.Timeout[] = [];
  private stopped = false;
  private running: Promise<void> | null = null;

  constructor(private readonly opts: SweeperOptions) {}

  start(): void {
    const first = setTimeout(() => this.trigger(), this.opts.firstAfterMs);
    const every = setInterval(() => this.trigger(), this.opts.everyMs);
    first.unref();
    every.unref();
    this.timers.push(first, every);
  }

  /** No slice starts after this; one already running finishes. */
  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
  }

  /** One sweep (none if one is still running); resolves when it is done. */
  sweep(): Promise<void> {
    this.running ??= this.run().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private trigger(): void {
    this.sweep().catch(this.opts.onError);
  }

  private async run(): Promise<void> {
    const { store, slice } = this.opts;
    const cutoff = this.opts.now() - this.opts.purgeAfterMs;
    while (!this.stopped && (await store.deleteExpired(cutoff, slice)) === slice) await nextTurn();
  }
}
