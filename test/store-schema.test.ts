import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { closeDatabase, openDatabase } from '../src/store/database.js';
import { ensurePepper, getPepper, setPepper, type LookupHashFn } from '../src/store/hashing.js';
import { migrate, OUR_MIGRATIONS, SchemaVersionError, type Migration } from '../src/store/migrations.js';
import { SYDENT_INDEXES, SYDENT_TABLES, SYDENT_V0_SCHEMA } from '../src/store/schema.js';

const FIXTURE = fs.readFileSync(
  path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'sydent-v5.sql'),
  'utf8',
);
const LATEST = OUR_MIGRATIONS[OUR_MIGRATIONS.length - 1]?.version ?? 5;
const OUR_TABLES = [
  'sydent_ts_meta',
  'session_machines',
  'callback_outbox',
  'sydent_ts_machine_counts',
  'sydent_ts_sydent_session_counts',
  'sydent_ts_callback_counts',
];
/**
 * Sydent's indexes our migrations drop (migration 15): one that an index of ours covers. Comparisons with a database
 * Sydent made leave them out, and `expectFinalSydentSchema` checks they are gone and their replacement is there.
 */
const DROPPED = ['global_threepid_lookup_hash'];
/** What a comparison of our database with Sydent's leaves out on our side. */
const NOT_SYDENTS = [...OUR_TABLES, ...DROPPED];

/** What src/crypto/hash.ts lookupHash computes, written out independently. */
const sha256Hash: LookupHashFn = (address, medium, pepper) =>
  createHash('sha256').update(`${address} ${medium} ${pepper}`, 'utf8').digest('base64url');

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sydent-ts-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------------
// Helpers

type Db = Database.Database;

/** A raw handle configured like Python's sqlite3 (no FK enforcement), to play the part of Sydent. */
function rawOpen(file: string): Db {
  const db = new Database(file);
  db.pragma('foreign_keys = OFF');
  return db;
}

function fixtureStatements(): string[] {
  return FIXTURE.split(/;\s*\n/)
    .map((s) => s.replace(/^(--[^\n]*\n)+/, '').trim())
    .filter((s) => s !== '');
}

/** Statements of Sydent's v3 schema: v5 without the v3→v4 and v4→v5 steps, plus the index v4→v5 drops. */
function v3Statements(): string[] {
  const v4v5 =
    /^CREATE (UNIQUE )?(TABLE|INDEX) (accounts|tokens|accepted_terms_urls|accepted_terms_urls_idx|global_threepid_lookup_hash)\b/;
  return [
    ...fixtureStatements().filter((s) => !v4v5.test(s)),
    'CREATE INDEX lookup_hash_medium on global_threepid_associations (lookup_hash, medium)',
  ];
}

function userVersion(db: Db): number {
  return db.pragma('user_version', { simple: true }) as number;
}

/**
 * Our own indexes on Sydent's tables (named sydent_ts_*) are left out wherever our tables are, so "Sydent's
 * schema is unchanged" compares what Sydent made.
 */
function isOurIndex(name: string, exclude: string[]): boolean {
  return exclude.length > 0 && name.startsWith('sydent_ts_');
}

/** sqlite_master as name → sql, leaving out planner statistics (PRAGMA optimize may add them). */
function masterSql(db: Db, exclude: string[] = []): Record<string, string | null> {
  const rows = db.prepare('SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name').all() as {
    type: string;
    name: string;
    tbl_name: string;
    sql: string | null;
  }[];
  const out: Record<string, string | null> = {};
  for (const r of rows) {
    if (exclude.includes(r.name) || exclude.includes(r.tbl_name) || isOurIndex(r.name, exclude)) continue;
    out[`${r.type} ${r.name} on ${r.tbl_name}`] = r.sql;
  }
  return out;
}

interface TableShape {
  columns: unknown[];
  indexes: Record<string, { unique: number; origin: string; partial: number; columns: string[] }>;
  foreignKeys: unknown[];
}

/** Structure as SQLite itself reports it, independent of creation order and of the stored text. */
function shape(db: Db, exclude: string[] = []): Record<string, TableShape> {
  const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as {
    name: string;
  }[];
  const out: Record<string, TableShape> = {};
  for (const { name } of tables) {
    if (exclude.includes(name)) continue;
    const indexes: TableShape['indexes'] = {};
    const list = db.pragma(`index_list("${name}")`) as {
      name: string;
      unique: number;
      origin: string;
      partial: number;
    }[];
    for (const idx of list) {
      if (exclude.includes(idx.name) || isOurIndex(idx.name, exclude)) continue;
      const cols = db.pragma(`index_info("${idx.name}")`) as { seqno: number; name: string | null }[];
      indexes[idx.name] = {
        unique: idx.unique,
        origin: idx.origin,
        partial: idx.partial,
        columns: cols.sort((a, b) => a.seqno - b.seqno).map((c) => c.name ?? '<expr>'),
      };
    }
    out[name] = {
      columns: db.pragma(`table_xinfo("${name}")`) as unknown[],
      indexes,
      foreignKeys: db.pragma(`foreign_key_list("${name}")`) as unknown[],
    };
  }
  return out;
}

