import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT, spawnTs, waitReady, type TsProcess } from './child.js';
import { freePort } from './ports.js';
import { profilerEnv } from './profiler.js';

/** sydent.conf values by section: `{ email: { 'email.smtpport': '2525' } }`. */
export type ConfSections = Record<string, Record<string, string>>;

export interface StartSydentOptions {
  /** merged over the bench defaults, key by key */
  conf?: ConfSections;
  /**
   * Called with the database path before the server starts, the file not yet existing: a scenario may create it
   * (e.g. open it with src/store/database.js's openDatabase, which applies the migrations, and bulk-insert rows).
   */
  prepareDb?: (dbPath: string) => void | Promise<void>;
  /** how long to wait for the server to listen; default 20 s (a large prepared database may need more) */
  startTimeoutMs?: number;
  /**
   * the checkout whose src/main.ts to run (default: this one): another copy of the project, e.g. the code before a
   * change, for bench/interleaved.ts's before/after comparisons
   */
  root?: string;
  /** extra environment for the server process */
  env?: NodeJS.ProcessEnv;
  /** a built server (`…/main.mjs`, see build.ts) run by plain `node` instead of src/main.ts through tsx */
  builtMain?: string;
  /** `db.engine = postgresql` on this database (bench/lib/postgres.ts) instead of the SQLite file */
  pgUrl?: string;
}

export interface SydentProcess {
  /** `http://127.0.0.1:<port>` */
  baseUrl: string;
  port: number;
  /** the temp directory: config, database, pid file */
  dir: string;
  confPath: string;
  dbPath: string;
  /** the PostgreSQL database it runs on, or null on SQLite (`dbPath`) */
  pgUrl: string | null;
  process: TsProcess;
  /** SIGTERM, wait for the exit, remove the temp directory; safe to call twice */
  stop(): Promise<void>;
}

export const SERVER_NAME = 'bench.test';

function formatConf(sections: ConfSections): string {
  return (
    Object.entries(sections)
      .map(([name, values]) => [`[${name}]`, ...Object.entries(values).map(([k, v]) => `${k} = ${v}`)].join('\n'))
      .join('\n\n') + '\n'
  );
}

/**
 * Starts sydent-ts as its own process (`node --import tsx src/main.ts --config <file>`) in a fresh temp directory,
 * on a free loopback port, with `log.level = WARNING`.
 */
export async function startSydent(opts: StartSydentOptions = {}): Promise<SydentProcess> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sydent-bench-'));
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const confPath = path.join(dir, 'sydent.conf');
  const dbPath = path.join(dir, 'sydent.db');
  const sections: ConfSections = {
    general: { 'server.name': SERVER_NAME, 'log.level': 'WARNING', 'pidfile.path': path.join(dir, 'sydent.pid') },
    db: opts.pgUrl ? { 'db.engine': 'postgresql', 'db.url': opts.pgUrl } : { 'db.file': dbPath },
    http: {
      'clientapi.http.bind_address': '127.0.0.1',
      'clientapi.http.port': String(port),
      client_http_base: baseUrl,
    },
  };
  for (const [section, values] of Object.entries(opts.conf ?? {}))
    sections[section] = { ...sections[section], ...values };
  // it holds the signing key: readable by its owner only, as the server asks (and warns otherwise)
  fs.writeFileSync(confPath, formatConf(sections), { mode: 0o600 });

  const cleanup = () => fs.rmSync(dir, { recursive: true, force: true });
  try {
    if (opts.prepareDb) await opts.prepareDb(dbPath);
  } catch (error) {
    cleanup();
    throw error;
  }
  // BENCH_CPU_PROF: every server is profiled (see profiler.ts)
  const env = { ...profilerEnv(), ...opts.env };
  const proc = opts.builtMain
    ? spawnTs(opts.builtMain, ['--config', confPath], { cwd: dir, env, tsx: false })
    : spawnTs(path.join(opts.root ?? ROOT, 'src/main.ts'), ['--config', confPath], { cwd: dir, env });
  try {
    await waitReady(proc, {
      marker: 'sydent-ts started',
      probeUrl: `${baseUrl}/_matrix/identity/versions`,
      timeoutMs: opts.startTimeoutMs ?? 20_000,
    });
  } catch (error) {
    await proc.stop(2000);
    cleanup();
    throw error;
  }
  let stopping: Promise<void> | null = null;
  return {
    baseUrl,
    port,
    dir,
    confPath,
    dbPath,
    pgUrl: opts.pgUrl ?? null,
    process: proc,
    stop: () =>
      (stopping ??= (async () => {
        const code = await proc.stop();
        cleanup();
        if (code !== 0) process.stderr.write(`bench: sydent-ts exited with ${code}\n${proc.stderr()}\n`);
      })()),
  };
}
