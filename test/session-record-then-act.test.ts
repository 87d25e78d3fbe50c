/**
 * Record, then act: a session's row is committed before its token is mailed, so a requestToken whose session
 * cannot be saved sends nothing, answers an error, and leaves no session behind (no row, no actor). The store
 * fails here the way a full disk makes it fail: a write refused inside SQLite, from a second connection's trigger.
 */
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { call, emailConf, mailToken } from './helpers/email.js';
import { rows as query } from './helpers/rows.js';
import { smtpServerForFile, testServerForFile } from './helpers/per-file.js';

const smtp = smtpServerForFile();
const t = testServerForFile(() => ({ conf: { email: emailConf(smtp.port) } }));

const requestToken = (body: Record<string, unknown>) =>
  call(t.url('/_matrix/identity/api/v1/validate/email/requestToken'), { body });
const submitToken = (body: Record<string, unknown>) =>
  call(t.url('/_matrix/identity/api/v1/validate/email/submitToken'), { body });

/** Makes every new session's insert fail inside SQLite until the returned function is called. */
function refuseNewSessions(dbFile: string): () => void {
  const db = new Database(dbFile);
  db.exec(
    "CREATE TRIGGER refuse_sessions BEFORE INSERT ON threepid_validation_sessions BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
  );
  return () => {
    db.exec('DROP TRIGGER refuse_sessions');
    db.close();
  };
}

describe('a session that cannot be saved sends nothing', () => {
  it('answers an error, mails nothing, stores nothing and keeps no actor; once saves work again, all is as before', async () => {
    const restore = refuseNewSessions(t.config.db.dbFile);
    let restored = false;
    try {
      const answers = await Promise.all(
        [0, 1, 2, 3, 4].map((i) =>
          requestToken({ client_secret: `full${i}`, email: `full${i}@example.org`, send_attempt: 1 }),
        ),
      );
      for (const res of answers) {
        expect(res.status, res.text).toBeGreaterThanOrEqual(500);
        expect(res.json['errcode']).toMatch(/^M_/);
        expect(res.text).not.toContain('full0@');
      }
      // Whatever was started would have reached the SMTP server by now: nothing was.
      await new Promise((r) => setTimeout(r, 300));
      expect(smtp.messages.filter((m) => m.to.some((r) => r.startsWith('full')))).toEqual([]);
      expect(query(t.config.db.dbFile, 'SELECT id FROM threepid_validation_sessions')).toEqual([]);
      expect(query(t.config.db.dbFile, 'SELECT sid FROM session_machines')).toEqual([]);
      const actors = (await (await fetch(t.internalUrl('/_sydent/debug/actors'))).json()) as {
        actors: { systemId: string; children: { total: number } }[];
      };
      expect(actors.actors.find((a) => a.systemId === 'sessions')!.children.total).toBe(0);

      restore();
      restored = true;
      // The same request again: a session of its own, one mail, and its token validates.
      const res = await requestToken({ client_secret: 'full0', email: 'full0@example.org', send_attempt: 1 });
      expect(res.status, res.text).toBe(200);
      const mail = await smtp.waitForMessage((m) => m.to.includes('full0@example.org'));
      const ok = await submitToken({ sid: res.json['sid'], client_secret: 'full0', token: mailToken(mail) });
      expect(ok.status, ok.text).toBe(200);
      expect(smtp.messages.filter((m) => m.to.some((r) => r.startsWith('full')))).toHaveLength(1);
    } finally {
      if (!restored) restore();
    }
  });
});
