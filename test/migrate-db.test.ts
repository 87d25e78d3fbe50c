/**
 * `sydent-ts migrate-db`: a sydent.db into PostgreSQL and back, on a real PostgreSQL server (test/helpers/postgres.ts).
 * The contents are compared here by reading both engines directly, independently of migrate-db's own checksums.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';

import { closeDatabase, openDatabase } from '../src/store/database.js';
import { getUserVersion, OUR_MIGRATIONS } from '../src/store/migrations.js';
import { migrateDbMain } from '../src/store/migrate-db/cli.js';
import { Progress } from '../src/store/migrate-db/progress.js';
import { ensureRateBuckets, RATE_BUCKETS_TABLE } from '../src/store/pg/rate-buckets.js';
import { PG_VERSION_TABLE } from '../src/store/pg/schema.js';
import { SYDENT_SCHEMA_VERSION, SYDENT_TABLES } from '../src/store/schema.js';
import { connect, testDatabase, type TestDatabase } from './helpers/postgres.js';
import { spawnServer } from './helpers/process.js';
import { sydentDb } from './helpers/sydent-rows.js';
import { tempDir } from './helpers/tmp.js';

const FIXTURE = fs.readFileSync(
  path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'sydent-v5.sql'),
  'utf8',
);
const OUR_TABLES = ['sydent_ts_meta', 'session_machines', 'callback_outbox'];
/** Derived from the rows of the tables above (migration 12): seeded in the target from the rows copied, never copied. */
const COUNT_TABLES = ['sydent_ts_callback_counts', 'sydent_ts_machine_counts', 'sydent_ts_sydent_session_counts'];
const LATEST = SYDENT_SCHEMA_VERSION + OUR_MIGRATIONS.length;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function dir(): string {
  const d = tempDir();
  cleanups.push(d.cleanup);
  return d.dir;
}

async function database(): Promise<TestDatabase> {
  const db = await testDatabase();
  cleanups.push(db.drop);
  return db;
}