function dumpRows(db: Db): Record<string, unknown[]> {
  const out: Record<string, unknown[]> = {};
  for (const t of [...SYDENT_TABLES, 'sqlite_sequence']) {
    out[t] = db.prepare(`SELECT * FROM "${t}" ORDER BY rowid`).all();
  }
  return out;
}

function fixtureDb(): Db {
  const db = new Database(':memory:');
  db.exec(FIXTURE);
  return db;
}

/** One or more rows in every table of the v5 schema, with the values Sydent would write. */
function insertSydentRows(db: Db): void {
  db.exec(`
    INSERT INTO threepid_validation_sessions (id, medium, address, clientSecret, validated, mtime)
      VALUES (1837465012, 'email', 'Alice@Example.com', 'sEcReT-123', 1, 1700000000123);
    INSERT INTO threepid_token_auths (validationSession, token, sendAttemptNumber)
      VALUES (1837465012, 'AbCdEfGhIjKlMnOpQrStUvWxYz012345', 1);
    INSERT INTO local_threepid_associations (medium, address, mxid, ts, notBefore, notAfter, lookup_hash)
      VALUES ('email', 'alice@example.com', '@alice:example.com', 1700000000000, 1700000000000, 1900000000000, 'oldhash1');
    INSERT INTO local_threepid_associations (medium, address, mxid, ts, notBefore, notAfter, lookup_hash)
      VALUES ('msisdn', '447700900000', NULL, NULL, NULL, NULL, 'oldhash2');
    INSERT INTO global_threepid_associations
        (medium, address, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc, lookup_hash)
      VALUES ('email', 'alice@example.com', '@alice:example.com', 1700000000000, 1700000000000, 1900000000000,
              'id.example.com', 1, '{"signatures":{}}', 'oldhash1');
    INSERT INTO global_threepid_associations
        (medium, address, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc, lookup_hash)
      VALUES ('email', 'Bob@Peer.example', '@bob:peer.example', 1600000000000, 1600000000000, 1800000000000,
              'peer.example', 42, '{"mxid":"@bob:peer.example"}', 'oldhash3');
    INSERT INTO hashing_metadata (id, lookup_pepper) VALUES (0, 'AbC12');
    INSERT INTO invite_tokens (medium, address, room_id, sender, token, received_ts, sent_ts)
      VALUES ('email', 'carol@example.com', '!room:example.com', '@alice:example.com', 'tok', 1700000000, NULL);
    INSERT INTO ephemeral_public_keys (public_key, verify_count, persistence_ts)
      VALUES ('n3wK3y_url-safe', 2, 1700000000);
    INSERT INTO peers (name, port, lastSentVersion, lastPokeSucceededAt, active)
      VALUES ('peer.example', 1001, 1, 1700000000999, 1);
    INSERT INTO peer_pubkeys (peername, alg, key) VALUES ('peer.example', 'ed25519', 'c29tZWtleQ');
    INSERT INTO accounts (user_id, created_ts, consent_version) VALUES ('@alice:example.com', 1700000000000, '1.0');
    INSERT INTO tokens (token, user_id) VALUES ('accesstoken123', '@alice:example.com');
    INSERT INTO accepted_terms_urls (user_id, url) VALUES ('@alice:example.com', 'https://example.com/terms-1.0.html');
  `);
}

function buildSydentV5(file: string): void {
  const db = rawOpen(file);
  db.exec(FIXTURE);
  db.pragma('user_version = 5');
  insertSydentRows(db);
  db.close();
}

