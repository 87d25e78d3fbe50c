/**
 * The answers a listener has not written yet: what its stop waits for, and answers 503 at the deadline.
 *
 * Every request joins and leaves this on the hot path, so it is an array of slots that only grows (to the most
 * answers ever pending at once), reused through a free list, and not a Set. A Set that a few entries join and leave
 * all the time is rehashed each time it grows or shrinks, and V8 keeps each replaced table, entries and all,
 * linked to its successor (for iterators in flight). Once one of those tables has reached the old generation, the
 * chain keeps the answers of the requests after it alive through the young generation's collections until the next
 * full one, and a busy server spends its time copying and promoting garbage (bench/README.md, "Code shaped by
 * measurements").
 */
import type { ServerResponse } from 'node:http';

/** Where an answer is in its listener's slots. */
const SLOT = Symbol('pending answer slot');

type Slotted = ServerResponse & { [SLOT]?: number };

export class PendingAnswers {
  private readonly slots: Array<ServerResponse | undefined> = [];
  private readonly free: number[] = [];
  private count = 0;

  /** Adds an answer; its slot is kept on it, for `remove`. */
  add(res: ServerResponse): void {
    const slot = this.free.pop() ?? this.slots.length;
    this.slots[slot] = res;
    (res as Slotted)[SLOT] = slot;
    this.count++;
  }

  /** Removes an answer that was added (once; again is a no-op). */
  remove(res: ServerResponse): void {
    const slot = (res as Slotted)[SLOT];
    if (slot === undefined || this.slots[slot] !== res) return;
    this.slots[slot] = undefined;
    this.free.push(slot);
    this.count--;
  }

  get size(): number {
    return this.count;
  }

  /** The pending answers now (a copy: answering them removes them). */
  list(): ServerResponse[] {
    const out: ServerResponse[] = [];
    for (const res of this.slots) if (res !== undefined) out.push(res);
    return out;
  }
}