/** A sydent.db as Sydent leaves it: its schema (user_version 5, none of our tables), written to as Sydent writes. */
function sydentFile(where: string, associations = 120): string {
  const file = path.join(where, 'sydent.db');
  const db = new Database(file);
  db.exec(FIXTURE);
  db.pragma(`user_version = ${SYDENT_SCHEMA_VERSION}`);
  db.exec(`
    INSERT INTO hashing_metadata (id, lookup_pepper) VALUES (0, 'pEpPeR');
    INSERT INTO invite_tokens (medium, address, room_id, sender, token, received_ts, sent_ts)
      VALUES ('email', 'bob@example.org', '!room:hs.test', '@alice:hs.test', 'tOkEn1', 1700000000, NULL),
             ('email', 'carol@example.org', '!room:hs.test', '@alice:hs.test', 'tOkEn2', 1700000001, 1700000100);
    INSERT INTO ephemeral_public_keys (public_key, verify_count, persistence_ts) VALUES ('ephemeralKey_-1', 3, 1700000000);
    INSERT INTO peers (name, port, lastSentVersion, lastPokeSucceededAt, active) VALUES ('peer.example', 1001, 42, 1700000000123, 1),
                                                                                     ('idle.example', NULL, NULL, NULL, 0);
    INSERT INTO peer_pubkeys (peername, alg, key) VALUES ('peer.example', 'ed25519', 'c29tZWtleQ');
    -- accounts and tokens are keyed by text: mixed case and non-ASCII, so the order on both engines is tested
    INSERT INTO accounts (user_id, created_ts, consent_version) VALUES ('@Zed:hs.test', 1700000000000, '1.0'),
                                                                       ('@émile:hs.test', 1700000000001, NULL),
                                                                       ('@alice:hs.test', 1700000000002, NULL);
    INSERT INTO tokens (token, user_id) VALUES ('tokZ', '@Zed:hs.test'), ('toké', '@émile:hs.test'), ('TOKa', '@alice:hs.test');
    INSERT INTO accepted_terms_urls (user_id, url) VALUES ('@Zed:hs.test', 'https://example.org/terms-1.0.html'),
                                                           ('@Zed:hs.test', 'https://example.org/privacy.html');
  `);
  db.close();

  const sydent = sydentDb(file);
  // Sessions with Sydent's random ids, one validated; text with every character COPY escapes, and a quote
  sydent.createSession({
    sid: 2147483647,
    address: 'Mixed@Example.org',
    clientSecret: 'tab\tnew\nline\\"q\r\b\f\v\\N',
    token: 'T'.repeat(32),
    mtime: 1700000000999,
  });
  sydent.createSession({
    sid: 0,
    medium: 'msisdn',
    address: '447700900000',
    clientSecret: 's2',
    token: '123456',
    validated: true,
  });
  const bind = (i: number) =>
    sydent.bind({
      medium: 'email',
      address: `user${i}@example.org`,
      mxid: `@user${i}:hs.test`,
      ts: 1700000000000 + i,
      notAfter: 4_000_000_000_000,
      lookupHash: `hash${i}`,
      originServer: 'id.example',
      sgAssoc: { mxid: `@user${i}:hs.test`, address: `user${i}@example.org`, ünïcode: '✓' },
    });
  for (let i = 1; i <= Math.min(associations, 5); i++) bind(i);
  sydent.close();
  // The rest with the same statements in one transaction (a commit per bind would take minutes)
  const raw = new Database(file);
  const local = raw.prepare(
    'INSERT OR REPLACE INTO local_threepid_associations (medium, address, lookup_hash, mxid, ts, notBefore, notAfter) VALUES (?, ?, ?, ?, ?, ?, ?)',
  );
  const global = raw.prepare(
    'INSERT INTO global_threepid_associations (medium, address, lookup_hash, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
  );
  raw.transaction(() => {
    for (let i = 6; i <= associations; i++) {
      const [address, mxid, ts] = [`user${i}@example.org`, `@user${i}:hs.test`, 1700000000000 + i];
      const id = local.run('email', address, `hash${i}`, mxid, ts, ts, 4_000_000_000_000).lastInsertRowid;
      global.run(
        'email',
        address,
        `hash${i}`,
        mxid,
        ts,
        ts,
        4_000_000_000_000,
        'id.example',
        id,
        JSON.stringify({ mxid, address }),
      );
    }
  })();
  // An unbind as Sydent records it: a new local row (a tombstone, mxid NULL), the global one deleted. The
  // AUTOINCREMENT counters are now past max(id) in the global table, and must stay so on every engine.
  raw
    .prepare(
      "INSERT OR REPLACE INTO local_threepid_associations (medium, address, mxid, ts, notBefore, notAfter) VALUES ('email', 'user1@example.org', NULL, 1700000009999, NULL, NULL)",
    )
    .run();
  raw
    .prepare(`DELETE FROM global_threepid_associations WHERE id = (SELECT max(id) FROM global_threepid_associations)`)
    .run();
  // past 2^53: kept exactly on every engine, never through a double
  raw
    .prepare('UPDATE threepid_token_auths SET sendAttemptNumber = ? WHERE validationSession = 0')
    .run(9_007_199_254_740_993n);
  raw.close();
  return file;
}

/** Every row of every table the file has (and sqlite_sequence), ordered by all columns, integers exact. */
function dumpSqlite(
  file: string,
  tables: readonly string[] = [...SYDENT_TABLES, ...OUR_TABLES, ...COUNT_TABLES, 'sqlite_sequence'],
): Record<string, unknown[]> {
  const db = new Database(file, { readonly: true });
  db.defaultSafeIntegers(true);
  try {
    const out: Record<string, unknown[]> = {};
    for (const t of tables) {
      if (!db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(t)) continue;
      const n = db.prepare(`PRAGMA table_info("${t}")`).all().length;
      const order = Array.from({ length: n }, (_, i) => i + 1).join(', ');
      out[t] = db.prepare(`SELECT * FROM "${t}" ORDER BY ${order}`).all();
    }
    return out;
  } finally {
    db.close();
  }
}