// The final schema of §3.2, written out as SQLite reports it: [name, declared type, notnull, default, pk].
type Col = [string, string, 0 | 1, string | null, number];
const EXPECTED_COLUMNS: Record<(typeof SYDENT_TABLES)[number], Col[]> = {
  threepid_validation_sessions: [
    ['id', 'integer', 0, null, 1],
    ['medium', 'varchar(16)', 1, null, 0],
    ['address', 'varchar(256)', 1, null, 0],
    ['clientSecret', 'varchar(32)', 1, null, 0],
    ['validated', 'int', 0, '0', 0],
    ['mtime', 'bigint', 1, null, 0],
  ],
  threepid_token_auths: [
    ['id', 'integer', 0, null, 1],
    ['validationSession', 'integer', 1, null, 0],
    ['token', 'varchar(32)', 1, null, 0],
    ['sendAttemptNumber', 'integer', 1, null, 0],
  ],
  local_threepid_associations: [
    ['id', 'integer', 0, null, 1],
    ['medium', 'varchar(16)', 1, null, 0],
    ['address', 'varchar(256)', 1, null, 0],
    ['mxid', 'varchar(256)', 0, null, 0],
    ['ts', 'integer', 0, null, 0],
    ['notBefore', 'bigint', 0, null, 0],
    ['notAfter', 'bigint', 0, null, 0],
    ['lookup_hash', 'VARCHAR(256)', 0, null, 0],
  ],
  global_threepid_associations: [
    ['id', 'integer', 0, null, 1],
    ['medium', 'varchar(16)', 1, null, 0],
    ['address', 'varchar(256)', 1, null, 0],
    ['mxid', 'varchar(256)', 1, null, 0],
    ['ts', 'integer', 1, null, 0],
    ['notBefore', 'bigint', 1, null, 0],
    ['notAfter', 'integer', 1, null, 0],
    ['originServer', 'varchar(255)', 1, null, 0],
    ['originId', 'integer', 1, null, 0],
    ['sgAssoc', 'text', 1, null, 0],
    ['lookup_hash', 'VARCHAR(256)', 0, null, 0],
  ],
  hashing_metadata: [
    ['id', 'integer', 0, null, 1],
    ['lookup_pepper', 'varchar(256)', 0, null, 0],
  ],
  invite_tokens: [
    ['id', 'integer', 0, null, 1],
    ['medium', 'varchar(16)', 1, null, 0],
    ['address', 'varchar(256)', 1, null, 0],
    ['room_id', 'varchar(256)', 1, null, 0],
    ['sender', 'varchar(256)', 1, null, 0],
    ['token', 'varchar(256)', 1, null, 0],
    ['received_ts', 'bigint', 0, null, 0],
    ['sent_ts', 'bigint', 0, null, 0],
  ],
  ephemeral_public_keys: [
    ['id', 'integer', 0, null, 1],
    ['public_key', 'varchar(256)', 1, null, 0],
    ['verify_count', 'bigint', 0, '0', 0],
    ['persistence_ts', 'bigint', 0, null, 0],
  ],
  peers: [
    ['id', 'integer', 0, null, 1],
    ['name', 'varchar(255)', 1, null, 0],
    ['port', 'integer', 0, 'null', 0],
    ['lastSentVersion', 'integer', 0, null, 0],
    ['lastPokeSucceededAt', 'integer', 0, null, 0],
    ['active', 'integer', 1, '0', 0],
  ],
  peer_pubkeys: [
    ['id', 'integer', 0, null, 1],
    ['peername', 'varchar(255)', 1, null, 0],
    ['alg', 'varchar(16)', 1, null, 0],
    ['key', 'text', 1, null, 0],
  ],
  accounts: [
    ['user_id', 'TEXT', 1, null, 1],
    ['created_ts', 'BIGINT', 1, null, 0],
    ['consent_version', 'TEXT', 0, null, 0],
  ],
  tokens: [
    ['token', 'TEXT', 1, null, 1],
    ['user_id', 'TEXT', 1, null, 0],
  ],
  accepted_terms_urls: [
    ['user_id', 'TEXT', 1, null, 0],
    ['url', 'TEXT', 1, null, 0],
  ],
};

// [table, unique, columns]
const EXPECTED_INDEXES: Record<string, [string, 0 | 1, string[]]> = {
  threepid_validation_sessions_mtime: ['threepid_validation_sessions', 0, ['mtime']],
  local_threepid_medium_address: ['local_threepid_associations', 1, ['medium', 'address']],
  global_threepid_medium_address: ['global_threepid_associations', 0, ['medium', 'address']],
  global_threepid_medium_lower_address: ['global_threepid_associations', 0, ['medium', '<expr>']],
  global_threepid_originServer_originId: ['global_threepid_associations', 1, ['originServer', 'originId']],
  invite_token_medium_address: ['invite_tokens', 0, ['medium', 'address']],
  invite_token_token: ['invite_tokens', 0, ['token']],
  ephemeral_public_keys_index: ['ephemeral_public_keys', 1, ['public_key']],
  name: ['peers', 1, ['name']],
  peername_alg: ['peer_pubkeys', 1, ['peername', 'alg']],
  accepted_terms_urls_idx: ['accepted_terms_urls', 1, ['user_id', 'url']],
  sqlite_autoindex_accounts_1: ['accounts', 1, ['user_id']],
  sqlite_autoindex_tokens_1: ['tokens', 1, ['token']],
};

