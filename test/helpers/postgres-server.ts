/**
 * A throwaway PostgreSQL server: `initdb` in a temp directory, started with `pg_ctl` on a free loopback port,
 * stopped and removed by `stop()`. One per test run (vitest's globalSetup, test/helpers/postgres-setup.ts) and one
 * per bench run. Debian's `postgresql` package provides the binaries (scripts/install-test-deps.sh installs it).
 *
 * PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user (the package creates it).
 * Host connections need the superuser's password (scram-sha-256), so that tests can see a wrong password refused.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** A running server, as plain data: it is handed between processes (test/helpers/postgres.ts). */
export interface PostgresServerInfo {
  /** postgresql://postgres:PASSWORD@127.0.0.1:PORT/postgres */
  adminUrl: string;
  host: string;
  port: number;
  user: string;
  password: string;
  /** the server's major version, e.g. "15" */
  version: string;
  /** the temp directory holding the cluster (removed on stop) */
  dir: string;
  binDir: string;
  runAs: RunAs;
}

export interface PostgresServer extends PostgresServerInfo {
  stop(): Promise<void>;
}

/** Thrown with the reason PostgreSQL could not be started; tests that need it fail with this message. */
export class PostgresUnavailable extends Error {
  override readonly name = 'PostgresUnavailable';
}

/** The directory holding initdb, pg_ctl and postgres: $PG_BINDIR, else the newest /usr/lib/postgresql/N/bin. */
export function postgresBinDir(): string {
  const fromEnv = process.env['PG_BINDIR'];
  if (fromEnv) {
    if (!fs.existsSync(path.join(fromEnv, 'initdb')))
      throw new PostgresUnavailable(`PG_BINDIR=${fromEnv} has no initdb`);
    return fromEnv;
  }
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root)
    ? fs
        .readdirSync(root)
        .filter((v) => fs.existsSync(path.join(root, v, 'bin', 'initdb')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions.length === 0) {
    throw new PostgresUnavailable(
      'PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run `bash scripts/install-test-deps.sh` as root ' +
        '(apt-get install postgresql), or set PG_BINDIR',
    );
  }
  return path.join(root, versions[0]!, 'bin');
}

export interface RunAs {
  uid?: number;
  gid?: number;
}

/** As root: the `postgres` user's ids; otherwise the current user runs the server. */
function runAs(): RunAs {
  if (process.getuid?.() !== 0) return {};
  let line: string | undefined;
  try {
    line = fs
      .readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('postgres:'));
  } catch {
    // no passwd file: reported below
  }
  const [, , uid, gid] = line?.split(':') ?? [];
  if (uid === undefined || gid === undefined) {
    throw new PostgresUnavailable(
      'running as root and there is no `postgres` user to run PostgreSQL as (the postgresql package creates it)',
    );
  }
  return { uid: Number(uid), gid: Number(gid) };
}

function run(bin: string, args: string[], as: RunAs, env: NodeJS.ProcessEnv = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, {
      ...as,
      // The postgres user cannot enter root's working directory.
      cwd: os.tmpdir(),
      env: { PATH: process.env['PATH'], LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.on('error', (err) => reject(new PostgresUnavailable(`${path.basename(bin)}: ${err.message}`)));
    child.on('close', (code) => {
      if (code === 0) resolve(out);
      else reject(new PostgresUnavailable(`${path.basename(bin)} ${args[0] ?? ''} exited with ${code}: ${out.trim()}`));
    });
  });
}

function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts a new PostgreSQL server. Rejects with PostgresUnavailable (saying why) when it cannot: not installed, no
 * user to run it as, initdb or pg_ctl failing.
 */
