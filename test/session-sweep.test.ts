import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { SessionSweeper } from '../src/sessions/sweep.js';
import { openDatabase } from '../src/store/database.js';
import { createWrites } from '../src/store/index.js';
import { emailConf } from './helpers/email.js';
import { rows } from './helpers/rows.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';
import { startTestServer } from './helpers/server.js';
import { tempDir } from './helpers/tmp.js';

const DAY = 24 * 60 * 60 * 1000;

let smtp: SmtpTestServer;
beforeAll(async () => {
  smtp = await startSmtpServer();
});
afterAll(async () => {
  await smtp?.close();
});

describe('old sessions are swept as Sydent does (five lifetimes after their last change)', () => {
  it('removes sessions untouched for more than five days, with their tokens and machine rows, and keeps newer ones', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const start = Date.now();
      const first = await startTestServer({
        dir,
        clock: new ManualClock(start),
        conf: { email: emailConf(smtp.port) },
      });
      const ask = async (email: string, secret: string) => {
        const res = await fetch(first.url('/_matrix/identity/api/v1/validate/email/requestToken'), {
          method: 'POST',
          body: JSON.stringify({ client_secret: secret, email, send_attempt: 1 }),
        });
        expect(res.status).toBe(200);
        return ((await res.json()) as { sid: string }).sid;
      };
      const old = await ask('old@example.org', 'sweep-old');
      (first.clock as ManualClock).advance(2 * DAY);
      const recent = await ask('recent@example.org', 'sweep-recent');
      await first.server.close();

      // Started again six days after the first session: the sweep at start-up removes it, not the other.
      const second = await startTestServer({ dir, clock: new ManualClock(start + 6 * DAY) });
      try {
        const db = second.config.db.dbFile;
        await vi.waitFor(
          () => expect(rows(db, 'SELECT id FROM threepid_validation_sessions WHERE id = ?', Number(old))).toEqual([]),
          {
            timeout: 5000,
            interval: 25,
          },
        );
        expect(rows(db, 'SELECT id FROM threepid_token_auths WHERE validationSession = ?', Number(old))).toEqual([]);
        expect(rows(db, 'SELECT sid FROM session_machines WHERE sid = ?', Number(old))).toEqual([]);
        expect(rows(db, 'SELECT id FROM threepid_validation_sessions WHERE id = ?', Number(recent))).toHaveLength(1);
        expect(rows(db, 'SELECT sid FROM session_machines WHERE sid = ?', Number(recent))).toHaveLength(1);
        const gone = await fetch(
          second.url(`/_matrix/identity/api/v1/3pid/getValidated3pid?sid=${old}&client_secret=sweep-old`),
        );
        expect(gone.status).toBe(404);
      } finally {
        await second.server.close();
      }
    } finally {
      cleanup();
    }
  });
});

describe('the sweep goes a slice at a time', () => {
  it('deletes every expired session with its token and machine rows in bounded slices, and keeps live ones', async () => {
    const { dir, cleanup } = tempDir();
    const db = openDatabase(path.join(dir, 'sydent.db'));
    try {
      const now = Date.now();
      const addSession = db.prepare(
        'INSERT INTO threepid_validation_sessions (id, medium, address, clientSecret, validated, mtime) VALUES (?, ?, ?, ?, 0, ?)',
      );
      const addToken = db.prepare(
        'INSERT INTO threepid_token_auths (validationSession, token, sendAttemptNumber) VALUES (?, ?, 1)',
      );
      const addMachine = db.prepare(
        "INSERT INTO session_machines (sid, state, context, machine_version, row_version, history, updated_ts) VALUES (?, 'tokenSent', '{}', 1, 1, '[]', ?)",
      );
      // 1,203 sessions six days old (three of Sydent's, without a machine row), 20 a day old.
      const expired: number[] = [];
      const live: number[] = [];
      db.transaction(() => {
        for (let i = 0; i < 1203; i++) {
          const sid = 1000 + i * 7;
          expired.push(sid);
          addSession.run(sid, 'email', `old${i}@example.org`, `s${i}`, now - 6 * DAY + i);
          addToken.run(sid, `t${i}`);
          if (i >= 3) addMachine.run(sid, now);
        }
        for (let i = 0; i < 20; i++) {
          const sid = 1003 + i * 77;
          live.push(sid);
          addSession.run(sid, 'email', `new${i}@example.org`, `n${i}`, now - DAY);
          addToken.run(sid, `u${i}`);
          addMachine.run(sid, now);
        }
      })();
      const writes = createWrites(db);
      const slices: number[] = [];
      const sweeper = new SessionSweeper({
        store: {
          deleteExpired: async (cutoffMs, limit) => {
            const n = writes.sessions.deleteExpired(cutoffMs, limit);
            slices.push(n);
            return n;
          },
        },
        now: () => now,
        purgeAfterMs: 5 * DAY,
        everyMs: DAY,
        firstAfterMs: DAY,
        slice: 500,
        onError: (err) => {
          throw err;
        },
      });
      await sweeper.sweep();

      expect(slices).toEqual([500, 500, 203]);
      const ids = (sql: string) => (db.prepare(sql).all() as { id: number }[]).map((r) => r.id).sort((a, b) => a - b);
      const sorted = [...live].sort((a, b) => a - b);
      expect(ids('SELECT id FROM threepid_validation_sessions')).toEqual(sorted);
      expect(ids('SELECT validationSession AS id FROM threepid_token_auths')).toEqual(sorted);
      expect(ids('SELECT sid AS id FROM session_machines')).toEqual(sorted);

      // A second sweep finds nothing left to delete, in one slice.
      slices.length = 0;
      await sweeper.sweep();
      expect(slices).toEqual([0]);
      expect(ids('SELECT id FROM threepid_validation_sessions')).toEqual(sorted);
    } finally {
      db.close();
      cleanup();
    }
  });
});
