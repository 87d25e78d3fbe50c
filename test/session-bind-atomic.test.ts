/**
 * 3pid/bind is one write: the session's move to bound, the association (local and global rows), the pending
 * invites marked sent and the homeserver's onbind callback are stored together or not at all. The store fails here
 * on the bind's last row (the callback), from a second connection's trigger, the way a full disk makes it fail:
 * the session must still say validated, in its row and after a restart, and binding again must work.
 */
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, emailConf } from './helpers/email.js';
import { V1, associationCounts, associationRows, internal, lookupV1, validateEmail } from './helpers/flows.js';
import { rows } from './helpers/rows.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';

let smtp: SmtpTestServer;
let t: TestServer;
/** the restarted server, on the first one's files */
let second: TestServer | undefined;

beforeAll(async () => {
  smtp = await startSmtpServer();
  t = await startTestServer({ conf: { email: emailConf(smtp.port) } });
});
afterAll(async () => {
  await second?.close();
  // also removes the directory, so last
  await t?.server.close();
  await t?.close();
  await smtp?.close();
});

const bind = (server: TestServer, body: Record<string, unknown>) => call(server.url(`${V1}/3pid/bind`), { body });
const getValidated = (server: TestServer, sid: string, clientSecret: string) =>
  call(server.url(`${V1}/3pid/getValidated3pid?sid=${sid}&client_secret=${clientSecret}`));

/** Makes every homeserver callback's insert fail inside SQLite until the returned function is called. */
function refuseCallbacks(dbFile: string): () => void {
  const db = new Database(dbFile);
  db.pragma('busy_timeout = 5000');
  db.exec(
    "CREATE TRIGGER refuse_callbacks BEFORE INSERT ON callback_outbox BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
  );
  return () => {
    db.exec('DROP TRIGGER refuse_callbacks');
    db.close();
  };
}

const sessionState = (server: TestServer, sid: string) =>
  rows<{ state: string; context: string }>(
    server,
    'SELECT state, context FROM session_machines WHERE sid = ?',
    Number(sid),
  )[0];

describe('3pid/bind', () => {
  it('a bound session bound again to the same user (its row has nothing new) makes the binding again', async () => {
    const address = 'bound.again@example.org';
    const sid = await validateEmail(t, smtp, { email: address, clientSecret: 'bound-again', api: 'v1' });
    expect((await bind(t, { sid, client_secret: 'bound-again', mxid: '@again:hs.example' })).status).toBe(200);
    const row = sessionState(t, sid);
    // Withdrawn meanwhile (the internal API), then bound again from the same session.
    expect((await internal(t, 'unbind', { medium: 'email', address, mxid: '@again:hs.example' })).status).toBe(200);
    expect((await lookupV1(t, 'email', address)).json).toEqual({});
    const again = await bind(t, { sid, client_secret: 'bound-again', mxid: '@again:hs.example' });
    expect(again.status, again.text).toBe(200);
    expect((await lookupV1(t, 'email', address)).json).toMatchObject({ mxid: '@again:hs.example' });
    expect(associationRows(t, 'email', address).local.map((r) => r['mxid'])).toEqual(['@again:hs.example']);
    expect(sessionState(t, sid)).toEqual(row);
  });

  it('refused by the store: leaves the session validated (its row, and after a restart), no association, invite or callback; binding again works', async () => {
    const address = 'atomic.bind@example.org';
    const sid = await validateEmail(t, smtp, { email: address, clientSecret: 'atomic-bind', api: 'v1' });
    // An invite waiting for this address: a bind marks it sent and signs it into the callback.
    const db = new Database(t.config.db.dbFile);
    db.prepare(
      "INSERT INTO invite_tokens (medium, address, room_id, sender, token, received_ts) VALUES ('email', ?, '!room:hs.example', '@inviter:hs.example', 'invite-token', 1)",
    ).run(address);
    db.close();
    const before = associationCounts(t);

    const restore = refuseCallbacks(t.config.db.dbFile);
    let restored = false;
    try {
      const refused = await bind(t, { sid, client_secret: 'atomic-bind', mxid: '@atomic:hs.example' });
      expect(refused.status, refused.text).toBeGreaterThanOrEqual(500);
      expect(refused.json['errcode']).toMatch(/^M_/);

      // Nothing of the bind was stored: the session's row still says validated, with no user.
      expect(sessionState(t, sid)?.state).toBe('{"live":"validated"}');
      expect(JSON.parse(sessionState(t, sid)!.context)).toMatchObject({ mxid: null });
      expect(associationCounts(t)).toEqual(before);
      expect(rows(t, 'SELECT id FROM callback_outbox WHERE address = ?', address)).toEqual([]);
      expect(rows(t, 'SELECT sent_ts FROM invite_tokens WHERE address = ?', address)).toEqual([{ sent_ts: null }]);
      expect((await lookupV1(t, 'email', address)).json).toEqual({});
      restore();
      restored = true;
    } finally {
      if (!restored) restore();
    }

    // After a restart the session is still the validated one it was, and it binds.
    await t.server.close();
    second = await startTestServer({ dir: t.dir });
    const s = second;
    const validated = await getValidated(s, sid, 'atomic-bind');
    expect(validated.status, validated.text).toBe(200);
    expect(validated.json).toMatchObject({ medium: 'email', address });
    expect(sessionState(s, sid)?.state).toBe('{"live":"validated"}');

    const bound = await bind(s, { sid, client_secret: 'atomic-bind', mxid: '@atomic:hs.example' });
    expect(bound.status, bound.text).toBe(200);
    expect(bound.json).toMatchObject({ address, mxid: '@atomic:hs.example' });
    expect(sessionState(s, sid)?.state).toBe('{"live":"bound"}');
    expect(JSON.parse(sessionState(s, sid)!.context)).toMatchObject({ mxid: '@atomic:hs.example' });
    expect(associationCounts(s)).toEqual({ local: before.local + 1, global: before.global + 1 });
    expect(rows(s, 'SELECT destination FROM callback_outbox WHERE address = ?', address)).toEqual([
      { destination: 'hs.example' },
    ]);
    expect(
      rows<{ sent_ts: number | null }>(s, 'SELECT sent_ts FROM invite_tokens WHERE address = ?', address)[0]!.sent_ts,
    ).toEqual(expect.any(Number));
    expect((await lookupV1(s, 'email', address)).json).toMatchObject({ mxid: '@atomic:hs.example' });
  });
});