function expectFinalSydentSchema(db: Db): void {
  const s = shape(db);
  for (const [table, cols] of Object.entries(EXPECTED_COLUMNS)) {
    const actual = (s[table]?.columns ?? []) as {
      name: string;
      type: string;
      notnull: number;
      dflt_value: string | null;
      pk: number;
      hidden: number;
    }[];
    expect(
      actual.map((c) => [c.name, c.type.toLowerCase(), c.notnull, c.dflt_value, c.pk]),
      table,
    ).toEqual(cols.map(([n, t, nn, d, pk]) => [n, t.toLowerCase(), nn, d, pk]));
  }
  const allIndexes: Record<string, [string, number, string[]]> = {};
  for (const [table, t] of Object.entries(s)) {
    for (const [name, idx] of Object.entries(t.indexes)) allIndexes[name] = [table, idx.unique, idx.columns];
  }
  for (const [name, expected] of Object.entries(EXPECTED_INDEXES)) {
    expect(allIndexes[name], name).toEqual(expected);
  }
  for (const name of SYDENT_INDEXES) {
    if (DROPPED.includes(name)) expect(allIndexes[name], name).toBeUndefined();
    else expect(EXPECTED_INDEXES[name], name).toBeDefined();
  }
  // what replaces the dropped index: a lookup by hash alone is served by its first column
  expect(allIndexes['sydent_ts_global_lookup_hash_newest']?.[2][0]).toBe('lookup_hash');
  // and Sydent's own lookup by hash, after a switch back, is served by it
  const plan = db
    .prepare(
      'EXPLAIN QUERY PLAN SELECT lookup_hash, mxid FROM global_threepid_associations WHERE lookup_hash = ? AND notBefore < ? AND notAfter > ? ORDER BY lookup_hash, id',
    )
    .all('h', 1, 1) as { detail: string }[];
  expect(plan.map((p) => p.detail).join('; ')).toMatch(/USING (COVERING )?INDEX sydent_ts_global_lookup_hash_newest/);
  // No index beyond §3.2 on Sydent's tables (v0/v3 leftovers such as medium_address, lookup_hash_medium),
  // but ours, which are named sydent_ts_* and which Sydent never looks at.
  const onSydentTables = Object.entries(allIndexes)
    .filter(([name, [table]]) => (SYDENT_TABLES as readonly string[]).includes(table) && !name.startsWith('sydent_ts_'))
    .map(([name]) => name)
    .sort();
  expect(onSydentTables).toEqual(Object.keys(EXPECTED_INDEXES).sort());

  // AUTOINCREMENT: sqlite_sequence exists, and both association tables use it.
  expect(s['sqlite_sequence']).toBeDefined();
  const sql = masterSql(db);
  expect(sql['table local_threepid_associations on local_threepid_associations']).toMatch(/autoincrement/i);
  expect(sql['table global_threepid_associations on global_threepid_associations']).toMatch(/autoincrement/i);

  // The declared (unenforced) foreign keys are part of the shape too.
  expect((s['threepid_token_auths']?.foreignKeys as { table: string }[]).map((f) => f.table)).toEqual([
    'threepid_validations',
  ]);
  expect((s['peer_pubkeys']?.foreignKeys as { table: string }[]).map((f) => f.table)).toEqual(['peers']);
}

// ---------------------------------------------------------------------------------------------------

