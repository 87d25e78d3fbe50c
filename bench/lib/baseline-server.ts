import os from 'node:os';
import path from 'node:path';
import { profilerEnv } from './profiler.js';
import { ROOT, spawnTs, waitReady, type TsProcess } from './child.js';
import { freePort } from './ports.js';

export interface BareFastify {
  baseUrl: string;
  process: TsProcess;
  stop(): Promise<void>;
}

/** Starts bench/lib/bare-fastify.ts in its own process on a free loopback port. */
export async function startBareFastify(): Promise<BareFastify> {
  const port = await freePort();
  // BENCH_CPU_PROF profiles the baseline as it does sydent-ts, for comparing the two
  const env = profilerEnv('bare-fastify') ?? undefined;
  const proc = spawnTs(path.join(ROOT, 'bench/lib/bare-fastify.ts'), [String(port)], { cwd: os.tmpdir(), env });
  await waitReady(proc, { marker: 'bare-fastify started', timeoutMs: 20_000 });
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    process: proc,
    stop: async () => {
      await proc.stop();
    },
  };
}
