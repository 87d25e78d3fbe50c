/**
 * Sessions by state, as the debug endpoints and the metrics show them: kept as rows change (ours and Sydent's), so
 * they match a count of the rows at every step without a count walking the tables when asked.
 */
import path from 'node:path';
import type Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { closeDatabase, openDatabase } from '../src/store/database.js';
import { OUR_MIGRATIONS } from '../src/store/migrations.js';
import { CallbackReads } from '../src/store/callbacks.js';
import { SessionReads, SessionWrites, type SessionWrite } from '../src/store/sessions.js';
import { cleanupsAfterEach } from './helpers/cleanups.js';
import { sessionWrite } from './helpers/session-writes.js';
import { tempDir } from './helpers/tmp.js';

const cleanups = cleanupsAfterEach();

function open(file?: string): { db: Database.Database; file: string } {
  let f = file;
  if (!f) {
    const tmp = tempDir('sydent-ts-session-counts-');
    cleanups.push(tmp.cleanup);
    f = path.join(tmp.dir, 'sydent.db');
  }
  const db = openDatabase(f);
  cleanups.push(() => closeDatabase(db));
  return { db, file: f };
}

/** The counts by walking the rows, as the endpoints counted them before. */
function counted(db: Database.Database): Record<string, number> {
  const out: Record<string, number> = {};
  for (const { state, n } of db.prepare('SELECT state, count(*) AS n FROM session_machines GROUP BY state').all() as {
    state: string;
    n: number;
  }[]) {
    out[state] = n;
  }
  const legacy = db
    .prepare(
      `SELECT s.validated, count(*) AS n FROM threepid_validation_sessions s
       WHERE NOT EXISTS (SELECT 1 FROM session_machines m WHERE m.sid = s.id) GROUP BY s.validated`,
    )
    .all() as { validated: number; n: number }[];
  for (const { validated, n } of legacy) {
    const state = validated ? 'validated' : 'tokenSent';
    out[state] = (out[state] ?? 0) + n;
  }
  return out;
}

const write = (sid: number, over: Partial<SessionWrite> = {}): SessionWrite =>
  sessionWrite({ sid, address: `a${sid}@example.org`, ...over });

/** What Sydent writes: its session and token rows, no machine row. */
function sydentSession(db: Database.Database, sid: number, mtime: number, validated = 0): void {
  db.prepare(
    'INSERT INTO threepid_validation_sessions (id, medium, address, clientSecret, validated, mtime) VALUES (?, ?, ?, ?, ?, ?)',
  ).run(sid, 'email', `s${sid}@example.org`, 'secret', validated, mtime);
  db.prepare('INSERT INTO threepid_token_auths (validationSession, token, sendAttemptNumber) VALUES (?, ?, 1)').run(
    sid,
    'SydentToken',
  );
}