export async function startPostgresServer(): Promise<PostgresServer> {
  const bin = postgresBinDir();
  const as = runAs();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sydent-ts-pg-'));
  const data = path.join(dir, 'data');
  const password = `pw-${Math.random().toString(36).slice(2)}`;
  const pwfile = path.join(dir, 'pwfile');
  fs.writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
  if (as.uid !== undefined) {
    fs.chownSync(dir, as.uid, as.gid!);
    fs.chownSync(pwfile, as.uid, as.gid!);
  }
  const removeDir = () => fs.rmSync(dir, { recursive: true, force: true });
  try {
    await run(
      path.join(bin, 'initdb'),
      [
        '-D',
        data,
        '-U',
        'postgres',
        '--pwfile',
        pwfile,
        '--auth-host=scram-sha-256',
        '--auth-local=trust',
        '-E',
        'UTF8',
        '--locale=C.UTF-8',
        '--no-sync',
      ],
      as,
    );
    // A throwaway server: durability is not wanted, speed is. The socket goes in our directory (Debian's default,
    // /var/run/postgresql, may not exist or belong to someone else).
    fs.appendFileSync(
      path.join(data, 'postgresql.conf'),
      [
        "listen_addresses = '127.0.0.1'",
        `unix_socket_directories = '${dir}'`,
        'max_connections = 300',
        'fsync = off',
        'synchronous_commit = off',
        'full_page_writes = off',
        "shared_buffers = '256MB'",
        'max_wal_size = 4GB',
        '',
      ].join('\n'),
    );
    let lastError: unknown;
    // The port is free when asked, but another process may take it before the server binds it: try again.
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freeLoopbackPort();
      try {
        await run(
          path.join(bin, 'pg_ctl'),
          ['start', '-w', '-t', '60', '-D', data, '-l', path.join(dir, 'log'), '-o', `-p ${port}`],
          as,
        );
      } catch (err) {
        lastError = err;
        const log = fs.existsSync(path.join(dir, 'log')) ? fs.readFileSync(path.join(dir, 'log'), 'utf8') : '';
        if (/could not bind|address already in use/i.test(log)) continue;
        throw new PostgresUnavailable(`${(err as Error).message}\n${log.trim()}`);
      }
      const version = (await run(path.join(bin, 'postgres'), ['--version'], as)).match(/(\d+)/)?.[1] ?? '?';
      const info: PostgresServerInfo = {
        adminUrl: `postgresql://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`,
        host: '127.0.0.1',
        port,
        user: 'postgres',
        password,
        version,
        dir,
        binDir: bin,
        runAs: as,
      };
      let stopped = false;
      return {
        ...info,
        stop: () => (stopped ? Promise.resolve() : ((stopped = true), stopPostgresServer(info))),
      };
    }
    throw lastError;
  } catch (err) {
    removeDir();
    throw err instanceof PostgresUnavailable ? err : new PostgresUnavailable(String((err as Error).message ?? err));
  }
}

/** Stops a server started by startPostgresServer (in this process or another) and removes its files. */
export async function stopPostgresServer(info: PostgresServerInfo): Promise<void> {
  try {
    await run(
      path.join(info.binDir, 'pg_ctl'),
      ['stop', '-w', '-m', 'immediate', '-D', path.join(info.dir, 'data')],
      info.runAs,
    );
  } finally {
    fs.rmSync(info.dir, { recursive: true, force: true });
  }
}

// ---- one server shared by the worker processes of a test run, described by a file in the run's directory ----

export const STARTING_FILE = 'starting';
const STATE_FILE = 'server.json';

export type ServerState = { server: PostgresServerInfo } | { error: string };

export function readServerState(runDir: string): ServerState | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(runDir, STATE_FILE), 'utf8')) as ServerState;
  } catch {
    return undefined;
  }
}

export function writeServerState(runDir: string, state: ServerState): void {
  // Written whole, then renamed: a waiting worker never reads half of it.
  const tmp = path.join(runDir, `${STATE_FILE}.${process.pid}`);
  fs.writeFileSync(tmp, JSON.stringify(state), { mode: 0o600 });
  fs.renameSync(tmp, path.join(runDir, STATE_FILE));
}