describe('fresh database', () => {
  it('is made in an existing directory only: a directory that is not there is a mistyped path', () => {
    expect(() => openDatabase(path.join(dir, 'not', 'there', 'sydent.db'))).toThrow();
    expect(fs.existsSync(path.join(dir, 'not'))).toBe(false);
  });

  it('gets the final Sydent schema, our migrations, WAL and the connection pragmas', () => {
    const file = path.join(dir, 'sydent.db');
    const db = openDatabase(file);
    try {
      expect(fs.existsSync(file)).toBe(true);
      expect(userVersion(db)).toBe(LATEST);
      expect(LATEST).toBe(15);

      expectFinalSydentSchema(db);

      // Same shape and even the same stored CREATE text as a database Sydent made, less the index dropped.
      const reference = fixtureDb();
      expect(shape(db, NOT_SYDENTS)).toEqual(shape(reference, DROPPED));
      expect(masterSql(db, NOT_SYDENTS)).toEqual(masterSql(reference, DROPPED));
      reference.close();

      const meta = db.pragma('table_info(sydent_ts_meta)') as {
        name: string;
        type: string;
        notnull: number;
        pk: number;
      }[];
      expect(meta.map((c) => [c.name, c.type, c.notnull, c.pk])).toEqual([
        ['key', 'TEXT', 0, 1],
        ['value', 'TEXT', 1, 0],
      ]);

      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(db.pragma('synchronous', { simple: true })).toBe(1); // NORMAL
      expect(db.pragma('busy_timeout', { simple: true })).toBe(5000);
      expect(db.pragma('foreign_keys', { simple: true })).toBe(0);

      // Sydent's token insert references a table that does not exist: must not be rejected.
      db.prepare(
        'INSERT INTO threepid_token_auths (validationSession, token, sendAttemptNumber) VALUES (1, ?, -1)',
      ).run('x');
    } finally {
      closeDatabase(db);
    }
    closeDatabase(db); // a second close is harmless
    expect(db.open).toBe(false);
  });

  it('reopening changes nothing', () => {
    const file = path.join(dir, 'sydent.db');
    closeDatabase(openDatabase(file));
    const before = rawOpen(file);
    const schemaBefore = masterSql(before);
    before.close();

    const db = openDatabase(file);
    expect(userVersion(db)).toBe(LATEST);
    expect(masterSql(db)).toEqual(schemaBefore);
    closeDatabase(db);
  });

  it('migrate reports what it did', () => {
    const db = rawOpen(path.join(dir, 'sydent.db'));
    expect(migrate(db)).toEqual({
      fromVersion: 0,
      toVersion: LATEST,
      created: true,
      applied: [
        '5 sydent_schema',
        '6 sydent_ts_meta',
        '7 session_machines',
        '8 callback_outbox',
        '9 global_lookup_hash_covering_index',
        '10 global_lookup_hash_newest_index',
        '11 session_lookup_index',
        '12 state_counts',
        '13 callback_destination_indexes',
        '14 drop_session_state_index',
        '15 drop_redundant_lookup_hash_index',
      ],
    });
    expect(migrate(db)).toEqual({ fromVersion: LATEST, toVersion: LATEST, created: false, applied: [] });
    db.close();
  });
});

describe('existing Sydent database (user_version 5)', () => {
  it('opens unchanged: same rows, Sydent’s schema less the index one of ours covers, only our tables added', () => {
    const file = path.join(dir, 'sydent.db');
    buildSydentV5(file);

    const before = rawOpen(file);
    const rowsBefore = dumpRows(before);
    const schemaBefore = masterSql(before, DROPPED);
    const shapeBefore = shape(before, DROPPED);
    before.close();
    expect((rowsBefore['local_threepid_associations'] ?? []).length).toBe(2);
    expect((rowsBefore['sqlite_sequence'] ?? []).length).toBe(2);

    const db = openDatabase(file);
    try {
      expect(userVersion(db)).toBe(LATEST);
      expect(dumpRows(db)).toEqual(rowsBefore);
      expect(masterSql(db, NOT_SYDENTS)).toEqual(schemaBefore);
      expect(shape(db, NOT_SYDENTS)).toEqual(shapeBefore);
      // Only our tables (and their indexes) are new.
      expect(
        Object.keys(masterSql(db))
          .filter((k) => !(k in schemaBefore))
          .sort(),
      ).toEqual([
        'index callback_outbox_due on callback_outbox',
        'index sqlite_autoindex_sydent_ts_callback_counts_1 on sydent_ts_callback_counts',
        'index sqlite_autoindex_sydent_ts_machine_counts_1 on sydent_ts_machine_counts',
        'index sqlite_autoindex_sydent_ts_meta_1 on sydent_ts_meta',
        'index sydent_ts_callback_leases on callback_outbox',
        'index sydent_ts_callback_open on callback_outbox',
        'index sydent_ts_global_lookup_hash_newest on global_threepid_associations',
        'index sydent_ts_sessions_lookup on threepid_validation_sessions',
        'index sydent_ts_token_auths_session on threepid_token_auths',
        'table callback_outbox on callback_outbox',
        'table session_machines on session_machines',
        'table sydent_ts_callback_counts on sydent_ts_callback_counts',
        'table sydent_ts_machine_counts on sydent_ts_machine_counts',
        'table sydent_ts_meta on sydent_ts_meta',
        'table sydent_ts_sydent_session_counts on sydent_ts_sydent_session_counts',
        'trigger sydent_ts_count_callback_delete on callback_outbox',
        'trigger sydent_ts_count_callback_insert on callback_outbox',
        'trigger sydent_ts_count_callback_state on callback_outbox',
        'trigger sydent_ts_count_machine_delete on session_machines',
        'trigger sydent_ts_count_machine_insert on session_machines',
        'trigger sydent_ts_count_machine_state on session_machines',
        'trigger sydent_ts_count_session_insert on threepid_validation_sessions',
        'trigger sydent_ts_count_session_validated on threepid_validation_sessions',
        'trigger sydent_ts_session_delete on threepid_validation_sessions',
      ]);
      expectFinalSydentSchema(db);

      // Sydent's pepper is kept, and no rehash happens.
      let calls = 0;
      expect(ensurePepper(db, (...a) => (calls++, sha256Hash(...a)))).toBe('AbC12');
      expect(calls).toBe(0);
      expect(dumpRows(db)).toEqual(rowsBefore);
    } finally {
      closeDatabase(db);
    }

    // What Sydent itself reads at start-up: version 6 is above every step it knows, so it leaves it be.
    const after = rawOpen(file);
    expect(userVersion(after)).toBe(LATEST);
    expect(dumpRows(after)).toEqual(rowsBefore);
    after.close();
  });
});