describe('sessions counted by state', () => {
  it('match the rows through creates, transitions, Sydent writes, a sweep and an orphan clean-up', () => {
    const { db } = open();
    const reads = new SessionReads(db);
    const writes = new SessionWrites(db);
    const check = () => expect(reads.countByState()).toEqual(counted(db));
    check();

    for (let sid = 1; sid <= 30; sid++) writes.create('email', 'secret', write(sid, { mtime: sid }));
    check();
    // Transitions: some validated, one bound, one saved again in the same state.
    for (let sid = 1; sid <= 10; sid++) {
      writes.save(
        write(sid, {
          state: 'validated',
          validated: true,
          mtime: sid,
          expectedSydent: { validated: 0, mtime: sid, token: 'OurToken', sendAttemptNumber: 1 },
        }),
        1,
      );
    }
    writes.save(
      write(1, {
        state: 'bound',
        validated: true,
        mtime: 1,
        expectedSydent: { validated: 1, mtime: 1, token: 'OurToken', sendAttemptNumber: 1 },
      }),
      2,
    );
    writes.save(
      write(30, { mtime: 30, expectedSydent: { validated: 0, mtime: 30, token: 'OurToken', sendAttemptNumber: 1 } }),
      1,
    );
    check();
    expect(reads.countByState()).toEqual({ tokenSent: 20, validated: 9, bound: 1 });

    // Sydent's own sessions (after a switch back): new ones, one validated by Sydent, one deleted by Sydent.
    for (let sid = 100; sid < 110; sid++) sydentSession(db, sid, sid);
    db.prepare('UPDATE threepid_validation_sessions SET validated = 1 WHERE id = ?').run(100);
    db.prepare('DELETE FROM threepid_validation_sessions WHERE id = ?').run(101);
    // Sydent validating one of ours (a machine row exists: the machine's state is what counts).
    db.prepare('UPDATE threepid_validation_sessions SET validated = 1 WHERE id = ?').run(20);
    // Sydent's sweep deleting one of ours: its machine row goes with it.
    db.prepare('DELETE FROM threepid_validation_sessions WHERE id = ?').run(29);
    expect(db.prepare('SELECT sid FROM session_machines WHERE sid = 29').all()).toEqual([]);
    check();

    // One of Sydent's sessions gets a machine row when we first save it.
    writes.save(
      write(102, {
        state: 'validated',
        validated: true,
        mtime: 102,
        expectedSydent: { validated: 0, mtime: 102, token: 'SydentToken', sendAttemptNumber: 1 },
      }),
      null,
    );
    check();

    // A rolled back change leaves the counts as they were.
    expect(() =>
      db.transaction(() => {
        writes.create('email', 'secret', write(500));
        throw new Error('rolled back');
      })(),
    ).toThrow('rolled back');
    check();

    // The sweep, a slice at a time.
    while (writes.deleteExpired(105, 4) === 4) check();
    check();
    // No machine row is left without its session.
    expect(
      db
        .prepare(
          'SELECT count(*) AS n FROM session_machines WHERE sid NOT IN (SELECT id FROM threepid_validation_sessions)',
        )
        .get(),
    ).toEqual({ n: 0 });
    expect(reads.countByState()).toEqual({ tokenSent: 5 });
  });

  it('are counted once from the rows of a database migrated from before them, machine rows left without a session removed', () => {
    const { db, file } = open();
    const writes = new SessionWrites(db);
    for (let sid = 1; sid <= 12; sid++) writes.create('email', 'secret', write(sid));
    writes.save(
      write(3, {
        state: 'validated',
        validated: true,
        expectedSydent: { validated: 0, mtime: 1_000, token: 'OurToken', sendAttemptNumber: 1 },
      }),
      1,
    );
    for (let sid = 100; sid < 105; sid++) sydentSession(db, sid, 1_000, sid === 100 ? 1 : 0);
    // Sydent's sweep before version 12 left the machine rows of the sessions it deleted.
    db.prepare('DROP TRIGGER sydent_ts_session_delete').run();
    db.prepare('DELETE FROM threepid_validation_sessions WHERE id IN (5, 6)').run();
    expect(db.prepare('SELECT count(*) AS n FROM session_machines').get()).toEqual({ n: 12 });
    db.prepare('DELETE FROM session_machines WHERE sid IN (5, 6)').run();
    const expected = counted(db);
    db.prepare(
      "INSERT INTO session_machines (sid, state, context, machine_version, row_version, history, updated_ts) VALUES (5, 'tokenSent', '{}', 1, 1, '[]', 0), (6, 'validated', '{}', 1, 1, '[]', 0)",
    ).run();
    // As it was before the counts existed (version 11).
    db.exec(
      `DROP TABLE sydent_ts_machine_counts; DROP TABLE sydent_ts_sydent_session_counts; DROP TABLE sydent_ts_callback_counts;
       DROP INDEX sydent_ts_callback_open; DROP INDEX sydent_ts_callback_leases;`,
    );
    for (const { name } of db.prepare("SELECT name FROM sqlite_master WHERE type = 'trigger'").all() as {
      name: string;
    }[])
      db.exec(`DROP TRIGGER ${name}`);
    db.pragma('user_version = 11');
    closeDatabase(db);

    const { db: again } = open(file);
    expect(again.pragma('user_version', { simple: true })).toBe(OUR_MIGRATIONS.at(-1)!.version);
    expect(new SessionReads(again).countByState()).toEqual(expected);
    expect(expected).toEqual({ tokenSent: 13, validated: 2 });
    expect(again.prepare('SELECT sid FROM session_machines WHERE sid IN (5, 6)').all()).toEqual([]);
  });
});

describe('homeserver callbacks counted by state', () => {
  it('match the outbox rows as callbacks are queued, claimed, delivered, retried, abandoned and purged', () => {
    const { db } = open();
    const rows = () => {
      const out: Record<string, number> = { pending: 0, delivering: 0, retrying: 0, delivered: 0, abandoned: 0 };
      for (const { state, n } of db
        .prepare('SELECT state, count(*) AS n FROM callback_outbox GROUP BY state')
        .all() as { state: string; n: number }[]) {
        out[state] = n;
      }
      return out;
    };
    const reads = new CallbackReads(db);
    const check = () => expect(reads.counts()).toEqual(rows());
    const add = db.prepare(
      "INSERT INTO callback_outbox (destination, path, body, medium, address, next_attempt_ts, created_ts) VALUES ('hs.example', '/x', '{}', 'email', 'a@example.org', 0, 0)",
    );
    for (let i = 0; i < 10; i++) add.run();
    check();
    db.exec("UPDATE callback_outbox SET state = 'delivering' WHERE id <= 6");
    db.exec("UPDATE callback_outbox SET state = 'delivered', delivered_ts = 1 WHERE id <= 3");
    db.exec("UPDATE callback_outbox SET state = 'retrying' WHERE id = 4");
    db.exec("UPDATE callback_outbox SET state = 'abandoned' WHERE id = 5");
    db.exec("UPDATE callback_outbox SET last_error = 'x' WHERE id = 6");
    check();
    expect(reads.counts()).toEqual({ pending: 4, delivering: 1, retrying: 1, delivered: 3, abandoned: 1 });
    db.exec("DELETE FROM callback_outbox WHERE state IN ('delivered', 'abandoned')");
    check();
  });
});
