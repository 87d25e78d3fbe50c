/**
 * Speed that holds as the tables grow: every statement the store prepares for its reads and writes is planned by
 * SQLite (EXPLAIN QUERY PLAN) on a database with our migrations, and none may walk a table that grows with use
 * (sessions, tokens, associations, invites, accounts, the callback outbox) from end to end, whether over its rows or
 * over a whole index: each must find its rows by a key. The few statements that count or sweep a whole table by
 * design are listed below with the reason, and none of them answers a client.
 */
import { describe, expect, it } from 'vitest';
import { AccountReads } from '../src/store/accounts.js';
import { AssociationReads } from '../src/store/associations.js';
import { CALLBACK_CLAIM_SQL, CALLBACK_NEXT_DUE_SQL, CallbackReads } from '../src/store/callbacks.js';
import { openDatabase, type SqliteDatabase } from '../src/store/database.js';
import { createWrites } from '../src/store/index.js';
import { InviteReads } from '../src/store/invites.js';
import { PeerReads } from '../src/store/peers.js';
import { SessionReads } from '../src/store/sessions.js';

/** Tables whose row count grows with the users and their requests (peers, keys and the pepper do not). */
const GROWING = new Set([
  'threepid_validation_sessions',
  'threepid_token_auths',
  'session_machines',
  'local_threepid_associations',
  'global_threepid_associations',
  'invite_tokens',
  'ephemeral_public_keys',
  'accounts',
  'tokens',
  'accepted_terms_urls',
  'callback_outbox',
]);

/** Statements that go over a whole table on purpose, by the start of their text, and why that is acceptable. */
const WHOLE_TABLE_BY_DESIGN: Record<string, string> = {};

/** Every statement the store's table modules prepare, as they prepare them. */
function preparedStatements(db: SqliteDatabase): string[] {
  const seen = new Set<string>();
  const prepare = db.prepare.bind(db);
  const recording = Object.create(db) as SqliteDatabase;
  recording.prepare = (sql: string) => {
    seen.add(sql);
    return prepare(sql);
  };
  new AccountReads(recording);
  new SessionReads(recording);
  new AssociationReads(recording);
  new CallbackReads(recording);
  new InviteReads(recording);
  new PeerReads(recording);
  createWrites(recording);
  return [...seen];
}

/** The plan of `sql`, its parameters all NULL (the plan does not depend on their values). */
function plan(db: SqliteDatabase, sql: string): string[] {
  const explain = db.prepare(`EXPLAIN QUERY PLAN ${sql}`);
  const named = [...new Set([...sql.matchAll(/@(\w+)/g)].map((m) => m[1]!))];
  const positional = (sql.match(/\?/g) ?? []).length;
  const rows = (
    named.length > 0
      ? explain.all(Object.fromEntries(named.map((n) => [n, null])))
      : explain.all(...new Array(positional).fill(null))
  ) as {
    detail: string;
  }[];
  return rows.map((r) => r.detail);
}

/** Table names by the aliases a statement gives them. */
function aliases(sql: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of sql.matchAll(/\b(?:FROM|JOIN|UPDATE|INTO)\s+(\w+)(?:\s+(?:AS\s+)?(\w+))?/gi)) {
    const table = m[1]!;
    out.set(table, table);
    const alias = m[2];
    if (alias && !/^(WHERE|ON|SET|LEFT|JOIN|GROUP|ORDER|LIMIT|VALUES|USING|AS)$/i.test(alias)) out.set(alias, table);
  }
  return out;
}

/** The growing tables a plan walks end to end (`SCAN <table>`, with or without an index). */
function fullScans(sql: string, details: string[]): string[] {
  const names = aliases(sql);
  const out: string[] = [];
  for (const detail of details) {
    const m = /^SCAN (\w+)/.exec(detail);
    const table = m ? names.get(m[1]!) : undefined;
    if (table && GROWING.has(table)) out.push(`${table}: ${detail}`);
  }
  return out;
}

