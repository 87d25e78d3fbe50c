/**
 * Schema versioning, shared with Sydent through `PRAGMA user_version`.
 *
 * Versions 1..5 are Sydent's and are reproduced step for step, so an old `sydent.db` ends up exactly
 * where Sydent would have taken it. Versions 6 and up are ours. Sydent only ever acts on versions
 * below 5 and ignores tables it does not know, so a database we have migrated still opens in Sydent:
 * going back to Sydent stays possible. Our migrations must therefore never change Sydent's tables in a
 * way Sydent cannot read (add tables, or nullable/defaulted columns; never drop or rename).
 */
import type Database from 'better-sqlite3';

import { SYDENT_SCHEMA, SYDENT_SCHEMA_VERSION, SYDENT_V0_SCHEMA, SYDENT_V0_TABLES } from './schema.js';

export interface Migration {
  version: number;
  name: string;
  up: (db: Database.Database) => void;
}

/** Our own migrations, above Sydent's last version. Append only; never edit one that has shipped. */
export const OUR_MIGRATIONS: readonly Migration[] = [
  {
    version: 6,
    name: 'sydent_ts_meta',
    up: (db) => {
      db.exec('CREATE TABLE sydent_ts_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)');
    },
  },
  {
    // One row per validation session actor: its state and context, beside Sydent's session row (same id).
    // row_version guards every write, so two nodes never overwrite each other's transition.
    version: 7,
    name: 'session_machines',
    up: (db) => {
      db.exec(`CREATE TABLE session_machines (
        sid INTEGER PRIMARY KEY,
        state TEXT NOT NULL,
        context TEXT NOT NULL,
        machine_version INTEGER NOT NULL,
        row_version INTEGER NOT NULL,
        history TEXT NOT NULL DEFAULT '[]',
        updated_ts BIGINT NOT NULL
      )`);
      db.exec('CREATE INDEX session_machines_state ON session_machines(state)');
    },
  },
  {
    // Homeserver callbacks (onbind), recorded in the bind's own transaction before any attempt, so a crash or
    // kill -9 never loses one. A worker claims a row (claimed_until) before delivering it.
    version: 8,
    name: 'callback_outbox',
    up: (db) => {
      db.exec(`CREATE TABLE callback_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        destination TEXT NOT NULL,
        path TEXT NOT NULL,
        body TEXT NOT NULL,
        medium TEXT NOT NULL,
        address TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_ts BIGINT NOT NULL,
        claimed_until BIGINT,
        last_error TEXT,
        created_ts BIGINT NOT NULL,
        delivered_ts BIGINT
      )`);
      db.exec('CREATE INDEX callback_outbox_due ON callback_outbox(state, next_attempt_ts)');
    },
  },
  {
    // Hashed lookups answered from the index alone, without visiting table rows: the hot path of v2 /lookup.
    // An extra index on Sydent's table is invisible to Sydent.
    version: 9,
    name: 'global_lookup_hash_covering_index',
    up: (db) => {
      db.exec(
        'CREATE INDEX sydent_ts_global_lookup_hash_cover ON global_threepid_associations (lookup_hash, notBefore, notAfter, ts, mxid)',
      );
    },
  },
  {
    // The covering index of version 9, reordered so that a hash's rows come newest first (ts, then id): a one-hash
    // lookup takes the first valid row and stops, with no sort and no step past it (half the query's time). The
    // validity columns stay in the index, so it still answers without visiting table rows.
    version: 10,
    name: 'global_lookup_hash_newest_index',
    up: (db) => {
      db.exec('DROP INDEX IF EXISTS sydent_ts_global_lookup_hash_cover');
      db.exec(
        'CREATE INDEX sydent_ts_global_lookup_hash_newest ON global_threepid_associations (lookup_hash, ts, id, notBefore, notAfter, mxid)',
      );
    },
  },
  {
    // requestToken finds a session by (medium, address, client_secret), the newest first. Sydent's only index on
    // the table is mtime's, so the lookup scanned every session (or walked the whole mtime index for the ORDER BY):
    // its time grew with the table. The first index answers it in one probe, newest first, at any size. The second
    // serves every load and save of a session, which join or update its token row by session id (Sydent has no
    // index there either). Extra indexes on Sydent's tables are invisible to Sydent.
    version: 11,
    name: 'session_lookup_index',
    up: (db) => {
      db.exec(
        'CREATE INDEX sydent_ts_sessions_lookup ON threepid_validation_sessions (medium, address, clientSecret, mtime)',
      );
      db.exec('CREATE INDEX sydent_ts_token_auths_session ON threepid_token_auths (validationSession)');
    },
  },
  {
    // Sessions and homeserver callbacks counted by state for the debug endpoints and the metrics, kept by triggers in
    // the same transaction as every change (ours, and Sydent's own writes after a switch back), so reading them costs
    // a few rows at any size where counting the tables walked them all. Machine rows count by their state; Sydent's
    // sessions without a machine row by `validated`. Seeded here once. A session's machine row goes with the session
    // whoever deletes it (Sydent's sweep too), so none is ever left without its session and the sweep never looks
    // for such rows; those left before this version are removed here, once. Triggers and tables of our own are
    // invisible to Sydent's reads.
    version: 12,
    name: 'state_counts',
    up: (db) => {
      db.exec('DELETE FROM session_machines WHERE sid NOT IN (SELECT id FROM threepid_validation_sessions)');
      db.exec(`CREATE TABLE sydent_ts_machine_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL)`);
      db.exec(`CREATE TABLE sydent_ts_sydent_session_counts (validated INTEGER PRIMARY KEY, n INTEGER NOT NULL)`);
      db.exec(
        'INSERT INTO sydent_ts_machine_counts (state, n) SELECT state, count(*) FROM session_machines GROUP BY state',
      );
      db.exec(`INSERT INTO sydent_ts_sydent_session_counts (validated, n) VALUES (0, 0), (1, 0)`);
      db.exec(`UPDATE sydent_ts_sydent_session_counts SET n = (
        SELECT count(*) FROM threepid_validation_sessions s
        WHERE (CASE WHEN s.validated THEN 1 ELSE 0 END) = sydent_ts_sydent_session_counts.validated
          AND NOT EXISTS (SELECT 1 FROM session_machines m WHERE m.sid = s.id))`);
      const v = (row: string) => `(CASE WHEN ${row}.validated THEN 1 ELSE 0 END)`;
      const machineCount = (state: string, delta: string) => `
        INSERT OR IGNORE INTO sydent_ts_machine_counts (state, n) VALUES (${state}, 0);
        UPDATE sydent_ts_machine_counts SET n = n ${delta} WHERE state = ${state};`;
      // A session's "Sydent's only" count moves when its machine row comes or goes.
      const sessionOf = (sid: string, delta: string) => `
        UPDATE sydent_ts_sydent_session_counts SET n = n ${delta}
        WHERE validated = (SELECT ${v('s')} FROM threepid_validation_sessions s WHERE s.id = ${sid});`;
      const noMachine = (sid: string) => `NOT EXISTS (SELECT 1 FROM session_machines m WHERE m.sid = ${sid})`;
      db.exec(`CREATE TRIGGER sydent_ts_count_machine_insert AFTER INSERT ON session_machines BEGIN
        ${machineCount('NEW.state', '+ 1')} ${sessionOf('NEW.sid', '- 1')}
      END`);
      db.exec(`CREATE TRIGGER sydent_ts_count_machine_delete AFTER DELETE ON session_machines BEGIN
        ${machineCount('OLD.state', '- 1')} ${sessionOf('OLD.sid', '+ 1')}
      END`);
      db.exec(`CREATE TRIGGER sydent_ts_count_machine_state AFTER UPDATE OF state ON session_machines
        WHEN OLD.state IS NOT NEW.state BEGIN
        ${machineCount('OLD.state', '- 1')} ${machineCount('NEW.state', '+ 1')}
      END`);
      db.exec(`CREATE TRIGGER sydent_ts_count_session_insert AFTER INSERT ON threepid_validation_sessions
        WHEN ${noMachine('NEW.id')} BEGIN
        UPDATE sydent_ts_sydent_session_counts SET n = n + 1 WHERE validated = ${v('NEW')};
      END`);
      // One trigger, its statements in this order: the count is taken before the machine row goes.
      db.exec(`CREATE TRIGGER sydent_ts_session_delete AFTER DELETE ON threepid_validation_sessions BEGIN
        UPDATE sydent_ts_sydent_session_counts SET n = n - 1 WHERE validated = ${v('OLD')} AND ${noMachine('OLD.id')};
        DELETE FROM session_machines WHERE sid = OLD.id;
      END`);
      db.exec(`CREATE TRIGGER sydent_ts_count_session_validated AFTER UPDATE OF validated ON threepid_validation_sessions
        WHEN ${v('OLD')} <> ${v('NEW')} AND ${noMachine('NEW.id')} BEGIN
        UPDATE sydent_ts_sydent_session_counts SET n = n - 1 WHERE validated = ${v('OLD')};
        UPDATE sydent_ts_sydent_session_counts SET n = n + 1 WHERE validated = ${v('NEW')};
      END`);
      db.exec(`CREATE TABLE sydent_ts_callback_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL)`);
      db.exec(
        'INSERT INTO sydent_ts_callback_counts (state, n) SELECT state, count(*) FROM callback_outbox GROUP BY state',
      );
      const callbackCount = (state: string, delta: string) => `
        INSERT OR IGNORE INTO sydent_ts_callback_counts (state, n) VALUES (${state}, 0);
        UPDATE sydent_ts_callback_counts SET n = n ${delta} WHERE state = ${state};`;
      db.exec(
        `CREATE TRIGGER sydent_ts_count_callback_insert AFTER INSERT ON callback_outbox BEGIN ${callbackCount('NEW.state', '+ 1')} END`,
      );
      db.exec(
        `CREATE TRIGGER sydent_ts_count_callback_delete AFTER DELETE ON callback_outbox BEGIN ${callbackCount('OLD.state', '- 1')} END`,
      );
      db.exec(`CREATE TRIGGER sydent_ts_count_callback_state AFTER UPDATE OF state ON callback_outbox
        WHEN OLD.state IS NOT NEW.state BEGIN
        ${callbackCount('OLD.state', '- 1')} ${callbackCount('NEW.state', '+ 1')}
      END`);
    },
  },
  {
    // The notifier's claim and its next-due read reach each destination's first open row (and its leases) by an index
    // on the destination, so a homeserver that refuses its callbacks, and gathers a backlog of them, costs each round
    // one probe instead of a walk over that backlog. Partial: finished rows (kept a day or a week) are not in them.
    version: 13,
    name: 'callback_destination_indexes',
    up: (db) => {
      db.exec(
        `CREATE INDEX sydent_ts_callback_open ON callback_outbox (destination, next_attempt_ts, id)
         WHERE state IN ('pending', 'retrying', 'delivering')`,
      );
      db.exec(
        `CREATE INDEX sydent_ts_callback_leases ON callback_outbox (destination, claimed_until)
         WHERE state = 'delivering'`,
      );
    },
  },
  {
    // Nothing reads session_machines by state since migration 12 keeps the counts by state in their own table, and
    // every session's first save and each change of state wrote this index at a random place.
    version: 14,
    name: 'drop_session_state_index',
    up: (db) => {
      db.exec('DROP INDEX IF EXISTS session_machines_state');
    },
  },
  {
    // Sydent's index on lookup_hash alone is the first column of sydent_ts_global_lookup_hash_newest (version 10),
    // which serves every query by hash, Sydent's own included, so it was only ever written: every bind and every
    // replicated association inserted into it at a random place, and each commit wrote its pages: a third of what
    // storing a row cost. Going back to Sydent keeps our index (docs/OPERATING.md), so its lookups by hash stay indexed.
    version: 15,
    name: 'drop_redundant_lookup_hash_index',
    up: (db) => {
      db.exec('DROP INDEX IF EXISTS global_threepid_lookup_hash');
    },
  },
];

