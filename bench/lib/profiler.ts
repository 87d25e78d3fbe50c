import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { cacheDir } from './db-cache.js';

/**
 * `BENCH_CPU_PROF=<dir>`: every sydent-ts process a scenario starts is CPU-profiled, a `.cpuprofile` each in
 * `<dir>`, written when the server exits (open in Chrome DevTools, or sum self times per function). Node 20 refuses
 * `--cpu-prof` in NODE_OPTIONS, so the server gets `--import` of a small module that runs the inspector's profiler
 * (sampling every 250 µs) from its start to its exit, with frames mapped back to the TypeScript source. For finding where the time goes: profiled figures are lower.
 * The bare fastify baseline (baseline, baseline-post) and the bare twins are profiled too, as
 * `bare-fastify-<pid>-….cpuprofile` and `twin-<kind>-<pid>-….cpuprofile`.
 * `node --import tsx bench/cpuprofile-top.ts <file>` sums self time by function over the loaded stretch; read its
 * notes on what a wall-clock sampler shows on a shared machine (a `writev` share is mostly time spent waiting for
 * a CPU after the write woke the load generator, not work in the syscall).
 */
export const CPU_PROF_ENV = 'BENCH_CPU_PROF';

const PROFILER_MODULE = `
import { Session } from 'node:inspector';
import fs from 'node:fs';
import { findSourceMap } from 'node:module';
import path from 'node:path';
const dir = process.env.BENCH_CPU_PROF_DIR;
const session = new Session();
session.connect();
session.post('Profiler.enable');
session.post('Profiler.setSamplingInterval', { interval: 250 });
session.post('Profiler.start');
process.on('exit', () => {
  // an in-process session answers synchronously, so this works in an exit handler
  session.post('Profiler.stop', (err, res) => {
    if (err) return;
    // tsx's output is not line for line: point the frames at the TypeScript source (0-based, as CDP's)
    for (const node of res.profile.nodes) {
      const f = node.callFrame;
      if (!f.url.startsWith('file:') || f.url.includes('/node_modules/')) continue;
      const entry = findSourceMap(f.url)?.findEntry(f.lineNumber, f.columnNumber);
      if (entry && entry.originalLine !== undefined) {
        f.lineNumber = entry.originalLine;
        f.columnNumber = entry.originalColumn;
        node.positionTicks = undefined;
      }
    }
    fs.mkdirSync(dir, { recursive: true });
    const name = process.env.BENCH_CPU_PROF_NAME || 'sydent';
    fs.writeFileSync(path.join(dir, \`\${name}-\${process.pid}-\${Date.now()}.cpuprofile\`), JSON.stringify(res.profile));
  });
});
`;

/**
 * The environment a profiled server starts with (NODE_OPTIONS, BENCH_CPU_PROF_DIR, and the profile's file name
 * prefix), or null when not profiling. Also used for the bare fastify baseline, so profiles can be compared.
 */
export function profilerEnv(name = 'sydent'): Record<string, string> | null {
  const dir = process.env[CPU_PROF_ENV];
  if (!dir) return null;
  const file = path.join(cacheDir(), 'cpu-prof.mjs');
  if (!fs.existsSync(file)) fs.writeFileSync(file, PROFILER_MODULE);
  return {
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import=${pathToFileURL(file).href}`.trim(),
    BENCH_CPU_PROF_DIR: path.resolve(dir),
    BENCH_CPU_PROF_NAME: name,
  };
}
