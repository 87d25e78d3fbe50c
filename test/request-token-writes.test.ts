/**
 * What a requestToken costs the store, seen from outside: the asks each supervisor answered (the debug summary's
 * `handled`), the session's row version and mtime, and how long a session write waits for a locked database (the
 * request's deadline, not the default ask timeout).
 */
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { REPEAT_TOUCH_EVERY_MS } from '../src/machines/validation-session.js';
import { call, emailConf, mailToken } from './helpers/email.js';
import { row } from './helpers/rows.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let smtp: SmtpTestServer;
let t: TestServer;
const clock = new ManualClock(Date.now());
beforeAll(async () => {
  smtp = await startSmtpServer();
  t = await startTestServer({ clock, conf: { email: emailConf(smtp.port), http: { request_deadline_seconds: '2' } } });
  // The notifier's start-up round (purge, claim) and the first sessions sweep (2 s after start) are store asks too,
  // made on their own time: the tests count asks once these are done (the next come minutes later).
  await vi.waitFor(async () => expect((await handled())['store']).toBeGreaterThanOrEqual(3), {
    timeout: 15_000,
    interval: 100,
  });
});
afterAll(async () => {
  await t?.close();
  await smtp?.close();
});

const V1 = '/_matrix/identity/api/v1';

async function requestToken(email: string, secret: string, sendAttempt = 1): Promise<string> {
  const res = await call(t.url(`${V1}/validate/email/requestToken`), {
    body: { client_secret: secret, email, send_attempt: sendAttempt },
  });
  expect(res.status, res.text).toBe(200);
  return String(res.json['sid']);
}

/**
 * Asks the supervisors a requestToken reaches have answered so far (the summary's own asks, STATS and those to the
 * notifier and replication supervisors, are not among them).
 */
async function handled(): Promise<Record<string, number>> {
  const summary = (await (await fetch(t.internalUrl('/_sydent/debug/summary'))).json()) as {
    actors: { systemId: string; handled: number }[];
  };
  return Object.fromEntries(
    summary.actors
      .filter((a) => ['sessions', 'mailer', 'store'].includes(a.systemId))
      .map((a) => [a.systemId, a.handled]),
  );
}

function askedSince(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  return Object.fromEntries(
    Object.keys(after)
      .map((k) => [k, after[k]! - (before[k] ?? 0)])
      .filter(([, n]) => n !== 0),
  );
}

const machineRow = (sid: string) =>
  row<{ row_version: number; mtime: number }>(
    t,
    'SELECT m.row_version, s.mtime FROM session_machines m JOIN threepid_validation_sessions s ON s.id = m.sid WHERE m.sid = ?',
    Number(sid),
  )!;

describe('requestToken and the store', () => {
  it('a new session: one ask to the sessions supervisor (whose own rate limit admits the send), one to the mailer (the mail), two writes (created, then sent)', async () => {
    const before = await handled();
    const sid = await requestToken('asks.new@example.org', 'asks-secret-1');
    await smtp.waitForMessage((m) => m.to.includes('asks.new@example.org'));
    const after = await handled();
    expect(askedSince(before, after)).toEqual({ sessions: 1, mailer: 1, store: 2 });
    expect(machineRow(sid).row_version).toBe(2);
  });

  it("a send's end rewrites the machine row only: Sydent's session and token rows keep what the create wrote", async () => {
    const db = new Database(t.config.db.dbFile);
    try {
      db.exec(`CREATE TABLE test_sydent_updates (tbl TEXT NOT NULL, sid INTEGER NOT NULL);
        CREATE TRIGGER test_session_updated AFTER UPDATE ON threepid_validation_sessions
          BEGIN INSERT INTO test_sydent_updates VALUES ('sessions', NEW.id); END;
        CREATE TRIGGER test_token_updated AFTER UPDATE ON threepid_token_auths
          BEGIN INSERT INTO test_sydent_updates VALUES ('tokens', NEW.validationSession); END;`);
      const sid = await requestToken('asks.sent@example.org', 'asks-secret-4');
      await smtp.waitForMessage((m) => m.to.includes('asks.sent@example.org'));
      expect(machineRow(sid).row_version).toBe(2);
      expect(db.prepare('SELECT tbl FROM test_sydent_updates WHERE sid = ?').all(Number(sid))).toEqual([]);
    } finally {
      db.exec(`DROP TRIGGER test_session_updated; DROP TRIGGER test_token_updated; DROP TABLE test_sydent_updates;`);
      db.close();
    }
  });

  it('the same send_attempt again within a minute asks no supervisor and writes nothing; once the session is a minute older, its mtime moves once', async () => {
    const sid = await requestToken('asks.repeat@example.org', 'asks-secret-2');
    await smtp.waitForMessage((m) => m.to.includes('asks.repeat@example.org'));
    const sent = machineRow(sid);

    const before = await handled();
    clock.advance(REPEAT_TOUCH_EVERY_MS - 1_000);
    expect(await requestToken('asks.repeat@example.org', 'asks-secret-2')).toBe(sid);
    expect(await requestToken('asks.repeat@example.org', 'asks-secret-2')).toBe(sid);
    // Answered from the session's rows (sessions/repeat.ts): no ask to any supervisor.
    expect(askedSince(before, await handled())).toEqual({});
    expect(machineRow(sid)).toEqual(sent);

    clock.advance(2_000);
    const stale = await handled();
    expect(await requestToken('asks.repeat@example.org', 'asks-secret-2')).toBe(sid);
    expect(askedSince(stale, await handled())).toEqual({ sessions: 1, store: 1 });
    expect(machineRow(sid)).toEqual({ row_version: sent.row_version + 1, mtime: clock.now() });
    // The session still validates with the token mailed first.
    expect(smtp.messages.filter((m) => m.to.includes('asks.repeat@example.org'))).toHaveLength(1);
  });

  it("a session write waits for a locked database only until the request's deadline", async () => {
    const sid = await requestToken('asks.locked@example.org', 'asks-secret-3');
    const token = mailToken(await smtp.waitForMessage((m) => m.to.includes('asks.locked@example.org')));
    const other = new Database(t.config.db.dbFile);
    try {
      other.exec('BEGIN IMMEDIATE');
      const began = Date.now();
      const res = await call(t.url(`${V1}/validate/email/submitToken`), {
        body: { sid, client_secret: 'asks-secret-3', token },
      });
      const took = Date.now() - began;
      expect(res.status, res.text).toBe(503);
      // `request_deadline_seconds = 2`: the write gave up then, not at the ask's default of 10 s.
      expect(took).toBeLessThan(6_000);
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
    expect(
      row<{ validated: number }>(t, 'SELECT validated FROM threepid_validation_sessions WHERE id = ?', Number(sid)),
    ).toEqual({ validated: 0 });
  }, 20_000);
});
