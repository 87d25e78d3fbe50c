import { ChurnMap } from '../util/churn-map.js';

/**
 * One task at a time per key, any number of keys at once: how events for one machine (one session, one sid) are
 * kept in order while other machines go on. An entry lives only while a task for its key runs or waits.
 */
export class KeyedQueue {
  private readonly tails = new ChurnMap<Promise<unknown>>();

  /** Runs `fn` after every task queued for `key` before it has settled (fulfilled or not). */
  async run<T>(k: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(k) ?? Promise.resolve();
    const run = previous.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.tails.set(k, tail);
    try {
      return await run;
    } finally {
      if (this.tails.get(k) === tail) this.tails.delete(k);
    }
  }

  /** Keys with a task running or waiting. */
  get size(): number {
    return this.tails.size;
  }
}