describe('query plans', () => {
  it('no statement of the store walks a growing table end to end, except the counts and sweeps listed with their reasons', () => {
    const db = openDatabase(':memory:');
    try {
      const statements = preparedStatements(db);
      // Enough of them to be the store's statements, not a recording that missed the modules.
      expect(statements.length).toBeGreaterThan(50);
      const offenders: string[] = [];
      const exempted = new Set<string>();
      for (const sql of statements) {
        const text = sql.replace(/\s+/g, ' ').trim();
        const scans = fullScans(sql, plan(db, sql));
        if (scans.length === 0) continue;
        const exemption = Object.keys(WHOLE_TABLE_BY_DESIGN).find((prefix) => text.startsWith(prefix));
        if (exemption) exempted.add(exemption);
        else offenders.push(`${text}\n    ${scans.join('\n    ')}`);
      }
      expect(offenders).toEqual([]);
      // Each exemption is still needed: a list that outlived its statements would hide a new one.
      expect([...exempted].sort()).toEqual(Object.keys(WHOLE_TABLE_BY_DESIGN).sort());
    } finally {
      db.close();
    }
  });

  it('finds a session for requestToken by its key, newest first, without walking the mtime index', () => {
    const db = openDatabase(':memory:');
    try {
      const sql =
        'SELECT id FROM threepid_validation_sessions WHERE medium = ? AND address = ? AND clientSecret = ? ORDER BY mtime DESC LIMIT 1';
      expect(preparedStatements(db)).toContain(sql);
      expect(plan(db, sql)).toEqual([
        'SEARCH threepid_validation_sessions USING COVERING INDEX sydent_ts_sessions_lookup (medium=? AND address=? AND clientSecret=?)',
      ]);
    } finally {
      db.close();
    }
  });

  it('sweeps expired sessions by the mtime index and their token rows by session id, never the whole tables', () => {
    const db = openDatabase(':memory:');
    try {
      const statements = preparedStatements(db).map((sql) => sql.replace(/\s+/g, ' ').trim());
      const expired = 'SELECT id FROM threepid_validation_sessions WHERE mtime < ? ORDER BY mtime LIMIT ?';
      const byMtime =
        'SEARCH threepid_validation_sessions USING COVERING INDEX threepid_validation_sessions_mtime (mtime<?)';
      const expected: Record<string, string[]> = {
        [`DELETE FROM threepid_token_auths WHERE validationSession IN (${expired})`]: [
          'SEARCH threepid_token_auths USING COVERING INDEX sydent_ts_token_auths_session (validationSession=?)',
          'LIST SUBQUERY 1',
          byMtime,
        ],
        [`DELETE FROM threepid_validation_sessions WHERE id IN (${expired})`]: [
          'SEARCH threepid_validation_sessions USING INTEGER PRIMARY KEY (rowid=?)',
          'LIST SUBQUERY 1',
          byMtime,
        ],
      };
      for (const [sql, details] of Object.entries(expected)) {
        expect(statements).toContain(sql);
        expect(plan(db, sql)).toEqual(details);
      }
      // Nothing else the store prepares deletes sessions, tokens or machine rows wholesale (a session's machine row
      // goes with it: a trigger, checked in session-counts.test.ts).
      expect(
        statements
          .filter((sql) =>
            /^DELETE FROM (threepid_validation_sessions|threepid_token_auths|session_machines)\b/.test(sql),
          )
          .sort(),
      ).toEqual(Object.keys(expected).sort());
    } finally {
      db.close();
    }
  });

  it('the notifier’s claim and next-due read reach the outbox by destination, never over a refusing homeserver’s backlog', () => {
    const db = openDatabase(':memory:');
    try {
      // One homeserver refuses every callback: thousands of its rows wait, due or backing off, one of them in flight;
      // two others have a row each. ANALYZE, so that the plans are those of a planner that knows the skew.
      const insert = db.prepare(
        `INSERT INTO callback_outbox (destination, path, body, medium, address, state, attempts, next_attempt_ts, claimed_until, created_ts)
         VALUES (?, '/p', '{}', 'email', 'a@example.com', ?, ?, ?, ?, 0)`,
      );
      db.transaction(() => {
        for (let i = 0; i < 5000; i++) insert.run('dead.test', i % 2 ? 'pending' : 'retrying', i % 2 ? 0 : 3, i, null);
        for (let i = 0; i < 2000; i++) insert.run('dead.test', 'delivered', 1, i, null);
        insert.run('dead.test', 'delivering', 4, 0, 10 ** 9);
        insert.run('a.test', 'pending', 0, 100, null);
        insert.run('b.test', 'retrying', 2, 10 ** 7, null);
      })();
      db.exec('ANALYZE');
      const statements = preparedStatements(db);
      for (const sql of [CALLBACK_CLAIM_SQL, CALLBACK_NEXT_DUE_SQL]) {
        expect(statements).toContain(sql);
        const outbox = plan(db, sql).filter((d) => /^(SCAN|SEARCH) (callback_outbox|c|f|l)\b/.test(d));
        expect(outbox.length).toBeGreaterThan(0);
        // Each read of the outbox is a probe by destination (or by id), never a range over the state index.
        const unkeyed = outbox.filter(
          (d) => !/\((destination[=>]\?|rowid=\?)/.test(d) && !/USING INTEGER PRIMARY KEY \(rowid=\?\)/.test(d),
        );
        expect({ sql, unkeyed }).toEqual({ sql, unkeyed: [] });
        expect(plan(db, sql).filter((d) => /GROUP BY/.test(d))).toEqual([]);
      }
      // Still the right answers over that backlog, with dead.test busy.
      const reads = new CallbackReads(db);
      expect(reads.nextDue(['dead.test'])).toBe(100);
      expect(reads.nextDue(['dead.test', 'a.test'])).toBe(10 ** 7);
      const claimed = createWrites(db).callbacks.claim({
        now: 1000,
        claimedUntil: 2000,
        limit: 8,
        excludeDestinations: ['dead.test'],
      });
      expect(claimed.map((c) => c.destination)).toEqual(['a.test']);
    } finally {
      db.close();
    }
  });

  it("the triggers' statements find their rows by key", () => {
    const db = openDatabase(':memory:');
    try {
      const triggers = db.prepare("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").all() as {
        name: string;
        sql: string;
      }[];
      expect(triggers.length).toBeGreaterThanOrEqual(9);
      const statements = triggers.flatMap(({ sql }) =>
        sql
          .replace(/^[\s\S]*?\bBEGIN\b/, '')
          .replace(/\bEND\s*$/, '')
          .split(';')
          .map((x) => x.trim())
          .filter(Boolean),
      );
      const offenders: string[] = [];
      for (const sql of statements) {
        // OLD.x and NEW.x stand for values: planned as parameters.
        const text = sql.replace(/\b(?:OLD|NEW)\.\w+/g, '?');
        const scans = fullScans(text, plan(db, text));
        if (scans.length > 0) offenders.push(`${text}\n    ${scans.join('\n    ')}`);
      }
      expect(statements.length).toBeGreaterThanOrEqual(15);
      expect(offenders).toEqual([]);
    } finally {
      db.close();
    }
  });
});
