/**
 * What a test undoes after it: a list it pushes onto as it starts things, emptied after each test, last first.
 *
 *   const cleanups = cleanupsAfterEach();
 *   it('…', async () => { const s = await start(); cleanups.push(() => s.close()); … });
 */
import { afterEach } from 'vitest';

/** What a test undoes after it, last first. */
export type Cleanups = (() => unknown)[];

/** The list a test pushes what it started onto: after each test, undone last first (awaiting each). */
export function cleanupsAfterEach(): Cleanups {
  const cleanups: Cleanups = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  return cleanups;
}
