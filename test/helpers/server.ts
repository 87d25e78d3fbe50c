import fs from 'node:fs';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import { ManualClock, type Clock } from '../../src/clock.js';
import { loadConfig } from '../../src/config/index.js';
import type { SydentConfig } from '../../src/config/types.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { testDatabase } from './postgres.js';
import { registerPgDatabase } from './rows.js';
import { tempDir } from './tmp.js';

/** The engine test servers run on unless a test names one: SQLite, or $SYDENT_TEST_DB_ENGINE. */
export function testEngine(): 'sqlite' | 'postgresql' {
  const engine = process.env['SYDENT_TEST_DB_ENGINE'] ?? 'sqlite';
  if (engine !== 'sqlite' && engine !== 'postgresql')
    throw new Error(`SYDENT_TEST_DB_ENGINE must be sqlite or postgresql, not ${engine}`);
  return engine;
}

export interface TestServer {
  server: RunningServer;
  config: SydentConfig;
  dir: string;
  clock: Clock;
  /** the client API URL of `p` */
  url(p: string): string;
  /** the internal API URL of `p` */
  internalUrl(p: string): string;
  close(): Promise<void>;
}

export interface TestServerOptions {
  /** sydent.conf values by section, merged over the test defaults */
  conf?: Record<string, Record<string, string>>;
  /** an existing directory (to restart a server on the same files) */
  dir?: string;
  clock?: Clock;
  /** change the parsed config before start */
  adjust?: (config: SydentConfig) => void;
  internal?: boolean;
  /** start the Stately inspector relay on a free loopback port */
  inspect?: boolean;
  /** the server's logger (default: silent) */
  log?: Logger;
  /**
   * the database engine (default: $SYDENT_TEST_DB_ENGINE, else sqlite); postgresql gives the server a database of
   * its own on the test run's PostgreSQL, dropped at close
   */
  engine?: 'sqlite' | 'postgresql';
}

/**
 * A sydent-ts started in-process on loopback with free ports, its config and database in a temp directory.
 * The config goes through the real loader, so tests exercise what an operator writes.
 */
export async function startTestServer(opts: TestServerOptions = {}): Promise<TestServer> {
  const tmp = opts.dir ? { dir: opts.dir, cleanup: () => undefined } : tempDir();
  const confPath = path.join(tmp.dir, 'sydent.conf');
  let dropDatabase = async (): Promise<void> => undefined;
  if (!fs.existsSync(confPath)) {
    const engine = opts.engine ?? testEngine();
    const pgDb = engine === 'postgresql' ? await testDatabase() : null;
    if (pgDb) dropDatabase = pgDb.drop;
    const sections: Record<string, Record<string, string>> = {
      general: { 'server.name': 'is.example.test' },
      db: {
        'db.file': path.join(tmp.dir, 'sydent.db'),
        ...(pgDb ? { 'db.engine': 'postgresql', 'db.url': pgDb.url } : {}),
      },
      http: {
        'clientapi.http.bind_address': '127.0.0.1',
        'clientapi.http.port': '8090',
        client_http_base: 'https://is.example.test',
        ...(opts.internal === false
          ? {}
          : { 'internalapi.http.bind_address': '127.0.0.1', 'internalapi.http.port': '8091' }),
      },
    };
    for (const [section, values] of Object.entries(opts.conf ?? {})) {
      sections[section] = { ...sections[section], ...values };
    }
    const text = Object.entries(sections)
      .map(([name, values]) => [`[${name}]`, ...Object.entries(values).map(([k, v]) => `${k} = ${v}`)].join('\n'))
      .join('\n\n');
    fs.writeFileSync(confPath, `${text}\n`);
  }
  const { config } = loadConfig({ configPath: confPath, env: {}, cwd: tmp.dir });
  // Free ports chosen by the kernel, so tests run in parallel.
  config.http.clientApi.port = 0;
  if (config.http.internalApi) config.http.internalApi.port = 0;
  opts.adjust?.(config);
  if (config.db.engine === 'postgresql' && config.db.url) registerPgDatabase(config.db.dbFile, config.db.url);
  const clock = opts.clock ?? new ManualClock(Date.now());
  let server: RunningServer;
  try {
    server = await startServer({
      config,
      log: opts.log ?? pino({ level: 'silent' }),
      clock,
      ...(opts.inspect ? { inspectPort: 0 } : {}),
    });
  } catch (err) {
    await dropDatabase();
    throw err;
  }
  return {
    server,
    config,
    dir: tmp.dir,
    clock,
    url: (p) => server.clientUrl + p,
    internalUrl: (p) => {
      if (!server.internalUrl) throw new Error('no internal listener');
      return server.internalUrl + p;
    },
    close: async () => {
      await server.close();
      if (!opts.dir) {
        tmp.cleanup();
        await dropDatabase();
      }
    },
  };
}