describe('older Sydent databases', () => {
  it('upgrades a v3 database to the same shape, keeping its rows', () => {
    const file = path.join(dir, 'sydent.db');
    const old = rawOpen(file);
    for (const sql of v3Statements()) old.exec(sql);
    old.pragma('user_version = 3');
    old.exec(`
      INSERT INTO local_threepid_associations (medium, address, mxid, ts, notBefore, notAfter, lookup_hash)
        VALUES ('email', 'alice@example.com', '@alice:example.com', 1, 2, 3, 'h1');
      INSERT INTO local_threepid_associations (medium, address, mxid, ts, notBefore, notAfter, lookup_hash)
        VALUES ('email', 'gone@example.com', NULL, NULL, NULL, NULL, 'h2');
      INSERT INTO global_threepid_associations
          (medium, address, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc, lookup_hash)
        VALUES ('email', 'alice@example.com', '@alice:example.com', 1, 2, 3, 'id.example.com', 1, '{}', 'h1');
      INSERT INTO hashing_metadata (id, lookup_pepper) VALUES (0, 'xyz89');
    `);
    expect(Object.keys(masterSql(old))).toContain('index lookup_hash_medium on global_threepid_associations');
    const assocBefore = old.prepare('SELECT * FROM local_threepid_associations ORDER BY id').all();
    const globalBefore = old.prepare('SELECT * FROM global_threepid_associations ORDER BY id').all();
    old.close();

    const db = openDatabase(file);
    try {
      expect(userVersion(db)).toBe(LATEST);
      expectFinalSydentSchema(db);
      const reference = fixtureDb();
      expect(shape(db, NOT_SYDENTS)).toEqual(shape(reference, DROPPED));
      expect(masterSql(db, NOT_SYDENTS)).toEqual(masterSql(reference, DROPPED));
      reference.close();
      expect(db.prepare('SELECT * FROM local_threepid_associations ORDER BY id').all()).toEqual(assocBefore);
      expect(db.prepare('SELECT * FROM global_threepid_associations ORDER BY id').all()).toEqual(globalBefore);
      expect(getPepper(db)).toBe('xyz89');
    } finally {
      closeDatabase(db);
    }
  });

  it('upgrades a v0 database (user_version 0 with tables) through v0→v1, renumbering ids like Sydent', () => {
    const file = path.join(dir, 'sydent.db');
    const old = rawOpen(file);
    for (const sql of SYDENT_V0_SCHEMA) old.exec(sql);
    old.exec(`
      INSERT INTO local_threepid_associations (id, medium, address, mxid, ts, notBefore, notAfter)
        VALUES (5, 'email', 'a@example.com', '@a:example.com', 10, 11, 12);
      INSERT INTO local_threepid_associations (id, medium, address, mxid, ts, notBefore, notAfter)
        VALUES (9, 'msisdn', '15551234567', '@b:example.com', 20, 21, 22);
      INSERT INTO global_threepid_associations
          (id, medium, address, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc)
        VALUES (7, 'email', 'a@example.com', '@a:example.com', 10, 11, 12, 'id.example.com', 5, '{}');
      INSERT INTO peers (name, port, lastSentVersion, active) VALUES ('peer.example', 1001, 9, 1);
    `);
    expect(userVersion(old)).toBe(0);
    old.close();

    const db = openDatabase(file);
    try {
      expect(userVersion(db)).toBe(LATEST);
      expectFinalSydentSchema(db);
      const reference = fixtureDb();
      expect(shape(db, NOT_SYDENTS)).toEqual(shape(reference, DROPPED));
      expect(masterSql(db, NOT_SYDENTS)).toEqual(masterSql(reference, DROPPED));
      reference.close();

      expect(
        db
          .prepare(
            'SELECT id, medium, address, mxid, ts, notBefore, notAfter, lookup_hash FROM local_threepid_associations ORDER BY id',
          )
          .all(),
      ).toEqual([
        {
          id: 1,
          medium: 'email',
          address: 'a@example.com',
          mxid: '@a:example.com',
          ts: 10,
          notBefore: 11,
          notAfter: 12,
          lookup_hash: null,
        },
        {
          id: 2,
          medium: 'msisdn',
          address: '15551234567',
          mxid: '@b:example.com',
          ts: 20,
          notBefore: 21,
          notAfter: 22,
          lookup_hash: null,
        },
      ]);
      expect(db.prepare('SELECT id, originId FROM global_threepid_associations').all()).toEqual([
        { id: 1, originId: 5 },
      ]);
      expect(db.prepare('SELECT name, seq FROM sqlite_sequence ORDER BY name').all()).toEqual([
        { name: 'global_threepid_associations', seq: 1 },
        { name: 'local_threepid_associations', seq: 2 },
      ]);
      expect(db.prepare('SELECT name, lastSentVersion FROM peers').all()).toEqual([
        { name: 'peer.example', lastSentVersion: 9 },
      ]);
    } finally {
      closeDatabase(db);
    }
  });
});

