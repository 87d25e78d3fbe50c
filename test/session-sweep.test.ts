import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ManualClock } from '../src/clock.js';
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
      const first = await startTestServer({ dir, clock: new ManualClock(start), conf: { email: emailConf(smtp.port) } });
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
        await vi.waitFor(() => expect(rows(db, 'SELECT id FROM threepid_validation_sessions WHERE id = ?', Number(old))).toEqual([]), {
          timeout: 5000,
          interval: 25,
        });
        expect(rows(db, 'SELECT id FROM threepid_token_auths WHERE validationSession = ?', Number(old))).toEqual([]);
        expect(rows(db, 'SELECT sid FROM session_machines WHERE sid = ?', Number(old))).toEqual([]);
        expect(rows(db, 'SELECT id FROM threepid_validation_sessions WHERE id = ?', Number(recent))).toHaveLength(1);
        expect(rows(db, 'SELECT sid FROM session_machines WHERE sid = ?', Number(recent))).toHaveLength(1);
        const gone = await fetch(second.url(`/_matrix/identity/api/v1/3pid/getValidated3pid?sid=${old}&client_secret=sweep-old`));
        expect(gone.status).toBe(404);
      } finally {
        await second.server.close();
      }
    } finally {
      cleanup();
    }
  });
});
