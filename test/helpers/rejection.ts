import { expect } from 'vitest';

/** The Error `p` rejects with; a test that expected a rejection fails if `p` resolves. */
export async function rejection(p: Promise<unknown>): Promise<Error> {
  const outcome = await p.then(
    () => ({ rejected: false as const }),
    (err: unknown) => ({ rejected: true as const, err }),
  );
  if (!outcome.rejected) throw new Error('expected a rejection');
  expect(outcome.err).toBeInstanceOf(Error);
  return outcome.err as Error;
}
