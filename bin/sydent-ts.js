#!/usr/bin/env node
// The installed command (and `npm start`): runs the built server (one bundled file, scripts/bundle.mjs) in the
// current working directory.
import { existsSync } from 'node:fs';

const main = new URL('../dist/bundle/main.mjs', import.meta.url);
if (!existsSync(main)) {
  // A clone installed without its dev dependencies has no compiler or bundler, so nothing built dist/.
  process.stderr.write(
    'sydent-ts: dist/ is not built: run `npm run build` (it needs the dev dependencies, `npm ci`)\n',
  );
  process.exit(1);
}
await import(main.href);
