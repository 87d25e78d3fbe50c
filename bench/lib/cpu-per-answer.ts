/**
 * CPU per answer over a scenario's measured run: of its sydent-ts process, and on PostgreSQL of the bench's server
 * too (from /proc, user + system). Under load these vary less between minutes than req/s does.
 */
import { postgresCpuSeconds, type Engine } from './postgres.js';
import { cpuSeconds } from './proc-cpu.js';

interface Reading {
  server: number | null;
  pg: number | null;
}

export interface CpuPerAnswer {
  /** at the start of the measured run (e.g. in `afterWarmup`) */
  start(): Promise<void>;
  /** at its end: "sydent-ts N µs[, PostgreSQL M µs]" per answer, or null when /proc said nothing */
  end(answers: number): Promise<string | null>;
}

export function cpuPerAnswer(engine: Engine, pid: number | undefined): CpuPerAnswer {
  const read = async (): Promise<Reading> => ({
    server: pid === undefined ? null : cpuSeconds(pid),
    pg: engine === 'postgresql' ? await postgresCpuSeconds() : null,
  });
  let before: Reading = { server: null, pg: null };
  const us = (from: number | null, to: number | null, answers: number): string | null =>
    from === null || to === null || answers === 0 ? null : `${(((to - from) * 1e6) / answers).toFixed(0)} µs`;
  return {
    async start() {
      before = await read();
    },
    async end(answers) {
      const after = await read();
      const server = us(before.server, after.server, answers);
      const pg = us(before.pg, after.pg, answers);
      return server === null ? null : `sydent-ts ${server}` + (pg === null ? '' : `, PostgreSQL ${pg}`);
    },
  };
}

/** The label the scenarios give it in RESULTS.md. */
export const CPU_PER_ANSWER_LABEL = 'CPU per answer (measured run, user + system)';
