// `npm ci` / `npm install` in a clone, and `npm pack` after its `prepack` emptied dist/, run this: it checks src/'s
// types with TypeScript, then bundles the server into dist/bundle/ with esbuild (scripts/bundle.mjs). Where those
// are absent (`--omit=dev`) or there is no src/ (the installed package, which ships dist/), an install does not
// fail: it says what `npm start` will then find. A pack does fail: its tarball would have no server in it.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const built = existsSync(join(root, 'dist', 'bundle', 'main.mjs'));
const packing = process.env.npm_command === 'pack' || process.env.npm_command === 'publish';

if (!existsSync(join(root, 'src'))) process.exit(0);

let tsc;
try {
  const require = createRequire(join(root, 'package.json'));
  tsc = require.resolve('typescript/bin/tsc');
  require.resolve('esbuild');
} catch {
  if (packing) {
    process.stderr.write(
      'sydent-ts: cannot pack: building dist/ needs TypeScript and esbuild (install the dev dependencies)\n',
    );
    process.exit(1);
  }
  process.stderr.write(
    built
      ? 'sydent-ts: TypeScript and esbuild are not installed (dev dependencies omitted): keeping the dist/ already built\n'
      : 'sydent-ts: TypeScript and esbuild are not installed (dev dependencies omitted), so dist/ is not built and ' +
          '`npm start` cannot run: install with the dev dependencies (`npm ci`), or install the packed package (`npm pack`)\n',
  );
  process.exit(0);
}

const checked = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
if (checked.status !== 0) process.exit(checked.status ?? 1);
const { bundle } = await import('./bundle.mjs');
await bundle();
