/**
 * A string-keyed map for entries that come and go at the rate of requests (one per ask, per session event, per
 * request queue): a null-prototype object in dictionary mode rather than a `Map`. When a `Map` or `Set` is rehashed,
 * V8 links the replaced table to its successor, so once one table of a busy map has reached the old generation,
 * every later table and every entry they held (promises, closures, actors of requests long answered) is kept until
 * the next full collection and promoted meanwhile. A dictionary's replaced table is plain garbage. (bench/README.md,
 * "Code shaped by measurements".)
 */
export class ChurnMap<V> {
  // Keys are prefixed so that none is an array index: those would go to the object's elements, which V8 may keep as
  // a growing array for ascending numbers.
  private entries: Record<string, V> = Object.create(null) as Record<string, V>;
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(key: string): V | undefined {
    return this.entries[`:${key}`];
  }

  has(key: string): boolean {
    return `:${key}` in this.entries;
  }

  set(key: string, value: V): this {
    const k = `:${key}`;
    if (!(k in this.entries)) this.count++;
    this.entries[k] = value;
    return this;
  }

  delete(key: string): boolean {
    const k = `:${key}`;
    if (!(k in this.entries)) return false;
    delete this.entries[k];
    this.count--;
    return true;
  }

  *[Symbol.iterator](): Generator<[string, V]> {
    for (const k in this.entries) yield [k.slice(1), this.entries[k]!];
  }

  *values(): Generator<V> {
    for (const k in this.entries) yield this.entries[k]!;
  }
}