/** The same rows read from PostgreSQL, as [column → value] with integers as BigInt, in byte order. */
async function dumpPg(url: string, tables: readonly string[]): Promise<Record<string, unknown[]>> {
  const client = await connect(url);
  try {
    const out: Record<string, unknown[]> = {};
    for (const t of tables) {
      const cols = await client.query<{ column_name: string; data_type: string }>(
        'SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1 AND table_schema = current_schema() ORDER BY ordinal_position',
        [t],
      );
      const order = cols.rows
        .map((c) => `"${c.column_name}"${c.data_type === 'text' ? ' COLLATE "C"' : ''} NULLS FIRST`)
        .join(', ');
      const res = await client.query(`SELECT * FROM "${t}" ORDER BY ${order}`);
      out[t] = res.rows.map((r: Record<string, unknown>) =>
        Object.fromEntries(
          cols.rows.map((c) => {
            const v = r[c.column_name];
            return [c.column_name, v === null || c.data_type === 'text' ? v : BigInt(v as string | number)];
          }),
        ),
      );
    }
    return out;
  } finally {
    await client.end();
  }
}

/** SQLite rows with PostgreSQL's (lower-case) column names, to compare with dumpPg. */
function lowerKeys(rows: Record<string, unknown[]>): Record<string, unknown[]> {
  return Object.fromEntries(
    Object.entries(rows).map(([t, list]) => [
      t,
      list.map((r) =>
        Object.fromEntries(Object.entries(r as Record<string, unknown>).map(([k, v]) => [k.toLowerCase(), v])),
      ),
    ]),
  );
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** migrate-db in this process, as main.ts calls it. */
async function migrateDb(args: string[], cwd: string, env: Record<string, string> = {}): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const code = await migrateDbMain(['migrate-db', ...args], {
    stdout: (t) => (stdout += t),
    stderr: (t) => (stderr += t),
    env,
    cwd,
    tty: false,
  });
  return { code, stdout, stderr };
}

/** `sydent-ts migrate-db …` as its own process. */
function migrateDbProcess(args: string[], cwd: string) {
  return spawnServer({ cwd, args: ['migrate-db', ...args] });
}

async function tablesOf(url: string): Promise<string[]> {
  const client = await connect(url);
  try {
    const res = await client.query<{ table_name: string }>(
      'SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY table_name',
    );
    return res.rows.map((r) => r.table_name);
  } finally {
    await client.end();
  }
}

describe('migrate-db’s progress line', () => {
  it('rows copied of the total, rows per second, and the time left once a second of copying has been measured', () => {
    let t = 0;
    let out = '';
    const p = new Progress({
      write: (s) => (out += s),
      tty: false,
      total: 1_000_000,
      already: 100_000,
      now: () => t,
      everyMs: 2000,
    });
    p.add(1, 'accounts');
    expect(out).toBe('copying accounts: 100,001/1,000,000 rows (10%), 0 rows/s\n');
    t = 1000;
    p.add(49_999, 'accounts'); // within 2 s of the last line: none
    t = 2000;
    p.add(50_000, 'global_threepid_associations');
    expect(out.split('\n')[1]).toBe(
      'copying global_threepid_associations: 200,000/1,000,000 rows (20%), 50,000 rows/s, ETA 16 s',
    );
    p.say('migrate-db: done');
    expect(p.summary()).toBe('100,000 rows copied in 2.0 s (50,000 rows/s)');

    let tty = '';
    const q = new Progress({ write: (s) => (tty += s), tty: true, total: 10, already: 0, now: () => t });
    t += 5000;
    q.add(5, 'tokens');
    expect(tty).toBe('\r\x1b[Kcopying tokens: 5/10 rows (50%), 1 rows/s, ETA 5 s');
  });
});