/** Thrown when the database cannot be brought to a version we understand; start-up must stop. */
export class SchemaVersionError extends Error {
  override readonly name = 'SchemaVersionError';
}

interface MigrationResult {
  /** user_version found on opening (0 for a database with no Sydent tables). */
  fromVersion: number;
  /** user_version after migrating. */
  toVersion: number;
  /** true when the database had no Sydent tables and the final schema was created directly. */
  created: boolean;
  /** `version name` of every step applied, Sydent's and ours, in order. */
  applied: string[];
}

/**
 * Sydent's upgrade steps (sydent/db/sqlitedb.py `_upgradeSchema`), each from `version - 1`. Sydent
 * runs every step above the version it read at start, whatever is in the database, so we do too.
 */
const SYDENT_UPGRADES: readonly Migration[] = [
  {
    version: 1,
    name: 'autoincrement_association_ids',
    up: (db) => {
      // Sydent replays its v0 files whenever user_version is 0; on a partial v0 database this creates
      // whatever tables are missing, and on a complete one it does nothing.
      for (const sql of SYDENT_V0_SCHEMA) db.exec(sql);

      // Local associations: ids must never be reused (they are the replication cursor), and unbinds
      // became tombstone rows, so mxid and the times turn nullable. Copying without the id renumbers
      // rows, exactly as Sydent did.
      db.exec('DROP INDEX IF EXISTS medium_address');
      db.exec('DROP INDEX IF EXISTS local_threepid_medium_address');
      db.exec('ALTER TABLE local_threepid_associations RENAME TO old_local_threepid_associations');
      db.exec(
        'CREATE TABLE local_threepid_associations (id integer primary key autoincrement, medium varchar(16) not null, address varchar(256) not null, mxid varchar(256), ts integer, notBefore bigint, notAfter bigint)',
      );
      db.exec(
        'INSERT INTO local_threepid_associations (medium, address, mxid, ts, notBefore, notAfter) SELECT medium, address, mxid, ts, notBefore, notAfter FROM old_local_threepid_associations',
      );
      db.exec('CREATE UNIQUE INDEX local_threepid_medium_address on local_threepid_associations(medium, address)');
      db.exec('DROP TABLE old_local_threepid_associations');

      // Global associations: same autoincrement, but deletions remove rows, so the columns stay NOT NULL.
      // The index names dropped here cover every name any earlier Sydent used.
      db.exec('DROP INDEX IF EXISTS global_threepid_medium_address');
      db.exec('DROP INDEX IF EXISTS global_threepid_medium_lower_address');
      db.exec('DROP INDEX IF EXISTS global_threepid_originServer_originId');
      db.exec('DROP INDEX IF EXISTS medium_lower_address');
      db.exec('DROP INDEX IF EXISTS threepid_originServer_originId');
      db.exec('ALTER TABLE global_threepid_associations RENAME TO old_global_threepid_associations');
      db.exec(
        'CREATE TABLE global_threepid_associations (id integer primary key autoincrement, medium varchar(16) not null, address varchar(256) not null, mxid varchar(256) not null, ts integer not null, notBefore bigint not null, notAfter integer not null, originServer varchar(255) not null, originId integer not null, sgAssoc text not null)',
      );
      db.exec(
        'INSERT INTO global_threepid_associations (medium, address, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc) SELECT medium, address, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc FROM old_global_threepid_associations',
      );
      db.exec('CREATE INDEX global_threepid_medium_address on global_threepid_associations (medium, address)');
      db.exec(
        'CREATE INDEX global_threepid_medium_lower_address on global_threepid_associations (medium, lower(address))',
      );
      db.exec(
        'CREATE UNIQUE INDEX global_threepid_originServer_originId on global_threepid_associations (originServer, originId)',
      );
      // Dropping the renamed table also drops the v0 indexes (medium_address, originServer_originId)
      // that followed it through the rename.
      db.exec('DROP TABLE old_global_threepid_associations');
    },
  },
  {
    version: 2,
    name: 'session_mtime_index',
    up: (db) => {
      db.exec('CREATE INDEX threepid_validation_sessions_mtime ON threepid_validation_sessions(mtime)');
    },
  },
  {
    version: 3,
    name: 'lookup_hash',
    up: (db) => {
      db.exec('ALTER TABLE local_threepid_associations ADD COLUMN lookup_hash VARCHAR(256)');
      db.exec('ALTER TABLE global_threepid_associations ADD COLUMN lookup_hash VARCHAR(256)');
      db.exec('CREATE INDEX IF NOT EXISTS lookup_hash_medium on global_threepid_associations (lookup_hash, medium)');
      db.exec('CREATE TABLE IF NOT EXISTS hashing_metadata (id integer primary key, lookup_pepper varchar(256))');
    },
  },
  {
    version: 4,
    name: 'accounts_and_terms',
    up: (db) => {
      db.exec(
        'CREATE TABLE accounts(user_id TEXT NOT NULL PRIMARY KEY, created_ts BIGINT NOT NULL, consent_version TEXT)',
      );
      db.exec('CREATE TABLE tokens(token TEXT NOT NULL PRIMARY KEY, user_id TEXT NOT NULL)');
      db.exec('CREATE TABLE accepted_terms_urls(user_id TEXT NOT NULL, url TEXT NOT NULL)');
      db.exec('CREATE UNIQUE INDEX accepted_terms_urls_idx ON accepted_terms_urls (user_id, url)');
    },
  },
  {
    version: 5,
    name: 'lookup_hash_index',
    up: (db) => {
      // Lookups select on lookup_hash alone, so the (lookup_hash, medium) index was replaced.
      db.exec('DROP INDEX IF EXISTS lookup_hash_medium');
      db.exec('CREATE INDEX global_threepid_lookup_hash ON global_threepid_associations(lookup_hash)');
    },
  },
];

