/**
 * `sydent-ts migrate-db` of a sydent.db with 1,000,000 associations (bench/lib/associations-db.ts: each in the local
 * and the global table, 2,000,002 rows in all) into PostgreSQL, and back into a new SQLite file: wall-clock time of
 * each run of the command, as an operator runs it (its own process, from the TypeScript sources via tsx).
 *
 * PostgreSQL is the throwaway server the tests use (test/helpers/postgres-server.ts: Debian's package, initdb in a
 * temp dir, fsync off), on this machine. Not part of `npm run bench` (which measures HTTP); run on its own:
 *
 *   npm run bench:migrate-db                      # 1,000,000 associations
 *   npm run bench:migrate-db -- --count 100000    # fewer
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import pg from 'pg';

import { startPostgresServer } from '../test/helpers/postgres-server.js';
import { associationsFile } from './lib/associations-db.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TSX = pathToFileURL(path.join(ROOT, 'node_modules/tsx/dist/loader.mjs')).href;
const GOAL_S = 60;

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function run(args: string[], cwd: string): Promise<{ seconds: number; stderr: string; stdout: string }> {
  const started = performance.now();
  const child = spawn(process.execPath, ['--import', TSX, path.join(ROOT, 'src/main.ts'), 'migrate-db', ...args], {
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  let stdout = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
    process.stderr.write(d);
  });
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  const seconds = (performance.now() - started) / 1000;
  if (code !== 0) throw new Error(`migrate-db exited with ${code}:\n${stderr}`);
  return { seconds, stderr, stdout };
}

async function main(): Promise<void> {
  const count = Number(arg('--count') ?? 1_000_000);
  const built = await associationsFile({ count });
  process.stderr.write(
    `bench: ${count.toLocaleString('en')} associations in ${built.file} (${(fs.statSync(built.file).size / 2 ** 20).toFixed(0)} MiB)\n`,
  );
  const server = await startPostgresServer();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sydent-bench-migrate-'));
  try {
    const admin = new pg.Client({ connectionString: server.adminUrl });
    await admin.connect();
    await admin.query('CREATE DATABASE bench');
    await admin.end();
    const url = new URL(server.adminUrl);
    url.pathname = '/bench';

    const forward = await run(['--to', url.href, '--from', `sqlite:${built.file}`], dir);
    const back = path.join(dir, 'back.db');
    const reverse = await run(['--to', `sqlite:${back}`, '--from', url.href], dir);

    const rows = /verified: \d+ tables, ([\d,]+) rows/.exec(forward.stderr)?.[1] ?? '?';
    const lines = [
      `- date: ${new Date().toISOString()}`,
      `- machine: ${os.cpus()[0]?.model ?? '?'}, ${os.cpus().length} cores, load average at the end ${os.loadavg()[0]!.toFixed(2)} (1 min)`,
      `- PostgreSQL ${server.version} (throwaway, fsync off), Node ${process.version}`,
      `- ${count.toLocaleString('en')} associations, ${rows} rows copied and verified`,
      `- **sqlite → PostgreSQL: ${forward.seconds.toFixed(1)} s** (goal < ${GOAL_S} s: ${forward.seconds < GOAL_S ? 'met' : 'NOT met'})`,
      `- PostgreSQL → sqlite: ${reverse.seconds.toFixed(1)} s`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
