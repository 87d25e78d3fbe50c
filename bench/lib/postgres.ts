/**
 * PostgreSQL for the bench: one throwaway server per bench process (test/helpers/postgres-server.ts, as the tests
 * use: Debian's package, initdb in a temp dir, fsync off), started on first use and stopped by `stopBenchPostgres`
 * (bench/run.ts calls it at the end); databases on it, each new one empty or a copy of a template that was loaded
 * once by `sydent-ts migrate-db` from a cached SQLite file (the way an operator moves a database over).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import pg from 'pg';

import { startPostgresServer, type PostgresServer } from '../../test/helpers/postgres-server.js';
import { ROOT, TSX_LOADER } from './child.js';
import { cpuSeconds, cpuSecondsWithEndedChildren, statFields } from './proc-cpu.js';

/** The store engines a scenario can run on (`npm run bench -- --engine sqlite,postgresql`). */
export type Engine = 'sqlite' | 'postgresql';
export const ENGINES: readonly Engine[] = ['sqlite', 'postgresql'];

let server: Promise<PostgresServer> | null = null;

/** This bench process's PostgreSQL server, started on the first call. */
export function benchPostgres(): Promise<PostgresServer> {
  if (!server) {
    server = startPostgresServer();
    server.catch(() => (server = null));
  }
  return server;
}

/** Stops the server if one was started; safe to call twice. */
export async function stopBenchPostgres(): Promise<void> {
  const running = server;
  server = null;
  if (running) await (await running).stop();
}

/** The URL of database `name` on the bench's server. */
async function databaseUrl(name: string): Promise<string> {
  const url = new URL((await benchPostgres()).adminUrl);
  url.pathname = `/${name}`;
  return url.href;
}

/** One statement as the superuser, on the `postgres` database unless `url` says another. */
export async function adminQuery<R extends pg.QueryResultRow = pg.QueryResultRow>(
  sql: string,
  params: unknown[] = [],
  url?: string,
): Promise<R[]> {
  const client = new pg.Client({ connectionString: url ?? (await benchPostgres()).adminUrl });
  await client.connect();
  try {
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

export interface MigrateRun {
  seconds: number;
  stdout: string;
  stderr: string;
}

/** `sydent-ts migrate-db <args>` in its own process (src/main.ts through tsx), as an operator runs it; timed. */
export async function runMigrateDb(args: string[], cwd: string, echo = false): Promise<MigrateRun> {
  const started = performance.now();
  const child = spawn(
    process.execPath,
    ['--import', TSX_LOADER, path.join(ROOT, 'src/main.ts'), 'migrate-db', ...args],
    {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stderr = '';
  let stdout = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
    if (echo) process.stderr.write(d);
  });
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  const seconds = (performance.now() - started) / 1000;
  if (code !== 0) throw new Error(`migrate-db exited with ${code}:\n${stderr}`);
  return { seconds, stderr, stdout };
}

/**
 * Writes the server's file system's dirty pages out now (`sync -f`): the server runs with fsync off, so a copied
 * database of hundreds of megabytes would otherwise be written back by the kernel about 30 s later, in the middle of
 * whatever is measured then (as bench/lib/db-cache.ts's flushToDisk does for the SQLite copies).
 */
async function flushFileSystem(): Promise<void> {
  const { dir } = await benchPostgres();
  await new Promise<void>((resolve, reject) =>
    spawn('sync', ['-f', dir], { stdio: 'ignore' })
      .on('error', reject)
      .on('close', (code) => (code === 0 ? resolve() : reject(new Error(`sync -f exited with ${code}`)))),
  );
}

let databases = 0;
const templates = new Map<string, Promise<{ name: string; migrateS: number }>>();

/**
 * A template database holding the SQLite file `sqliteFile`, migrated into PostgreSQL on the first call for `key`
 * (by `migrate-db`), then analysed so that the first queries on its copies have the planner's statistics.
 */
export function templateDatabase(key: string, sqliteFile: string): Promise<{ name: string; migrateS: number }> {
  let made = templates.get(key);
  if (!made) {
    made = (async () => {
      const name = `template_${key.replace(/\W/g, '_').toLowerCase()}`;
      await adminQuery(`CREATE DATABASE ${name}`);
      const url = await databaseUrl(name);
      const run = await runMigrateDb(['--to', url, '--from', `sqlite:${sqliteFile}`], path.dirname(sqliteFile));
      // Frozen and hinted once here, with the planner's statistics, rather than by the first reads (which would
      // dirty every page they touch) or autovacuum on each copy in the middle of a measurement; then written out.
      await adminQuery('VACUUM (FREEZE, ANALYZE)', [], url);
      await adminQuery('CHECKPOINT');
      await flushFileSystem();
      return { name, migrateS: run.seconds };
    })();
    made.catch(() => templates.delete(key));
    templates.set(key, made);
  }
  return made;
}

/**
 * A new database on the bench's server: empty (the server creates its schema on start), or a file copy of
 * `template`. Dropped by the returned `drop()`.
 */
export async function newDatabase(
  template?: string,
): Promise<{ url: string; name: string; drop: () => Promise<void> }> {
  const name = `bench_${process.pid}_${++databases}`;
  await adminQuery(
    template ? `CREATE DATABASE ${name} TEMPLATE ${template} STRATEGY FILE_COPY` : `CREATE DATABASE ${name}`,
  );
  if (template) await flushFileSystem();
  return {
    url: await databaseUrl(name),
    name,
    drop: () => adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).then(() => undefined),
  };
}

/**
 * CPU seconds (user + system) of the bench's PostgreSQL so far: the postmaster, the children it has reaped (a backend
 * that ended: its time is the postmaster's cutime and cstime from then on) and those alive now.
 */
export async function postgresCpuSeconds(): Promise<number | null> {
  const s = await benchPostgres();
  let postmaster: number;
  try {
    postmaster = Number(fs.readFileSync(path.join(s.dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return null;
  }
  let total = cpuSecondsWithEndedChildren(postmaster);
  if (total === null) return null;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(statFields(stat)[1]);
      if (ppid === postmaster) total += cpuSeconds(Number(entry)) ?? 0;
    } catch {
      // the process ended meanwhile
    }
  }
  return total;
}
