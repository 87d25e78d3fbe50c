import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, ROOT, spawnServer, waitForStart, type ServerProcess } from './helpers/process.js';
import { tempDir } from './helpers/tmp.js';

const run = promisify(execFile);
const tmp = tempDir('sydent-ts-pack-');
let server: ServerProcess | undefined;
afterAll(() => {
  server?.child.kill('SIGKILL');
  tmp.cleanup();
});

/** npm with none of the npm_* settings of an `npm test` around us (they would steer the child npm). */
function npm(args: string[], cwd: string, env: Record<string, string> = {}) {
  const clean: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !/^npm_/i.test(k)) clean[k] = v;
  return run('npm', args, { cwd, env: { ...clean, ...env }, maxBuffer: 16 * 1024 * 1024 });
}

/**
 * A copy of the checkout (its own dist/, which `npm pack` empties and rebuilds), sharing node_modules: the pack
 * runs the package's real prepack/prepare scripts without touching the checkout that runs the tests.
 */
function copyCheckout(to: string): void {
  const skip = new Set(['node_modules', 'dist', '.git']);
  fs.cpSync(ROOT, to, { recursive: true, filter: (src) => !skip.has(path.relative(ROOT, src)) });
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(to, 'node_modules'));
}

/**
 * better-sqlite3's install script fetches a prebuilt binary from outside the registry, which this machine cannot
 * reach, and then compiles for minutes. Its prebuild-install takes a local prebuild instead: the binary the
 * checkout's own install built, same version and ABI, packed under the name it looks for.
 */
async function localSqlitePrebuild(dir: string): Promise<Record<string, string>> {
  const pkg = path.join(ROOT, 'node_modules/better-sqlite3');
  const { version } = JSON.parse(fs.readFileSync(path.join(pkg, 'package.json'), 'utf8')) as { version: string };
  const name = `better-sqlite3-v${version}-node-v${process.versions.modules}-${process.platform}-${process.arch}.tar.gz`;
  await run('tar', ['czf', path.join(dir, name), '-C', pkg, 'build/Release/better_sqlite3.node']);
  return { npm_config_better_sqlite3_local_prebuilds: dir };
}

describe('the packed package', () => {
  it(
    'packs dist/ (no tests), installs with --omit=dev into an empty folder and serves from there',
    { timeout: 600_000 },
    async () => {
      const checkout = path.join(tmp.dir, 'checkout');
      const packs = path.join(tmp.dir, 'packs');
      const prebuilds = path.join(tmp.dir, 'prebuilds');
      const site = path.join(tmp.dir, 'site');
      for (const d of [packs, prebuilds, site]) fs.mkdirSync(d);
      copyCheckout(checkout);

      await npm(['pack', '--pack-destination', packs], checkout);
      const [tarball] = fs.readdirSync(packs);
      expect(tarball).toMatch(/^sydent-ts-.*\.tgz$/);
      const { stdout: listing } = await run('tar', ['tzf', path.join(packs, tarball!)]);
      const files = listing
        .split('\n')
        .filter(Boolean)
        .map((f) => f.replace(/^package\//, ''));
      for (const f of [
        'dist/bundle/main.mjs',
        'bin/sydent-ts.js',
        'LICENSE',
        'README.md',
        'CHANGELOG.md',
        'docs/OPERATING.md',
        'config/sydent.conf.sample',
        'config/sydent-ts.service',
      ]) {
        expect(files).toContain(f);
      }
      expect(files.some((f) => f.startsWith('config/templates/matrix-org/'))).toBe(true);
      expect(files.some((f) => f.startsWith('docs/machines/'))).toBe(true);
      expect(
        files.filter((f) => /^(test|bench|src)\//.test(f) || f.endsWith('.map') || f.includes('tsbuildinfo')),
      ).toEqual([]);

      const env = await localSqlitePrebuild(prebuilds);
      await npm(
        ['install', '--omit=dev', '--prefer-offline', '--no-audit', '--no-fund', path.join(packs, tarball!)],
        site,
        env,
      );
      const bin = path.join(site, 'node_modules/sydent-ts/bin/sydent-ts.js');
      expect(fs.existsSync(path.join(site, 'node_modules/.bin/sydent-ts'))).toBe(true);
      expect(fs.existsSync(path.join(site, 'node_modules/typescript'))).toBe(false);

      // A throwaway config of one's own, in a folder of its own; the templates are the package's.
      const work = path.join(tmp.dir, 'work');
      fs.mkdirSync(work);
      const port = await freePort();
      const conf = path.join(work, 'sydent.conf');
      fs.writeFileSync(
        conf,
        `[general]\nserver.name = pack.example.test\n[http]\nclientapi.http.port = ${port}\nclientapi.http.bind_address = 127.0.0.1\n`,
      );
      server = spawnServer({ cwd: work, bin, args: ['--config', conf] });
      await waitForStart(server, 30_000);
      const res = await fetch(`http://127.0.0.1:${port}/_matrix/identity/versions`);
      expect(res.status).toBe(200);
      expect(((await res.json()) as { versions: string[] }).versions).toContain('v1.1');
      expect(fs.existsSync(path.join(work, 'sydent.db'))).toBe(true);
      server.child.kill('SIGTERM');
      expect(await server.exited).toBe(0);
    },
  );
});
