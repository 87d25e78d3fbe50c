import autocannon, { type AutocannonOptions, type AutocannonResult } from 'autocannon';

export type CannonOptions = AutocannonOptions;

/** The figures a scenario reports, from one autocannon run. */
export interface CannonSummary {
  /** requests/s: mean of autocannon's per-second samples (every answer, whatever its status) */
  rps: number;
  /** ms */
  p50: number;
  p90: number;
  p99: number;
  /** answers by class */
  ok2xx: number;
  non2xx: number;
  /** socket errors, timeouts included */
  errors: number;
  timeouts: number;
  /** answers received */
  total: number;
  /** requests sent (some may be in flight when the run stops) */
  sent: number;
  /** seconds actually run */
  durationS: number;
  connections: number;
  statusCodes: Record<string, number>;
  raw: AutocannonResult;
}

/** A hard ceiling for one run, whatever its duration says: autocannon is stopped after duration + 30 s. */
const OVERRUN_MS = 30_000;

/**
 * Runs autocannon in this process and returns its summary. `duration` is in seconds. `stopAfterS`: a run of an
 * `amount` of requests is stopped after that many seconds if not done (autocannon ignores `duration` then).
 */
export async function runCannon(opts: CannonOptions, limits: { stopAfterS?: number } = {}): Promise<CannonSummary> {
  if (!opts.duration && !opts.amount) throw new Error('runCannon: give a duration or an amount');
  const instance = autocannon({ connections: 10, pipelining: 1, timeout: 10, ...opts });
  const stopAfterMs =
    limits.stopAfterS !== undefined ? limits.stopAfterS * 1000 : (opts.duration ?? 60) * 1000 + OVERRUN_MS;
  const guard = setTimeout(() => instance.stop(), stopAfterMs);
  let raw: AutocannonResult;
  try {
    raw = await instance;
  } finally {
    clearTimeout(guard);
  }
  const statusCodes: Record<string, number> = {};
  for (const [code, stat] of Object.entries(raw.statusCodeStats ?? {})) statusCodes[code] = stat.count;
  return {
    rps: raw.requests.mean,
    p50: raw.latency.p50,
    p90: raw.latency.p90,
    p99: raw.latency.p99,
    ok2xx: raw['2xx'],
    non2xx: raw.non2xx,
    errors: raw.errors,
    timeouts: raw.timeouts,
    total: raw['1xx'] + raw['2xx'] + raw['3xx'] + raw['4xx'] + raw['5xx'],
    sent: raw.requests.sent ?? 0,
    durationS: raw.duration,
    connections: raw.connections,
    statusCodes,
    raw,
  };
}
