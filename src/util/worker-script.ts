/**
 * The code of a worker thread written as a module of its own, with its imports: the script scripts/bundle.mjs built
 * beside the bundle (CommonJS, one file), or, when the server runs from its TypeScript sources (the tests, `tsx`),
 * that module compiled the same way by esbuild when first asked for: a worker thread of Node 20 cannot load
 * TypeScript itself, and tsx's loader does not reach worker threads. The text is run with `eval` (WorkerCalls).
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type * as Esbuild from 'esbuild';

/** As scripts/bundle.mjs builds a worker module. */
const WORKER_BUILD = { bundle: true, platform: 'node', format: 'cjs', target: 'node20' } as const;

const scripts = new Map<string, string>();

/** Run from the TypeScript sources (this module's own file says so), not from the bundle. */
const fromSources = import.meta.url.endsWith('.ts');

/** `module`: the worker's TypeScript source; `built`: where the bundle has it. */
export function workerScript(module: URL, built: URL): string {
  let text = scripts.get(module.href);
  if (text === undefined) {
    text = fromSources ? compile(module) : fs.readFileSync(built, 'utf8');
    scripts.set(module.href, text);
  }
  return text;
}

function compile(module: URL): string {
  // a development dependency, there whenever the sources run (tsx and vitest are built on it)
  const esbuild = createRequire(import.meta.url)('esbuild') as typeof Esbuild;
  const out = esbuild.buildSync({
    ...WORKER_BUILD,
    entryPoints: [fileURLToPath(module)],
    write: false,
    logLevel: 'silent',
  });
  return out.outputFiles[0]!.text;
}