export function getUserVersion(db: Database.Database): number {
  const v = db.pragma('user_version', { simple: true });
  if (typeof v !== 'number') throw new Error(`PRAGMA user_version returned ${String(v)}`);
  return v;
}

function setUserVersion(db: Database.Database, version: number): void {
  // PRAGMA takes no bound parameters; the integer check is what keeps this safe.
  if (!Number.isSafeInteger(version) || version < 0) throw new Error(`bad schema version ${version}`);
  db.pragma(`user_version = ${version}`);
}

function hasSydentTables(db: Database.Database): boolean {
  const placeholders = SYDENT_V0_TABLES.map(() => '?').join(', ');
  const row = db
    .prepare(`SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name IN (${placeholders})`)
    .get(...SYDENT_V0_TABLES) as { n: number };
  return row.n > 0;
}

function checkMigrationList(migrations: readonly Migration[]): void {
  migrations.forEach((m, i) => {
    const expected = SYDENT_SCHEMA_VERSION + 1 + i;
    if (m.version !== expected) {
      throw new Error(
        `migration list is broken: "${m.name}" has version ${m.version}, expected ${expected} ` +
          `(versions must run consecutively from ${SYDENT_SCHEMA_VERSION + 1})`,
      );
    }
  });
}

/**
 * Brings the database to the latest schema version we know.
 *
 * Every step runs in its own transaction together with the user_version it sets (SQLite's DDL and
 * user_version are both transactional), so a crash or a failing step leaves the database at the last
 * completed version, never in between. Refuses, with SchemaVersionError, a database newer than this
 * code: running old code against a newer schema could silently lose data written by the newer one.
 */
