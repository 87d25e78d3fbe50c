/**
 * `sydent-ts [--config PATH] rotate-pepper`: a new lookup pepper, and every association's lookup_hash made
 * again with it, in one transaction. Clients holding the old pepper get M_INVALID_PEPPER and fetch
 * hash_details again (the spec asks servers to rotate "often"). Safe while the server runs: SQLite serialises
 * the write, and the server reads the new pepper within a second. On PostgreSQL (`[db] db.engine = postgresql`)
 * the same in one transaction on the database of `db.url`, which every node hears of at its commit.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { loadConfig } from '../config/index.js';
import { lookupHash } from '../crypto/index.js';
import { splitConfig, type CliIo } from '../replication/cli.js';
import { closeDatabase, openDatabase } from './database.js';
import { generatePepper, getPepper, setPepper } from './hashing.js';
import { errorMessage } from '../util/error-message.js';

export async function rotatePepperMain(argv: string[], io: CliIo): Promise<number> {
  try {
    const { configPath, rest } = splitConfig(argv);
    if (rest.length !== 1) {
      io.stderr('usage: sydent-ts [--config PATH] rotate-pepper\n');
      return 2;
    }
    const path = resolve(io.cwd, configPath || io.env['SYDENT_CONF'] || 'sydent.conf');
    if (!existsSync(path)) {
      io.stderr(`sydent-ts: no config file at ${path} (give --config PATH or set SYDENT_CONF)\n`);
      return 1;
    }
    const { config } = loadConfig({ configPath: path, env: io.env, cwd: io.cwd });
    // Not the SQLite file named by db.file: on PostgreSQL that would make a new, unused sydent.db.
    if (config.db.engine === 'postgresql') {
      const { rotatePostgresqlPepper } = await import('./pg/rotate-pepper.js');
      const rows = await rotatePostgresqlPepper(config.db.url);
      io.stdout(`lookup pepper rotated; ${rows} associations re-hashed\n`);
      return 0;
    }
    const db = openDatabase(config.db.dbFile);
    try {
      const before = getPepper(db);
      let pepper = generatePepper();
      while (pepper === before) pepper = generatePepper();
      setPepper(db, pepper, lookupHash);
      const rows = (db.prepare('SELECT count(*) AS n FROM global_threepid_associations').get() as { n: number }).n;
      io.stdout(`lookup pepper rotated; ${rows} associations re-hashed\n`);
      return 0;
    } finally {
      closeDatabase(db);
    }
  } catch (error) {
    io.stderr(`sydent-ts: ${errorMessage(error)}\n`);
    return 1;
  }
}
