/**
 * The PostgreSQL schema (src/store/pg/) against the SQLite one (src/store/schema.ts + migrations.ts), read from
 * both engines' own catalogs: every table, column (type family, NOT NULL, default, primary key) and index (name,
 * table, uniqueness, keys, and the rows a partial index holds) of a sydent.db at the latest user_version is in a PostgreSQL database at the same version.
 * A new SQLite migration without its PostgreSQL twin fails here.
 */
import path from 'node:path';

import type Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';

import { closeDatabase, openDatabase } from '../src/store/database.js';
import { getUserVersion, migrate, OUR_MIGRATIONS } from '../src/store/migrations.js';
import { DATA_SCHEMA_VERSION, DERIVED_TABLES } from '../src/store/migrate-db/tables.js';
import {
  migratePg,
  PG_LATEST_VERSION,
  PG_MIGRATIONS,
  PgSchemaVersionError,
  pgSchemaVersion,
} from '../src/store/pg/migrations.js';
import { PG_VERSION_TABLE } from '../src/store/pg/schema.js';
import { SYDENT_SCHEMA_VERSION } from '../src/store/schema.js';
import { connect, testDatabase } from './helpers/postgres.js';
import { tempDir } from './helpers/tmp.js';

interface Column {
  name: string;
  family: 'integer' | 'text';
  /** how text compares: `bytewise` for SQLite's default BINARY and PostgreSQL's "C", else the collation's name */
  collation: string | null;
  notNull: boolean;
  default: string | null;
  primaryKey: boolean;
}

interface Index {
  name: string;
  table: string;
  unique: boolean;
  keys: string[];
  /** a partial index's condition, as its column names and literals in order (null: every row) */
  where: string[] | null;
}

interface Catalog {
  tables: Record<string, Column[]>;
  indexes: Index[];
}

const norm = (s: string) => s.toLowerCase().replace(/\s+/g, '');

/**
 * A partial index's condition as its words and literals, which both engines keep in their own syntax: SQLite's
 * `state IN ('a', 'b')` and PostgreSQL's `state = ANY (ARRAY['a'::text, 'b'::text])` both give state, 'a', 'b'.
 */
function predicateTerms(pred: string | null): string[] | null {
  if (pred === null) return null;
  const words = pred.replace(/::\w+/g, '').match(/'[^']*'|\w+/g) ?? [];
  return words.filter((w) => !/^(in|any|array)$/i.test(w)).map((w) => (w.startsWith("'") ? w : w.toLowerCase()));
}

/** Splits "a, lower(b), c" at the commas outside parentheses. */
function splitKeys(list: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of list) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out.map(norm);
}

function sqliteFamily(declared: string): Column['family'] {
  // SQLite's affinity rules: INT anywhere makes an integer column; CHAR, CLOB or TEXT a text one.
  const t = declared.toUpperCase();
  if (t.includes('INT')) return 'integer';
  if (/CHAR|CLOB|TEXT/.test(t)) return 'text';
  throw new Error(`unexpected SQLite column type ${declared}`);
}

function sqliteDefault(v: string | null): string | null {
  return v === null || v.toLowerCase() === 'null' ? null : norm(v);
}

function sqliteCatalog(db: Database.Database): Catalog {
  const tables: Catalog['tables'] = {};
  const names = db
    .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
    .pluck()
    .all() as string[];
  for (const table of names) {
    const cols = db.prepare(`PRAGMA table_info("${table}")`).all() as {
      name: string;
      type: string;
      notnull: number;
      dflt_value: string | null;
      pk: number;
    }[];
    tables[table.toLowerCase()] = cols.map((c) => ({
      name: c.name.toLowerCase(),
      family: sqliteFamily(c.type),
      collation: sqliteFamily(c.type) === 'text' ? 'bytewise' : null,
      // An INTEGER PRIMARY KEY is the rowid: never NULL, whatever it declares.
      notNull: c.notnull === 1 || c.pk > 0,
      default: sqliteDefault(c.dflt_value),
      primaryKey: c.pk > 0,
    }));
  }
  const indexRows = db
    .prepare("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name")
    .all() as { name: string; tbl_name: string; sql: string }[];
  const indexes = indexRows.map((r) => {
    const [head, where = null] = r.sql.split(/\s+WHERE\s+/i);
    const list = /\bon\s+\S+\s*\((.*)\)\s*$/is.exec(head!)?.[1];
    if (!list) throw new Error(`cannot read the keys of ${r.sql}`);
    const unique = (db.prepare(`PRAGMA index_list("${r.tbl_name}")`).all() as { name: string; unique: number }[]).find(
      (i) => i.name === r.name,
    )!.unique;
    return {
      name: r.name.toLowerCase(),
      table: r.tbl_name.toLowerCase(),
      unique: unique === 1,
      keys: splitKeys(list),
      where: predicateTerms(where),
    };
  });
  return { tables, indexes };
}