describe('versions we do not know', () => {
  it('refuses a database newer than this code, touching nothing', () => {
    const file = path.join(dir, 'sydent.db');
    buildSydentV5(file);
    const raw = rawOpen(file);
    raw.pragma('user_version = 999');
    const rowsBefore = dumpRows(raw);
    const schemaBefore = masterSql(raw);
    raw.close();

    expect(() => openDatabase(file)).toThrow(SchemaVersionError);
    expect(() => openDatabase(file)).toThrow(
      new RegExp(
        `schema version 999 is newer than this sydent-ts understands \\(at most ${LATEST}\\); refusing to start`,
      ),
    );

    const after = rawOpen(file);
    expect(userVersion(after)).toBe(999);
    expect(masterSql(after)).toEqual(schemaBefore);
    expect(dumpRows(after)).toEqual(rowsBefore);
    after.close();
  });

  it('rejects a migration list with gaps', () => {
    const db = rawOpen(path.join(dir, 'sydent.db'));
    const broken: Migration[] = [{ version: 7, name: 'skips_six', up: () => {} }];
    expect(() => migrate(db, broken)).toThrow(/expected 6/);
    expect(userVersion(db)).toBe(0);
    db.close();
  });
});

describe('lookup pepper', () => {
  function seedAssociations(db: Db): void {
    db.exec(`
      INSERT INTO local_threepid_associations (medium, address, mxid, ts, notBefore, notAfter)
        VALUES ('email', 'alice@example.com', '@alice:example.com', 1, 2, 3);
      INSERT INTO local_threepid_associations (medium, address, mxid, ts, notBefore, notAfter)
        VALUES ('msisdn', '447700900000', NULL, NULL, NULL, NULL);
      INSERT INTO global_threepid_associations
          (medium, address, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc)
        VALUES ('email', 'alice@example.com', '@alice:example.com', 1, 2, 3, 'id.example.com', 1, '{}');
      INSERT INTO global_threepid_associations
          (medium, address, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc)
        VALUES ('email', 'Bob@Peer.Example', '@bob:peer.example', 1, 2, 3, 'peer.example', 7, '{}');
    `);
  }

  function expectHashedWith(db: Db, pepper: string): void {
    for (const table of ['local_threepid_associations', 'global_threepid_associations']) {
      const rows = db.prepare(`SELECT medium, address, lookup_hash FROM ${table}`).all() as {
        medium: string;
        address: string;
        lookup_hash: string | null;
      }[];
      expect(rows.length).toBeGreaterThan(0);
      for (const r of rows)
        expect(r.lookup_hash, `${table} ${r.address}`).toBe(sha256Hash(r.address, r.medium, pepper));
    }
  }

  it('is created once (5 chars of [0-9a-zA-Z]) with every row hashed, and kept on reopen', () => {
    const file = path.join(dir, 'sydent.db');
    let db = openDatabase(file);
    seedAssociations(db);
    expect(getPepper(db)).toBeNull();

    const pepper = ensurePepper(db, sha256Hash);
    expect(pepper).toMatch(/^[0-9a-zA-Z]{5}$/);
    expect(db.prepare('SELECT id, lookup_pepper FROM hashing_metadata').all()).toEqual([
      { id: 0, lookup_pepper: pepper },
    ]);
    expectHashedWith(db, pepper);
    // Case is not folded into the hash (Sydent hashes the stored address as is).
    const bob = db.prepare('SELECT lookup_hash FROM global_threepid_associations WHERE originId = 7').get() as {
      lookup_hash: string;
    };
    expect(bob.lookup_hash).toBe(sha256Hash('Bob@Peer.Example', 'email', pepper));

    let calls = 0;
    expect(ensurePepper(db, (...a) => (calls++, sha256Hash(...a)))).toBe(pepper);
    expect(calls).toBe(0);
    closeDatabase(db);

    db = openDatabase(file);
    expect(ensurePepper(db, sha256Hash)).toBe(pepper);
    expect(db.prepare('SELECT count(*) AS n FROM hashing_metadata').get()).toEqual({ n: 1 });
    closeDatabase(db);
  });

  it('treats an empty stored pepper as none, as Sydent does', () => {
    const db = openDatabase(path.join(dir, 'sydent.db'));
    seedAssociations(db);
    db.exec("INSERT INTO hashing_metadata (id, lookup_pepper) VALUES (0, '')");
    const pepper = ensurePepper(db, sha256Hash);
    expect(pepper).toMatch(/^[0-9a-zA-Z]{5}$/);
    expectHashedWith(db, pepper);
    closeDatabase(db);
  });

  it('setPepper rehashes every row, in more than one batch', () => {
    const db = openDatabase(path.join(dir, 'sydent.db'));
    seedAssociations(db);
    const insert = db.prepare(
      "INSERT INTO local_threepid_associations (medium, address, mxid, ts, notBefore, notAfter) VALUES ('email', ?, '@u:example.com', 1, 2, 3)",
    );
    db.transaction(() => {
      for (let i = 0; i < 2500; i++) insert.run(`user${i}@example.com`);
    })();
    ensurePepper(db, sha256Hash);

    setPepper(db, 'Rot8d', sha256Hash);
    expect(getPepper(db)).toBe('Rot8d');
    expectHashedWith(db, 'Rot8d');
    expect(db.prepare('SELECT count(*) AS n FROM local_threepid_associations WHERE lookup_hash IS NULL').get()).toEqual(
      { n: 0 },
    );
    closeDatabase(db);
  });

  it('setPepper is one transaction: a failure half way changes neither pepper nor any hash', () => {
    const db = openDatabase(path.join(dir, 'sydent.db'));
    seedAssociations(db);
    const pepper = ensurePepper(db, sha256Hash);
    const before = dumpRows(db);

    let calls = 0;
    const failing: LookupHashFn = (...a) => {
      if (++calls === 3) throw new Error('hash failed');
      return sha256Hash(...a);
    };
    expect(() => setPepper(db, 'New01', failing)).toThrow('hash failed');
    expect(calls).toBe(3);
    expect(getPepper(db)).toBe(pepper);
    expect(dumpRows(db)).toEqual(before);
    expect(db.inTransaction).toBe(false);

    expect(() => setPepper(db, '', sha256Hash)).toThrow(/non-empty/);
    closeDatabase(db);
  });
});

