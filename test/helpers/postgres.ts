/**
 * PostgreSQL for tests: one server per test run, started by the first test that needs it (whichever worker process
 * that is; the others wait for it), stopped at the end of the run (test/helpers/postgres-setup.ts); and a database
 * of its own for each test, so that tests run in parallel.
 *
 *   const db = await testDatabase();   // { url, name, drop() }
 *   cleanups.push(db.drop);
 *
 * When PostgreSQL cannot be started, testDatabase() rejects saying why, and the test fails with that: never skips.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import pg from 'pg';
import { inject } from 'vitest';

import {
  PostgresUnavailable,
  readServerState,
  startPostgresServer,
  STARTING_FILE,
  writeServerState,
  type PostgresServerInfo,
} from './postgres-server.js';

const START_TIMEOUT_MS = 180_000;

let shared: Promise<PostgresServerInfo> | undefined;

/** This run's PostgreSQL server, started on the first call of the whole run. */
export function postgresServer(): Promise<PostgresServerInfo> {
  shared ??= startOrJoin();
  return shared;
}

async function startOrJoin(): Promise<PostgresServerInfo> {
  const runDir = inject('postgresRunDir');
  if (!runDir)
    throw new PostgresUnavailable(
      'no postgresRunDir: vitest.config.ts must list test/helpers/postgres-setup.ts in globalSetup',
    );
  let starter = false;
  try {
    fs.writeFileSync(path.join(runDir, STARTING_FILE), String(process.pid), { flag: 'wx' });
    starter = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  if (starter) {
    try {
      writeServerState(runDir, { server: await startPostgresServer() });
    } catch (err) {
      writeServerState(runDir, { error: (err as Error).message });
    }
  }
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    const state = readServerState(runDir);
    if (state && 'server' in state) return state.server;
    if (state) throw new PostgresUnavailable(`PostgreSQL for the tests could not be started: ${state.error}`);
    if (Date.now() > deadline)
      throw new PostgresUnavailable(`PostgreSQL for the tests did not start in ${START_TIMEOUT_MS / 1000} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface TestDatabase {
  /** postgresql://postgres:PASSWORD@127.0.0.1:PORT/NAME */
  url: string;
  name: string;
  server: PostgresServerInfo;
  /** drops the database, closing whatever connections are left on it */
  drop: () => Promise<void>;
}

/** A new, empty database on this run's server, for one test. */
export async function testDatabase(): Promise<TestDatabase> {
  const server = await postgresServer();
  const name = `sydent_test_${process.pid}_${randomBytes(6).toString('hex')}`;
  await admin(server, `CREATE DATABASE ${name}`);
  const url = new URL(server.adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.href,
    name,
    server,
    drop: () => admin(server, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
  };
}

async function admin(server: PostgresServerInfo, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: server.adminUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/** A client on `url`, connected; the caller ends it. */
export async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  return client;
}
