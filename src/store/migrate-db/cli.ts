/**
 * `sydent-ts [--config PATH] migrate-db --to postgresql://… [--from sqlite:PATH]`: a sydent.db (the configured one
 * unless --from names another) into an empty PostgreSQL database.
 * `sydent-ts migrate-db --to sqlite:PATH [--from postgresql://…]`: back into a new sydent.db (from --from, else
 * SYDENT_DB_URL).
 * Progress on stderr; the config lines that switch the server over on stdout at the end. Exit 0 only when the copy
 * is complete and verified.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';

import { ConfigError, loadConfig } from '../../config/index.js';
import { splitConfig, type CliIo } from '../../replication/cli.js';
import { StartupError } from '../../startup-error.js';
import { isPgUrl, PgConnectError, redactPgUrl } from '../pg/connect.js';
import { MigrateDbError } from './errors.js';
import { sqliteToPostgres } from './to-postgres.js';
import { postgresToSqlite } from './to-sqlite.js';
import { errorMessage } from '../../util/error-message.js';

export const MIGRATE_DB_USAGE = [
  'usage: sydent-ts [--config PATH] migrate-db --to postgresql://USER:PASSWORD@HOST:PORT/DB [--from sqlite:PATH] [--batch-rows N]',
  '       sydent-ts migrate-db --to sqlite:PATH [--from postgresql://USER:PASSWORD@HOST:PORT/DB] [--batch-rows N]',
  '  Copies the database into an empty PostgreSQL database (from the configured [db] db.file unless --from names',
  '  another), or back into a new SQLite file (from --from, else $SYDENT_DB_URL). Stop the server first.',
  '  An interrupted copy into PostgreSQL goes on where it stopped when run again with the same source.',
  '  The password may be left out of the URL: PGPASSWORD or ~/.pgpass supply it.',
].join('\n');

export interface MigrateDbIo extends CliIo {
  tty: boolean;
}

type Place = { kind: 'postgresql'; url: string } | { kind: 'sqlite'; path: string };

class UsageError extends Error {}

function parsePlace(value: string, cwd: string, option: string): Place {
  if (isPgUrl(value)) return { kind: 'postgresql', url: value };
  if (value.startsWith('sqlite:')) {
    const path = value.slice('sqlite:'.length);
    if (!path) throw new UsageError(`${option} sqlite: needs a path (sqlite:/var/lib/sydent/sydent.db)`);
    return { kind: 'sqlite', path: resolve(cwd, path) };
  }
  throw new UsageError(`${option} ${redactPgUrl(value)}: expected postgresql://… or sqlite:PATH`);
}

interface Args {
  configPath: string | undefined;
  to: Place;
  from: Place | undefined;
  batchRows: number | undefined;
}

function parseArgs(argv: string[], cwd: string): Args {
  const { configPath, rest } = splitConfig(argv);
  let to: Place | undefined;
  let from: Place | undefined;
  let batchRows: number | undefined;
  for (let i = 1; i < rest.length; i++) {
    const arg = rest[i]!;
    const [name, inline] =
      arg.startsWith('--') && arg.includes('=')
        ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)]
        : [arg, undefined];
    const value = () => {
      const v = inline ?? rest[++i];
      if (!v) throw new UsageError(`${name} needs a value`);
      return v;
    };
    if (name === '--to') to = parsePlace(value(), cwd, '--to');
    else if (name === '--from') from = parsePlace(value(), cwd, '--from');
    else if (name === '--batch-rows') {
      batchRows = Number(value());
      if (!Number.isInteger(batchRows) || batchRows < 1 || batchRows > 1_000_000)
        throw new UsageError('--batch-rows takes a whole number from 1 to 1000000');
    } else throw new UsageError(`unknown argument: ${redactPgUrl(arg)}`);
  }
  if (!to) throw new UsageError('--to is required');
  if (from && from.kind === to.kind)
    throw new UsageError(`--from and --to are both ${to.kind}: one of them must be the other engine`);
  return { configPath, to, from, batchRows };
}

/** The configured database file, for a copy with no --from. */
function configuredDbFile(configPath: string | undefined, io: CliIo): string {
  const path = resolve(io.cwd, configPath || io.env['SYDENT_CONF'] || 'sydent.conf');
  if (!existsSync(path)) {
    throw new MigrateDbError(
      `no config file at ${path}: give --from sqlite:PATH, or --config PATH (or set SYDENT_CONF)`,
    );
  }
  const { config } = loadConfig({ configPath: path, env: io.env, cwd: io.cwd });
  return resolve(io.cwd, config.db.dbFile);
}

export async function migrateDbMain(argv: string[], io: MigrateDbIo): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(argv, io.cwd);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr(`sydent-ts migrate-db: ${err.message}\n${MIGRATE_DB_USAGE}\n`);
    return 2;
  }
  const migrateIo = { stdout: io.stdout, stderr: io.stderr, tty: io.tty };
  try {
    if (args.to.kind === 'postgresql') {
      const sourcePath = args.from?.kind === 'sqlite' ? args.from.path : configuredDbFile(args.configPath, io);
      if (!existsSync(sourcePath)) throw new MigrateDbError(`no database at ${sourcePath}`);
      io.stderr(`migrate-db: copying ${sourcePath} into ${redactPgUrl(args.to.url)}\n`);
      await sqliteToPostgres({ sourcePath, targetUrl: args.to.url, batchRows: args.batchRows, io: migrateIo });
      io.stdout(
        [
          `Copied ${sourcePath} into PostgreSQL. To run sydent-ts on it, set in sydent.conf:`,
          '[db]',
          'db.engine = postgresql',
          `db.url = ${redactPgUrl(args.to.url).replace(':***@', ':PASSWORD@')}`,
          '(or leave the password out of the file and give it in SYDENT_DB_URL, PGPASSWORD or ~/.pgpass)',
          '',
        ].join('\n'),
      );
    } else {
      const sourceUrl = args.from?.kind === 'postgresql' ? args.from.url : io.env['SYDENT_DB_URL'];
      if (!sourceUrl)
        throw new MigrateDbError('give the PostgreSQL database to copy: --from postgresql://… (or set SYDENT_DB_URL)');
      if (!isPgUrl(sourceUrl))
        throw new MigrateDbError(`SYDENT_DB_URL is not a postgresql:// URL: ${redactPgUrl(sourceUrl)}`);
      io.stderr(`migrate-db: copying ${redactPgUrl(sourceUrl)} into ${args.to.path}\n`);
      await postgresToSqlite({ sourceUrl, targetPath: args.to.path, batchRows: args.batchRows, io: migrateIo });
      io.stdout(
        [
          `Copied PostgreSQL into ${args.to.path}, which sydent-ts and Sydent open. To run on it, set in sydent.conf:`,
          '[db]',
          'db.engine = sqlite',
          `db.file = ${args.to.path}`,
          '',
        ].join('\n'),
      );
    }
    return 0;
  } catch (err) {
    if (
      err instanceof MigrateDbError ||
      err instanceof PgConnectError ||
      err instanceof StartupError ||
      err instanceof ConfigError
    ) {
      io.stderr(`sydent-ts migrate-db: ${err.message}\n`);
      return 1;
    }
    io.stderr(`sydent-ts migrate-db: ${redactPgUrl(errorMessage(err))}\n`);
    return 1;
  }
}