describe('migrate-db: a sydent.db into PostgreSQL and back', () => {
  it(
    'Sydent’s own sydent.db → PostgreSQL → a new SQLite file: the same rows everywhere, the file at Sydent’s schema plus ours',
    { timeout: 90_000 },
    async () => {
      const d = dir();
      const source = sydentFile(d);
      const before = dumpSqlite(source);
      const pg = await database();

      const forward = await migrateDb(['--to', pg.url, '--from', `sqlite:${source}`, '--batch-rows', '50'], d);
      expect(forward.stderr).not.toContain(pg.server.password);
      expect(forward.code, forward.stderr).toBe(0);
      expect(forward.stderr).toMatch(/copying \w+: [\d,]+\/[\d,]+ rows \(\d+%\), [\d,]+ rows\/s/);
      expect(forward.stderr).toContain('counts and checksums equal');
      expect(forward.stdout).toContain('db.engine = postgresql');
      expect(forward.stdout).toContain(
        `db.url = postgresql://postgres:PASSWORD@127.0.0.1:${pg.server.port}/${pg.name}`,
      );
      expect(forward.stdout).not.toContain(pg.server.password);

      // In PostgreSQL: the schema and every row, nothing of migrate-db's own left behind
      expect(await tablesOf(pg.url)).toEqual(
        [...SYDENT_TABLES, ...OUR_TABLES, ...COUNT_TABLES, PG_VERSION_TABLE].sort(),
      );
      const { sqlite_sequence: sequences, ...sydentRows } = before;
      expect(await dumpPg(pg.url, Object.keys(sydentRows))).toEqual(lowerKeys(sydentRows));
      expect(await dumpPg(pg.url, OUR_TABLES)).toEqual({
        sydent_ts_meta: [],
        session_machines: [],
        callback_outbox: [],
      });
      // Sydent's two sessions (one validated, neither with a machine row), counted from the rows copied
      const counts = {
        sydent_ts_callback_counts: [],
        sydent_ts_machine_counts: [],
        sydent_ts_sydent_session_counts: [
          { validated: 0n, n: 1n },
          { validated: 1n, n: 1n },
        ],
      };
      expect(await dumpPg(pg.url, COUNT_TABLES)).toEqual(counts);
      expect(before['global_threepid_associations']).toHaveLength(119);

      // The file written back
      const back = path.join(d, 'back.db');
      const reverse = await migrateDb(['--to', `sqlite:${back}`, '--from', pg.url, '--batch-rows', '40'], d);
      expect(reverse.code, reverse.stderr).toBe(0);
      expect(reverse.stdout).toContain(`db.file = ${back}`);
      expect(fs.existsSync(`${back}.partial`)).toBe(false);
      expect(dumpSqlite(back, [...SYDENT_TABLES, 'sqlite_sequence'])).toEqual(before);
      expect(dumpSqlite(back, OUR_TABLES)).toEqual({ sydent_ts_meta: [], session_machines: [], callback_outbox: [] });
      expect(dumpSqlite(back, COUNT_TABLES)).toEqual(counts);
      expect(sequences).toEqual([
        { name: 'global_threepid_associations', seq: 120n },
        { name: 'local_threepid_associations', seq: 121n },
      ]);

      const file = new Database(back, { readonly: true });
      cleanups.push(() => void file.close());
      expect(getUserVersion(file)).toBe(LATEST);
      expect(file.pragma('integrity_check', { simple: true })).toBe('ok');
      // Sydent's tables and indexes exactly as Sydent's own file has them (what Sydent and sqlite3 .schema see), but
      // for its index on lookup_hash alone, which our migration 15 drops (one of ours covers it)
      const schema = (db: Database.Database) =>
        Object.fromEntries(
          (
            db
              .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sydent_ts_%'")
              .all() as { name: string; sql: string }[]
          ).map((r) => [r.name, r.sql]),
        );
      const original = new Database(source, { readonly: true });
      cleanups.push(() => void original.close());
      const { global_threepid_lookup_hash: dropped, ...sydents } = schema(original);
      expect(dropped).toBeDefined();
      expect(schema(file)).not.toHaveProperty('global_threepid_lookup_hash');
      expect(schema(file)).toMatchObject(sydents);

      // The identity sequences follow SQLite's counters: the next bind gets a new id, never a deleted one's
      const client = await connect(pg.url);
      cleanups.push(() => client.end());
      const next = await client.query<{ id: string }>(
        "INSERT INTO global_threepid_associations (medium, address, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc) VALUES ('email', 'n@x', '@n:x', 1, 1, 2, 'x', 1, '{}') RETURNING id",
      );
      expect(next.rows[0]!.id).toBe('121');
    },
  );

  it('a sydent-ts database (our tables too) → PostgreSQL → SQLite: the same rows', { timeout: 60_000 }, async () => {
    const d = dir();
    const source = path.join(d, 'ours.db');
    const db = openDatabase(source);
    db.exec(`
      INSERT INTO hashing_metadata (id, lookup_pepper) VALUES (0, 'p');
      INSERT INTO sydent_ts_meta (key, value) VALUES ('pepper_rotated_ts', '1700000000000'), ('é', 'ü');
      INSERT INTO session_machines (sid, state, context, machine_version, row_version, history, updated_ts)
        VALUES (77, 'awaitingToken', '{"a":1}', 3, 5, '[{"e":"x"}]', 1700000000000);
      INSERT INTO threepid_validation_sessions (id, medium, address, clientSecret, validated, mtime) VALUES (77, 'email', 'a@b.c', 's', 0, 1);
      INSERT INTO callback_outbox (destination, path, body, medium, address, state, attempts, next_attempt_ts, claimed_until, last_error, created_ts, delivered_ts)
        VALUES ('hs.test', '/_matrix/federation/v1/3pid/onbind', '{}', 'email', 'a@b.c', 'pending', 2, 1700000000500, NULL, 'connect ECONNREFUSED', 1700000000000, NULL),
               ('hs.test', '/_matrix/federation/v1/3pid/onbind', '{}', 'email', 'd@b.c', 'delivered', 1, 0, NULL, NULL, 1700000000000, 1700000000100);
    `);
    closeDatabase(db);
    const before = dumpSqlite(source);
    const pg = await database();
    const forward = await migrateDb(['--to', pg.url, '--from', `sqlite:${source}`], d);
    expect(forward.code, forward.stderr).toBe(0);
    expect(forward.stderr).not.toContain('not copied');
    // The counts the source's triggers kept, seeded in PostgreSQL from the rows copied
    const counts = {
      sydent_ts_callback_counts: [
        { state: 'delivered', n: 1n },
        { state: 'pending', n: 1n },
      ],
      sydent_ts_machine_counts: [{ state: 'awaitingToken', n: 1n }],
      sydent_ts_sydent_session_counts: [
        { validated: 0n, n: 0n },
        { validated: 1n, n: 0n },
      ],
    };
    expect(dumpSqlite(source, COUNT_TABLES)).toEqual(counts);
    expect(await dumpPg(pg.url, COUNT_TABLES)).toEqual(counts);
    // A node ran on it: the rate limits' working table (no SQLite twin) holds a bucket, and is not copied back.
    const node = await connect(pg.url);
    try {
      await ensureRateBuckets(node);
      await node.query(
        `INSERT INTO ${RATE_BUCKETS_TABLE} (bucket, key, tokens, at, admitted) VALUES ('b', 'k', 1, 1, true)`,
      );
    } finally {
      await node.end();
    }
    const back = path.join(d, 'back.db');
    const reverse = await migrateDb(['--to', `sqlite:${back}`], d, { SYDENT_DB_URL: pg.url });
    expect(reverse.code, reverse.stderr).toBe(0);
    // the counts included, seeded once and not counted again by the triggers as the rows went in
    expect(dumpSqlite(back)).toEqual(before);
    // and kept by the triggers from then on
    const file = new Database(back);
    file.exec(
      "UPDATE callback_outbox SET state = 'delivered' WHERE state = 'pending'; DELETE FROM threepid_validation_sessions WHERE id = 77;",
    );
    file.close();
    expect(dumpSqlite(back, COUNT_TABLES)).toEqual({
      sydent_ts_callback_counts: [
        { state: 'delivered', n: 2n },
        { state: 'pending', n: 0n },
      ],
      sydent_ts_machine_counts: [{ state: 'awaitingToken', n: 0n }],
      sydent_ts_sydent_session_counts: counts.sydent_ts_sydent_session_counts,
    });
    expect(before['callback_outbox']).toHaveLength(2);
    expect(before['sqlite_sequence']).toEqual([{ name: 'callback_outbox', seq: 2n }]);
  });

  it(
    'a database at version 11 with a machine row whose session is gone: copied and verified, then migration 12 removes the row and seeds the counts; a run stopped after that step finishes when run again',
    { timeout: 60_000 },
    async () => {
      const d = dir();
      const source = path.join(d, 'v11.db');
      const db = openDatabase(source, { migrations: OUR_MIGRATIONS.filter((m) => m.version <= 11) });
      expect(getUserVersion(db)).toBe(11);
      db.exec(`
      INSERT INTO threepid_validation_sessions (id, medium, address, clientSecret, validated, mtime) VALUES (5, 'email', 'a@b.c', 's', 1, 1), (6, 'email', 'e@b.c', 's', 0, 1);
      INSERT INTO session_machines (sid, state, context, machine_version, row_version, history, updated_ts)
        VALUES (5, 'validated', '{}', 3, 1, '[]', 1), (9, 'awaitingToken', '{}', 3, 1, '[]', 1);
    `);
      closeDatabase(db);
      const pg = await database();
      const args = ['--to', pg.url, '--from', `sqlite:${source}`];
      const first = await migrateDb(args, d);
      expect(first.code, first.stderr).toBe(0);
      expect(first.stderr).toContain('counts and checksums equal');
      const machines = async () =>
        (await dumpPg(pg.url, ['session_machines']))['session_machines']!.map((r) => (r as { sid: bigint }).sid);
      expect(await machines()).toEqual([5n]);
      const counts = {
        sydent_ts_callback_counts: [],
        sydent_ts_machine_counts: [{ state: 'validated', n: 1n }],
        sydent_ts_sydent_session_counts: [
          { validated: 0n, n: 1n },
          { validated: 1n, n: 0n },
        ],
      };
      expect(await dumpPg(pg.url, COUNT_TABLES)).toEqual(counts);

      // The target as a run killed between migration 12 and dropping its bookkeeping leaves it: the data no longer
      // matches the source (the row migration 12 removed), and it was verified before that step ran.
      const client = await connect(pg.url);
      cleanups.push(() => client.end());
      await client.query('CREATE TABLE sydent_ts_migrate_db_state (key text PRIMARY KEY, value text NOT NULL)');
      await client.query(
        "INSERT INTO sydent_ts_migrate_db_state (key, value) VALUES ('source', $1), ('indexes', '[]')",
        [fs.realpathSync(source)],
      );
      await client.query(
        'CREATE TABLE sydent_ts_migrate_db_progress (table_name text PRIMARY KEY, last_rowid bigint, rows_copied bigint NOT NULL DEFAULT 0, done boolean NOT NULL DEFAULT false)',
      );
      await client.query(
        'INSERT INTO sydent_ts_migrate_db_progress (table_name, rows_copied, done) SELECT unnest($1::text[]), 0, true',
        [[...SYDENT_TABLES, ...OUR_TABLES]],
      );
      const again = await migrateDb(args, d);
      expect(again.code, again.stderr).toBe(0);
      expect(again.stderr).toContain('the copy was verified by the run that was stopped');
      expect(await tablesOf(pg.url)).toEqual(
        [...SYDENT_TABLES, ...OUR_TABLES, ...COUNT_TABLES, PG_VERSION_TABLE].sort(),
      );
      expect(await machines()).toEqual([5n]);
      expect(await dumpPg(pg.url, COUNT_TABLES)).toEqual(counts);
    },
  );

  it('refuses a target that is not empty, and leaves it as it was; a second copy into a finished target too', async () => {
    const d = dir();
    const source = sydentFile(d, 3);
    const pg = await database();
    const client = await connect(pg.url);
    await client.query('CREATE TABLE operator_notes (note text)');
    await client.end();

    const refused = await migrateDb(['--to', pg.url, '--from', `sqlite:${source}`], d);
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim().split('\n').pop()).toBe(
      `sydent-ts migrate-db: refusing to copy into 127.0.0.1:${pg.server.port}/${pg.name}: it is not empty (1 table: operator_notes); migrate-db copies into an empty database only`,
    );
    expect(await tablesOf(pg.url)).toEqual(['operator_notes']);

    const other = await database();
    expect((await migrateDb(['--to', other.url, '--from', `sqlite:${source}`], d)).code).toBe(0);
    const again = await migrateDb(['--to', other.url, '--from', `sqlite:${source}`], d);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(
      /refusing to copy into .*: it is not empty \(19 tables: accepted_terms_urls, accounts, callback_outbox, ephemeral_public_keys, global_threepid_associations, …\)/,
    );
  });

  it('refuses to write over an existing SQLite file, and to read a database a running server holds', async () => {
    const d = dir();
    const source = sydentFile(d, 3);
    const pg = await database();
    expect((await migrateDb(['--to', pg.url, '--from', `sqlite:${source}`], d)).code).toBe(0);
    const existing = path.join(d, 'existing.db');
    fs.writeFileSync(existing, 'precious');
    const over = await migrateDb(['--to', `sqlite:${existing}`, '--from', pg.url], d);
    expect(over.code).toBe(1);
    expect(over.stderr.trim().split('\n').pop()).toBe(
      `sydent-ts migrate-db: refusing to write ${existing}: it exists; migrate-db writes a new file only`,
    );
    expect(fs.readFileSync(existing, 'utf8')).toBe('precious');

    // The instance lock a running sydent-ts holds on its database
    const holder = new Database(`${source}.lock`);
    holder.pragma('locking_mode = EXCLUSIVE');
    holder.exec('BEGIN EXCLUSIVE');
    cleanups.push(() => void holder.close());
    const other = await database();
    const busy = await migrateDb(['--to', other.url, '--from', `sqlite:${source}`], d);
    expect(busy).toMatchObject({
      code: 1,
      stderr: expect.stringContaining(`another sydent-ts is running on ${source}`),
    });
    expect(await tablesOf(other.url)).toEqual([]);
  });

  it(
    'a value PostgreSQL cannot hold stops the copy naming its row; once fixed in the source, the copy goes on',
    { timeout: 60_000 },
    async () => {
      const d = dir();
      const source = sydentFile(d, 3);
      const raw = new Database(source);
      // SQLite keeps a real number in an integer column, and a blob anywhere
      raw.prepare("UPDATE invite_tokens SET received_ts = 1700000000.5 WHERE token = 'tOkEn2'").run();
      raw.close();
      const pg = await database();
      const failed = await migrateDb(['--to', pg.url, '--from', `sqlite:${source}`], d);
      expect(failed.code).toBe(1);
      expect(failed.stderr.trim().split('\n').pop()).toBe(
        'sydent-ts migrate-db: invite_tokens row 2: column received_ts holds the real number 1700000000.5, where PostgreSQL expects an integer',
      );

      const fix = new Database(source);
      fix.prepare("UPDATE invite_tokens SET received_ts = 1700000000 WHERE token = 'tOkEn2'").run();
      fix.prepare("UPDATE peer_pubkeys SET key = x'00ff'").run();
      fix.close();
      const blob = await migrateDb(['--to', pg.url, '--from', `sqlite:${source}`], d);
      expect(blob.stderr.trim().split('\n').pop()).toBe(
        'sydent-ts migrate-db: peer_pubkeys row 1: column key holds a blob of 2 bytes, where PostgreSQL expects text',
      );

      const fix2 = new Database(source);
      fix2.prepare("UPDATE peer_pubkeys SET key = 'c29tZWtleQ'").run();
      fix2.close();
      const done = await migrateDb(['--to', pg.url, '--from', `sqlite:${source}`], d);
      expect(done.code, done.stderr).toBe(0);
      const { sqlite_sequence: _s, ...rows } = dumpSqlite(source);
      expect(await dumpPg(pg.url, Object.keys(rows))).toEqual(lowerKeys(rows));
    },
  );

  it(
    'killed (SIGKILL) in the middle of the copy, then run again: goes on where it stopped, and the result is complete and right',
    { timeout: 120_000 },
    async () => {
      const d = dir();
      const source = sydentFile(d, 20_000);
      const pg = await database();
      const args = ['--to', pg.url, '--from', `sqlite:${source}`, '--batch-rows', '100'];

      const first = migrateDbProcess(args, d);
      const watcher = await connect(pg.url);
      cleanups.push(() => watcher.end());
      let exited: number | string | undefined;
      void first.exited.then((c) => (exited = c));
      while (exited === undefined) {
        const res = await watcher
          .query<{ n: string | null }>('SELECT sum(rows_copied) AS n FROM sydent_ts_migrate_db_progress')
          .catch(() => ({ rows: [{ n: null }] }));
        if (Number(res.rows[0]!.n ?? 0) >= 2_000) break;
        await new Promise((r) => setTimeout(r, 5));
      }
      first.child.kill('SIGKILL');
      expect(await first.exited).toBe('SIGKILL');
      const after = Number(
        (await watcher.query<{ n: string }>('SELECT sum(rows_copied) AS n FROM sydent_ts_migrate_db_progress')).rows[0]!
          .n,
      );
      expect(after).toBeGreaterThanOrEqual(2_000);
      const total = 20_000 + 19_999 + 19; // local, global and the rows of Sydent's other tables
      expect(after).toBeLessThan(total);

      const second = migrateDbProcess(args, d);
      expect(await second.exited, second.stderr()).toBe(0);
      expect(second.stderr()).toContain('holds an unfinished copy of');
      expect(second.stderr()).toMatch(/resuming: [\d,]+ of 40,018 rows were copied before/);
      expect(second.stderr()).toContain('counts and checksums equal');
      expect(second.stdout()).toContain('db.engine = postgresql');

      const { sqlite_sequence: _sequences, ...rows } = dumpSqlite(source);
      expect(await dumpPg(pg.url, Object.keys(rows))).toEqual(lowerKeys(rows));
      expect(await tablesOf(pg.url)).not.toContain('sydent_ts_migrate_db_progress');
    },
  );

  it(
    'a bad URL, an unreachable server, a wrong password, a missing database: exit 1 with one line that says which, never the password',
    { timeout: 60_000 },
    async () => {
      const d = dir();
      const source = sydentFile(d, 2);
      const pg = await database();
      const { port, password } = pg.server;
      const from = ['--from', `sqlite:${source}`];

      const wrong = migrateDbProcess(
        ['--to', `postgresql://postgres:not-the-password@127.0.0.1:${port}/${pg.name}`, ...from],
        d,
      );
      expect(await wrong.exited).toBe(1);
      expect(wrong.stdout()).toBe('');
      expect(wrong.stderr()).toBe(
        `migrate-db: copying ${source} into postgresql://postgres:***@127.0.0.1:${port}/${pg.name}\n` +
          `sydent-ts migrate-db: PostgreSQL at 127.0.0.1:${port}/${pg.name} refused the password of user "postgres"\n`,
      );

      const lastLine = async (url: string) => {
        const r = await migrateDb(['--to', url, ...from], d);
        expect(r.code).toBe(1);
        expect(r.stderr).not.toContain('not-the-password');
        return r.stderr.trim().split('\n').pop();
      };
      expect(await lastLine(`postgresql://postgres:not-the-password@127.0.0.1:99999/x`)).toBe(
        'sydent-ts migrate-db: not a PostgreSQL URL: postgresql://postgres:***@127.0.0.1:99999/x (expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE)',
      );
      expect(await lastLine(`postgresql://postgres:not-the-password@127.0.0.1:1/x`)).toBe(
        'sydent-ts migrate-db: cannot connect to PostgreSQL at 127.0.0.1:1/x: connection refused (is it running, on that port?)',
      );
      expect(await lastLine(`postgresql://postgres:${password}@127.0.0.1:${port}/no_such_db`)).toBe(
        `sydent-ts migrate-db: PostgreSQL at 127.0.0.1:${port}/no_such_db: database "no_such_db" does not exist (create it first: CREATE DATABASE …)`,
      );
      const usage = await migrateDb(['--to', 'mysql://x'], d);
      expect(usage.code).toBe(2);
      expect(usage.stderr.split('\n')[0]).toBe(
        'sydent-ts migrate-db: --to mysql://x: expected postgresql://… or sqlite:PATH',
      );
      expect(await tablesOf(pg.url)).toEqual([]);
    },
  );
});
