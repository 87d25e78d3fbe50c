// The server as it runs: src/ and its dependencies bundled by esbuild into dist/bundle/main.mjs (with a chunk per
// command or subsystem loaded by `import()`: migrate-db, rotate-pepper, PostgreSQL, metrics, the inspector, Sentry),
// and the mail worker's script beside it (mail-worker.cjs).
// A dozen files to read and compile instead of some 350 modules to resolve, read, compile and link at every start.
//
//   node scripts/bundle.mjs [--outdir DIR]     (default dist/bundle, emptied first; `npm run build` runs it after
//                                               TypeScript's type check)
//
// The output sits two directories below the package root, as src/config/paths.ts does, so the package's config/
// and package.json are found from either. Dependencies loaded on first use through
// `createRequire(import.meta.url)` (undici, nodemailer, nunjucks, yaml, …) are not bundled: they resolve from
// node_modules at run time, as before. better-sqlite3 (a native addon) stays in node_modules too.
import { build } from 'esbuild';
import { rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Bundles src/main.ts into `outdir` (main.mjs and its chunks), replacing what was there. */
export async function bundle(outdir = join(root, 'dist', 'bundle')) {
  // chunk names carry a hash of their content: the last build's would stay beside the new ones
  rmSync(outdir, { recursive: true, force: true });
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
    // request) and light-my-request (`inject`, which the server never calls). write-file-atomic names its
    // temporary files after its own `__filename`, which a module in an ES bundle does not have.
    external: [
      'better-sqlite3',
      'write-file-atomic',
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
  // Worker threads' own modules, each one CommonJS script beside the bundle (src/util/worker-script.ts reads it there;
  // run from the sources, it compiles the module with these same options).
  await build({
    absWorkingDir: root,
    entryPoints: { 'mail-worker': 'src/mail/mail-worker.ts' },
    outdir,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    outExtension: { '.js': '.cjs' },
    logLevel: 'warning',
  });
  return join(outdir, 'main.mjs');
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const at = process.argv.indexOf('--outdir');
  await bundle(at === -1 ? undefined : resolve(process.argv[at + 1]));
}
