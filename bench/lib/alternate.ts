/**
 * Runs several load cases in alternating short slices, so that all of them see the same conditions: on a shared
 * machine throughput drifts by ±20 % from one minute to the next, so two figures measured a minute apart (a
 * baseline first, a scenario later) cannot be compared to within a few per cent, while slices of a few seconds taken
 * in turns can. Used by `ScenarioContext.pairedWithBaseline` (bench/lib/scenario.ts) and bench/interleaved.ts.
 */
import { runCannon, type CannonOptions, type CannonSummary } from './cannon.js';

export interface AlternateOptions {
  rounds: number;
  /** seconds per slice */
  sliceS: number;
  connections: number;
  /** seconds of warm-up per case before the first round (not counted) */
  warmupS?: number;
  /** `shuffle`: a new random order each round; `alternate` (default): the given order, reversed every other round */
  order?: 'shuffle' | 'alternate';
  /** around every measured slice, e.g. to read a process's CPU time */
  beforeSlice?(name: string): void;
  afterSlice?(name: string, summary: CannonSummary): void;
}

/** Every case's summary per round, in round order. */
export async function alternate(
  cases: ReadonlyMap<string, CannonOptions>,
  opts: AlternateOptions,
): Promise<Map<string, CannonSummary[]>> {
  const results = new Map<string, CannonSummary[]>([...cases.keys()].map((name) => [name, []]));
  const run = (cannon: CannonOptions, duration: number) =>
    runCannon({ connections: opts.connections, ...cannon, duration });
  if (opts.warmupS) for (const cannon of cases.values()) await run(cannon, opts.warmupS);
  const names = [...cases.keys()];
  for (let round = 0; round < opts.rounds; round++) {
    const order =
      opts.order === 'shuffle' ? [...names].sort(() => Math.random() - 0.5) : round % 2 ? [...names].reverse() : names;
    for (const name of order) {
      opts.beforeSlice?.(name);
      const summary = await run(cases.get(name)!, opts.sliceS);
      opts.afterSlice?.(name, summary);
      results.get(name)!.push(summary);
    }
  }
  return results;
}

export const mean = (values: number[]): number => values.reduce((a, b) => a + b, 0) / values.length;
export const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