async function pgCatalog(url: string): Promise<Catalog> {
  const client = await connect(url);
  try {
    const cols = await client.query<{
      table_name: string;
      column_name: string;
      data_type: string;
      is_nullable: string;
      column_default: string | null;
      collation_name: string | null;
      pk: boolean;
    }>(
      `SELECT c.table_name, c.column_name, c.data_type, c.is_nullable, c.column_default, c.collation_name,
              EXISTS (SELECT 1 FROM information_schema.table_constraints tc
                      JOIN information_schema.key_column_usage k USING (constraint_schema, constraint_name)
                      WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_name = c.table_name
                        AND k.column_name = c.column_name AND tc.table_schema = c.table_schema) AS pk
         FROM information_schema.columns c
        WHERE c.table_schema = current_schema()
        ORDER BY c.table_name, c.ordinal_position`,
    );
    const tables: Catalog['tables'] = {};
    for (const c of cols.rows) {
      const family =
        c.data_type === 'bigint' || c.data_type === 'integer' ? 'integer' : c.data_type === 'text' ? 'text' : null;
      if (!family) throw new Error(`unexpected PostgreSQL type ${c.data_type} of ${c.table_name}.${c.column_name}`);
      (tables[c.table_name] ??= []).push({
        name: c.column_name,
        family,
        collation:
          family === 'text'
            ? c.collation_name === 'C'
              ? 'bytewise'
              : (c.collation_name ?? 'the database default')
            : null,
        notNull: c.is_nullable === 'NO',
        // '0', 'pending'::text → 'pending'
        default: c.column_default === null ? null : norm(c.column_default.replace(/::[a-z ]+$/i, '')),
        primaryKey: c.pk,
      });
    }
    const idx = await client.query<{
      name: string;
      table: string;
      unique: boolean;
      keys: string[];
      where: string | null;
    }>(
      `SELECT i.relname AS name, t.relname AS table, x.indisunique AS unique,
              array(SELECT pg_get_indexdef(x.indexrelid, k, true) FROM generate_series(1, x.indnkeyatts) AS k) AS keys,
              pg_get_expr(x.indpred, x.indrelid) AS where
         FROM pg_index x
         JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_class t ON t.oid = x.indrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname = current_schema()
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
        ORDER BY i.relname`,
    );
    const indexes = idx.rows.map((r) => ({ ...r, keys: r.keys.map(norm), where: predicateTerms(r.where) }));
    return { tables, indexes };
  } finally {
    await client.end();
  }
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** SQLite's triggers, which PostgreSQL has no twin of in its schema. */
const SQLITE_ONLY_TRIGGERS = [
  'sydent_ts_count_callback_delete',
  'sydent_ts_count_callback_insert',
  'sydent_ts_count_callback_state',
  'sydent_ts_count_machine_delete',
  'sydent_ts_count_machine_insert',
  'sydent_ts_count_machine_state',
  'sydent_ts_count_session_insert',
  'sydent_ts_count_session_validated',
  'sydent_ts_session_delete',
];

async function migratedPg(): Promise<string> {
  const db = await testDatabase();
  cleanups.push(db.drop);
  const client = await connect(db.url);
  try {
    await migratePg(client);
  } finally {
    await client.end();
  }
  return db.url;
}

function latestSqlite(): Database.Database {
  const { dir, cleanup } = tempDir();
  cleanups.push(cleanup);
  const db = openDatabase(path.join(dir, 'sydent.db'));
  cleanups.push(() => closeDatabase(db));
  return db;
}

describe('the PostgreSQL schema', () => {
  it('has the versions of the SQLite schema: Sydent’s 5, then one step per SQLite migration, same numbers and names', () => {
    expect(PG_MIGRATIONS[0]).toMatchObject({ version: SYDENT_SCHEMA_VERSION, name: 'sydent_schema' });
    expect(PG_MIGRATIONS.slice(1).map((m) => `${m.version} ${m.name}`)).toEqual(
      OUR_MIGRATIONS.map((m) => `${m.version} ${m.name}`),
    );
  });

  it('has every table, column and index of a sydent.db at the same version, and the same primary keys, defaults and text comparison', async () => {
    const sqlite = latestSqlite();
    expect(getUserVersion(sqlite)).toBe(PG_LATEST_VERSION);
    const want = sqliteCatalog(sqlite);
    const url = await migratedPg();
    const got = await pgCatalog(url);

    const { [PG_VERSION_TABLE]: versionTable, ...gotTables } = got.tables;
    expect(versionTable?.map((c) => c.name)).toEqual(['version', 'name', 'applied_ts']);
    expect(Object.keys(gotTables).sort()).toEqual(Object.keys(want.tables).sort());
    for (const [table, columns] of Object.entries(want.tables)) {
      expect({ table, columns: gotTables[table] }).toEqual({ table, columns });
    }
    expect(got.indexes).toEqual(want.indexes);
    // Our newest-first lookup hash index, named: the catalogs could agree by both missing it. Sydent's on lookup_hash
    // alone is dropped by migration 15 (ours covers it).
    expect(got.indexes.map((i) => i.name)).not.toContain('global_threepid_lookup_hash');
    expect(got.indexes.map((i) => i.name)).toEqual(
      expect.arrayContaining([
        'sydent_ts_global_lookup_hash_newest',
        'sydent_ts_sessions_lookup',
        'sydent_ts_callback_open',
        'sydent_ts_callback_leases',
      ]),
    );
    expect(got.indexes.find((i) => i.name === 'sydent_ts_callback_open')?.where).toEqual([
      'state',
      "'pending'",
      "'retrying'",
      "'delivering'",
    ]);
    expect(want.indexes.length).toBeGreaterThanOrEqual(16);

    // Triggers are SQLite's alone (the state counts, and a session's machine row going with it): the PostgreSQL
    // engine keeps the same in its own transactions. A new SQLite trigger is listed here, with its PostgreSQL twin
    // in the engine.
    expect(sqlite.prepare("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name").pluck().all()).toEqual(
      SQLITE_ONLY_TRIGGERS,
    );
    const client = await connect(url);
    try {
      expect((await client.query('SELECT tgname FROM pg_trigger WHERE NOT tgisinternal')).rows).toEqual([]);
    } finally {
      await client.end();
    }
  });

  it('migration 12 seeds the state counts from the data as SQLite’s does (a machine row whose session is gone removed first)', async () => {
    const rows = `
      INSERT INTO threepid_validation_sessions (id, medium, address, clientSecret, validated, mtime) VALUES
        (1, 'email', 'a@x', 's', 0, 1), (2, 'email', 'b@x', 's', 1, 1), (3, 'email', 'c@x', 's', NULL, 1),
        (4, 'email', 'd@x', 's', 0, 1), (5, 'msisdn', '4477', 's', 1, 1);
      INSERT INTO session_machines (sid, state, context, machine_version, row_version, history, updated_ts) VALUES
        (4, 'awaitingToken', '{}', 1, 1, '[]', 1), (5, 'validated', '{}', 1, 1, '[]', 1), (99, 'awaitingToken', '{}', 1, 1, '[]', 1);
      INSERT INTO callback_outbox (destination, path, body, medium, address, state, next_attempt_ts, created_ts) VALUES
        ('hs', '/p', '{}', 'email', 'a@x', 'pending', 0, 0), ('hs', '/p', '{}', 'email', 'b@x', 'pending', 0, 0),
        ('hs', '/p', '{}', 'email', 'c@x', 'delivered', 0, 0), ('hs', '/p', '{}', 'email', 'd@x', 'failed', 0, 0);`;
    const read = {
      machines: 'SELECT state, n FROM sydent_ts_machine_counts ORDER BY state',
      sessions: 'SELECT validated, n FROM sydent_ts_sydent_session_counts ORDER BY validated',
      callbacks: 'SELECT state, n FROM sydent_ts_callback_counts ORDER BY state',
    };
    const want = {
      machines: [
        { state: 'awaitingToken', n: 1 },
        { state: 'validated', n: 1 },
      ],
      sessions: [
        { validated: 0, n: 2 },
        { validated: 1, n: 1 },
      ],
      callbacks: [
        { state: 'delivered', n: 1 },
        { state: 'failed', n: 1 },
        { state: 'pending', n: 2 },
      ],
    };

    const { dir, cleanup } = tempDir();
    cleanups.push(cleanup);
    const sqlite = openDatabase(path.join(dir, 'v11.db'), {
      migrations: OUR_MIGRATIONS.filter((m) => m.version <= 11),
    });
    cleanups.push(() => closeDatabase(sqlite));
    sqlite.exec(rows);
    migrate(sqlite);
    const fromSqlite = Object.fromEntries(Object.entries(read).map(([k, sql]) => [k, sqlite.prepare(sql).all()]));
    expect(fromSqlite).toEqual(want);

    const db = await testDatabase();
    cleanups.push(db.drop);
    const client = await connect(db.url);
    cleanups.push(() => client.end());
    await migratePg(client, PG_MIGRATIONS, 11);
    await client.query(rows);
    expect((await migratePg(client)).applied).toEqual([
      '12 state_counts',
      '13 callback_destination_indexes',
      '14 drop_session_state_index',
      '15 drop_redundant_lookup_hash_index',
    ]);
    const fromPg: Record<string, unknown[]> = {};
    for (const [k, sql] of Object.entries(read)) {
      fromPg[k] = (await client.query<Record<string, string | number>>(sql)).rows.map((r) =>
        Object.fromEntries(Object.entries(r).map(([c, v]) => [c, c === 'state' ? v : Number(v)])),
      );
    }
    expect(fromPg).toEqual(want);
    expect((await client.query('SELECT sid FROM session_machines ORDER BY sid')).rows).toEqual([
      { sid: '4' },
      { sid: '5' },
    ]);
  });

  it('the migrations after the version migrate-db copies the data at add only the tables derived from that data', async () => {
    const db = await testDatabase();
    cleanups.push(db.drop);
    const client = await connect(db.url);
    cleanups.push(() => client.end());
    const tables = async () =>
      (
        await client.query<{ t: string }>(
          'SELECT table_name AS t FROM information_schema.tables WHERE table_schema = current_schema()',
        )
      ).rows.map((r) => r.t);
    await migratePg(client, PG_MIGRATIONS, DATA_SCHEMA_VERSION);
    const before = await tables();
    await migratePg(client);
    expect((await tables()).filter((t) => !before.includes(t)).sort()).toEqual([...DERIVED_TABLES].sort());
  });

  it('records each version in its version table, and a second migrate (another node starting) changes nothing', async () => {
    const url = await migratedPg();
    const client = await connect(url);
    cleanups.push(() => client.end());
    expect(await pgSchemaVersion(client)).toBe(PG_LATEST_VERSION);
    const rows = await client.query<{ version: number; name: string }>(
      `SELECT version, name FROM ${PG_VERSION_TABLE} ORDER BY version`,
    );
    expect(rows.rows.map((r) => `${r.version} ${r.name}`)).toEqual(PG_MIGRATIONS.map((m) => `${m.version} ${m.name}`));
    const again = await migratePg(client);
    expect(again).toEqual({ fromVersion: PG_LATEST_VERSION, toVersion: PG_LATEST_VERSION, applied: [] });
  });

  it('brings an older database forward one step at a time, and two nodes migrating at once apply each step once', async () => {
    const db = await testDatabase();
    cleanups.push(db.drop);
    const first = await connect(db.url);
    const second = await connect(db.url);
    cleanups.push(
      () => first.end(),
      () => second.end(),
    );
    expect((await migratePg(first, PG_MIGRATIONS, 8)).applied).toEqual([
      '5 sydent_schema',
      '6 sydent_ts_meta',
      '7 session_machines',
      '8 callback_outbox',
    ]);
    const [a, b] = await Promise.all([migratePg(first), migratePg(second)]);
    expect([...a.applied, ...b.applied].sort()).toEqual([
      '10 global_lookup_hash_newest_index',
      '11 session_lookup_index',
      '12 state_counts',
      '13 callback_destination_indexes',
      '14 drop_session_state_index',
      '15 drop_redundant_lookup_hash_index',
      '9 global_lookup_hash_covering_index',
    ]);
    expect(await pgSchemaVersion(first)).toBe(PG_LATEST_VERSION);
  });

  it('refuses a database newer than this code, and changes nothing in it', async () => {
    const url = await migratedPg();
    const client = await connect(url);
    cleanups.push(() => client.end());
    await client.query(
      `INSERT INTO ${PG_VERSION_TABLE} (version, name, applied_ts) VALUES ($1, 'from_the_future', 0)`,
      [PG_LATEST_VERSION + 1],
    );
    await expect(migratePg(client)).rejects.toThrow(PgSchemaVersionError);
    await expect(migratePg(client)).rejects.toThrow(
      `database schema version ${PG_LATEST_VERSION + 1} is newer than this sydent-ts understands`,
    );
    expect(await pgSchemaVersion(client)).toBe(PG_LATEST_VERSION + 1);
  });
});