describe('atomic migrations', () => {
  it('a migration that throws half way leaves user_version and schema as before', () => {
    const file = path.join(dir, 'sydent.db');
    closeDatabase(openDatabase(file));

    const db = rawOpen(file);
    const schemaBefore = masterSql(db);
    const boom: Migration = {
      version: 7,
      name: 'boom',
      up: (d) => {
        d.exec('CREATE TABLE half_done (a INTEGER)');
        d.exec("INSERT INTO sydent_ts_meta (key, value) VALUES ('k', 'v')");
        d.exec('ALTER TABLE sydent_ts_meta ADD COLUMN extra TEXT');
        throw new Error('boom');
      },
    };
    expect(() => migrate(db, [...OUR_MIGRATIONS, boom])).toThrow('boom');
    expect(userVersion(db)).toBe(LATEST);
    expect(masterSql(db)).toEqual(schemaBefore);
    expect(db.prepare('SELECT count(*) AS n FROM sydent_ts_meta').get()).toEqual({ n: 0 });
    expect(db.inTransaction).toBe(false);
    db.close();
  });

  it('each step commits on its own: Sydent steps stay done when one of ours fails', () => {
    const file = path.join(dir, 'sydent.db');
    const old = rawOpen(file);
    for (const sql of v3Statements()) old.exec(sql);
    old.pragma('user_version = 3');
    old.close();

    const failingSix: Migration = {
      version: 6,
      name: 'fails',
      up: (d) => {
        d.exec('CREATE TABLE half_done (a INTEGER)');
        throw new Error('six failed');
      },
    };
    expect(() => openDatabase(file, { migrations: [failingSix] })).toThrow('six failed');

    const db = rawOpen(file);
    expect(userVersion(db)).toBe(5);
    const reference = fixtureDb();
    expect(masterSql(db)).toEqual(masterSql(reference));
    reference.close();
    db.close();

    // And the next start carries on from there.
    const reopened = openDatabase(file);
    expect(userVersion(reopened)).toBe(LATEST);
    closeDatabase(reopened);
  });
});
