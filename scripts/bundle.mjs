// The server as it runs: src/ and its dependencies bundled by esbuild into dist/bundle/main.mjs (with a chunk per
// command or subsystem loaded by `import()`: migrate-db, rotate-pepper, PostgreSQL, metrics, the inspector, Sentry).
// One file to read and compile instead of some two hundred modules to resolve, read and link at every start.
//
//   node scripts/bundle.mjs [--outdir DIR]     (default dist/bundle; `npm run build` runs it after tsc)
//
// The output sits two directories below the package root, as dist/config/paths.js does, so src/config/paths.ts
// finds the package's config/ and package.json from either. Dependencies loaded on first use through
// `createRequire(import.meta.url)` (undici, nodemailer, nunjucks, yaml, …) are not bundled: they resolve from
// node_modules at run time, as before. better-sqlite3 (a native addon) stays in node_modules too.
import { build } from 'esbuild';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Bundles src/main.ts into `outdir` (main.mjs and its chunks). */
export async function bundle(outdir = join(root, 'dist', 'bundle')) {
  await build({
    absWorkingDir: root,
    entryPoints: { main: 'src/main.ts' },
    outdir,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    outExtension: { '.js': '.mjs' },
    chunkNames: '[name]-[hash]',
    // Native addons (and pg's optional native client, never installed) load from node_modules. So do what fastify
    // requires only when asked: its schema compilers (src/http/lazy-schemas.ts loads them on a route's first
    // request) and light-my-request (`inject`, which the server never calls).
    external: [
      'better-sqlite3',
      'pg-native',
      '@fastify/ajv-compiler',
      '@fastify/fast-json-stringify-compiler',
      'light-my-request',
    ],
    // CommonJS dependencies inside an ES module bundle: their `require` of Node's own modules needs a real one.
    banner: {
      js: "import { createRequire as __sydentCreateRequire } from 'node:module'; const require = __sydentCreateRequire(import.meta.url);",
    },
    sourcemap: 'linked',
    logLevel: 'warning',
  });
  return join(outdir, 'main.mjs');
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const at = process.argv.indexOf('--outdir');
  await bundle(at === -1 ? undefined : resolve(process.argv[at + 1]));
}