export function migrate(db: Database.Database, migrations: readonly Migration[] = OUR_MIGRATIONS): MigrationResult {
  checkMigrationList(migrations);
  const latest = SYDENT_SCHEMA_VERSION + migrations.length;

  // Savepoints nested in a caller's transaction would make "each step commits on its own" untrue.
  if (db.inTransaction) throw new Error('migrate() must not be called inside a transaction');

  const fromVersion = getUserVersion(db);
  if (fromVersion < 0) {
    throw new SchemaVersionError(`database user_version is ${fromVersion}; this is not a Sydent database`);
  }
  if (fromVersion > latest) {
    throw new SchemaVersionError(
      `database schema version ${fromVersion} is newer than this sydent-ts understands (at most ${latest}); ` +
        'refusing to start. Run a newer sydent-ts, or restore a backup made for this version.',
    );
  }

  const applied: string[] = [];
  let version = fromVersion;
  let created = false;

  const runStep = (step: Migration): void => {
    // IMMEDIATE takes the write lock before the version is re-read, so two processes starting at once
    // serialise here: the second one finds the step done and moves on.
    const ran = db
      .transaction(() => {
        const now = getUserVersion(db);
        if (now >= step.version) return false;
        if (now !== step.version - 1) {
          throw new SchemaVersionError(`cannot apply schema step ${step.version} to a database at version ${now}`);
        }
        step.up(db);
        setUserVersion(db, step.version);
        return true;
      })
      .immediate();
    version = step.version;
    if (ran) applied.push(`${step.version} ${step.name}`);
  };

  if (version === 0 && !hasSydentTables(db)) {
    // A new database: create the final schema in one go rather than replaying history; the result has
    // the same shape and the same sqlite_master text as a Sydent-made one.
    created = db
      .transaction(() => {
        if (getUserVersion(db) !== 0 || hasSydentTables(db)) return false;
        for (const sql of SYDENT_SCHEMA) db.exec(sql);
        setUserVersion(db, SYDENT_SCHEMA_VERSION);
        return true;
      })
      .immediate();
    if (created) {
      version = SYDENT_SCHEMA_VERSION;
      applied.push(`${SYDENT_SCHEMA_VERSION} sydent_schema`);
    }
  }

  for (const step of [...SYDENT_UPGRADES, ...migrations]) {
    if (step.version > version) runStep(step);
  }

  return { fromVersion, toVersion: version, created, applied };
}
