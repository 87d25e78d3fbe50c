/**
 * The values of the last `capacity` keys set, for a pure function whose inputs repeat (a client sending its request
 * again): the oldest key goes when a new one comes in, so what it holds is bounded whatever the inputs. Its entries
 * come and go at the rate of requests, hence a ChurnMap (churn-map.ts says why not a `Map`) and a ring of the keys in
 * the order they were set.
 */
import { ChurnMap } from './churn-map.js';

export class RecentValues<V> {
  private readonly values = new ChurnMap<V>();
  private readonly order: (string | undefined)[];
  private next = 0;

  constructor(private readonly capacity: number) {
    if (!(capacity >= 1)) throw new RangeError('capacity must be at least 1');
    this.order = new Array<string | undefined>(capacity).fill(undefined);
  }

  get size(): number {
    return this.values.size;
  }

  /** `compute(key)` as kept, computed (and kept) when it is not. */
  through(key: string, compute: (key: string) => V): V {
    if (this.values.has(key)) return this.values.get(key) as V;
    const value = compute(key);
    const oldest = this.order[this.next];
    if (oldest !== undefined) this.values.delete(oldest);
    this.order[this.next] = key;
    this.next = (this.next + 1) % this.capacity;
    this.values.set(key, value);
    return value;
  }
}
