/**
 * The server as an operator runs it (`npm start`, the installed command): src/ bundled by the package's own
 * scripts/bundle.mjs into `.tmp/bench-build/dist/bundle/main.mjs`, run by plain `node`. The package's `config/` and
 * package.json are linked two levels above the bundle, where the code looks for its shipped templates and its
 * version, and node_modules resolve from the checkout above. Built once per bench process, from the src/ of now
 * (not the checkout's dist/, which may be older).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from './child.js';

const OUT = path.join(ROOT, '.tmp', 'bench-build');

let built: string | null = null;

/** The built `main.mjs` (built on the first call). */
export function builtServer(): string {
  if (built) return built;
  fs.rmSync(OUT, { recursive: true, force: true });
  const bundleDir = path.join(OUT, 'dist', 'bundle');
  execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'bundle.mjs'), '--outdir', bundleDir], {
    stdio: 'inherit',
  });
  for (const name of ['config', 'package.json']) fs.symlinkSync(path.join(ROOT, name), path.join(OUT, name));
  built = path.join(bundleDir, 'main.mjs');
  return built;
}
