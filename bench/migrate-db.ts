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
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import pg from 'pg';

import { startPostgresServer } from '../test/helpers/postgres-server.js';
import { associationsFile } from './lib/associations-db.js';
import { runMigrateDb } from './lib/postgres.js';

const GOAL_S = 60;

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
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

    const forward = await runMigrateDb(['--to', url.href, '--from', `sqlite:${built.file}`], dir, true);
    const back = path.join(dir, 'back.db');
    const reverse = await runMigrateDb(['--to', `sqlite:${back}`, '--from', url.href], dir, true);

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
