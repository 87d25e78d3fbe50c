/**
 * Switching to Sydent and back: a session started on sydent-ts, then worked on by Sydent in the shared sydent.db
 * (validated, revived with a token of its own, its send attempts counted, its 3PID bound), then finished on
 * sydent-ts again. Sydent's columns win wherever they are newer or say more than our session_machines row, and
 * nothing older is ever written back into Sydent's tables. Sydent's writes are made as Sydent 2.6.1 makes them,
 * from a connection of its own (test/helpers/sydent-rows.ts).
 */
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { signJson } from '../src/crypto/index.js';
import { call, emailConf, mailToken, sameMailbox, sessionOf, tokenRows } from './helpers/email.js';
import { HUNDRED_YEARS_MS, lookupV1, serverPublicKey, SERVER_NAME, sha256Of, verifyOurs } from './helpers/flows.js';
import { cleanupsAfterEach } from './helpers/cleanups.js';
import { smtpServerForFile } from './helpers/per-file.js';
import { rows } from './helpers/rows.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import type { ReceivedMail } from './helpers/smtp.js';
import { sydentDb } from './helpers/sydent-rows.js';

const HOUR = 3600_000;

const smtp = smtpServerForFile();
const cleanups = cleanupsAfterEach();

const v1 = (t: TestServer, p: string) => t.url(`/_matrix/identity/api/v1${p}`);
const mailsTo = (address: string): ReceivedMail[] =>
  smtp.messages.filter((m) => m.to.some((r) => sameMailbox(r, address)));

/** sydent-ts on its own files; `again()` starts it anew on the same files (the switch forward). */
async function sydentTs(clock: ManualClock): Promise<{ first: TestServer; again: () => Promise<TestServer> }> {
  const first = await startTestServer({ conf: { email: emailConf(smtp.port) }, clock });
  cleanups.push(() => first.close());
  return {
    first,
    again: async () => {
      const t = await startTestServer({ dir: first.dir, clock });
      cleanups.push(() => t.server.close());
      return t;
    },
  };
}

async function requestToken(t: TestServer, email: string, secret: string, sendAttempt: number): Promise<string> {
  const res = await call(v1(t, '/validate/email/requestToken'), {
    body: { client_secret: secret, email, send_attempt: sendAttempt },
  });
  expect(res.status, res.text).toBe(200);
  return res.json['sid'] as string;
}

describe('a session started on sydent-ts and worked on by Sydent while it was back in charge', () => {
  it('validated and bound by Sydent: sydent-ts answers it validated, keeps validated = 1, and binds it again', async () => {
    const clock = new ManualClock(Date.now());
    const { first, again } = await sydentTs(clock);
    const db = first.config.db.dbFile;
    const email = 'round.trip@example.org';
    const sid = await requestToken(first, email, 'roundtrip', 1);
    expect(mailsTo(email)).toHaveLength(1);
    const { mtime } = sessionOf(db, sid).session!;
    await first.server.close();

    // Sydent: the user submits the mailed token (validated = 1, mtime unchanged), the homeserver binds the 3PID
    clock.advance(HOUR);
    const sydent = sydentDb(db);
    sydent.validate(Number(sid));
    const pepper = rows<{ lookup_pepper: string }>(first, 'SELECT lookup_pepper FROM hashing_metadata')[0]!
      .lookup_pepper;
    const ts = clock.now();
    const assoc = {
      medium: 'email',
      address: email,
      mxid: '@sydent:hs.test',
      ts,
      not_before: ts,
      not_after: ts + HUNDRED_YEARS_MS,
    };
    sydent.bind({
      ...assoc,
      notAfter: assoc.not_after,
      lookupHash: sha256Of(email, 'email', pepper),
      originServer: SERVER_NAME,
      sgAssoc: signJson(assoc, SERVER_NAME, first.config.crypto.signingKey),
    });
    sydent.close();

    // sydent-ts again: the session is validated, as Sydent left it
    clock.advance(HOUR);
    const t = await again();
    const validated = await call(v1(t, `/3pid/getValidated3pid?sid=${sid}&client_secret=roundtrip`));
    expect(validated.status, validated.text).toBe(200);
    expect(validated.json).toEqual({ medium: 'email', address: email, validated_at: mtime });
    expect(sessionOf(db, sid).session).toMatchObject({ validated: 1, mtime });
    // Sydent's binding is served
    expect((await lookupV1(t, 'email', email)).json['mxid']).toBe('@sydent:hs.test');

    // and the flow finishes here: a bind to another user, which is then the newest
    const bound = await call(v1(t, '/3pid/bind'), {
      body: { sid, client_secret: 'roundtrip', mxid: '@alice:hs.test' },
    });
    expect(bound.status, bound.text).toBe(200);
    expect(bound.json).toMatchObject({ medium: 'email', address: email, mxid: '@alice:hs.test' });
    verifyOurs(bound.json, await serverPublicKey(t));
    expect((await lookupV1(t, 'email', email)).json['mxid']).toBe('@alice:hs.test');
    expect(sessionOf(db, sid).session).toMatchObject({ validated: 1, mtime });
    expect(mailsTo(email)).toHaveLength(1);
  });

  it('revived by Sydent a day later with a token of its own and 3 send attempts: those win, and are never written back older', async () => {
    const T0 = Date.now();
    const clock = new ManualClock(T0);
    const { first, again } = await sydentTs(clock);
    const db = first.config.db.dbFile;
    const email = 'round.revived@example.org';
    const sid = await requestToken(first, email, 'revived', 1);
    const ourToken = mailToken(mailsTo(email)[0]!);
    await first.server.close();

    // Sydent, 25 h later: the client asks again (mtime = now, the session lives again), Sydent has issued and
    // mailed a token of its own, and has counted send attempt 3
    const later = T0 + 25 * HOUR;
    const sydentToken = 'SydentsOwnToken0123456789abcdefG';
    const sydent = sydentDb(db);
    sydent.touch(Number(sid), later);
    sydent.setToken(Number(sid), sydentToken);
    sydent.setSendAttempt(Number(sid), 3);
    sydent.close();

    clock.set(later + 60_000);
    const t = await again();
    // send attempt 3 was seen: the same again mails nothing (and the session has not expired)
    expect(await requestToken(t, email, 'revived', 3)).toBe(sid);
    expect(mailsTo(email)).toHaveLength(1);
    expect(sessionOf(db, sid).session!.mtime).toBe(later + 60_000);
    expect(tokenRows(db).filter((r) => r.validationSession === Number(sid))).toEqual([
      expect.objectContaining({ token: sydentToken, sendAttemptNumber: 3 }),
    ]);

    // the token Sydent mailed is the session's token now
    const old = await call(v1(t, '/validate/email/submitToken'), {
      body: { sid, client_secret: 'revived', token: ourToken },
    });
    expect(old.status, old.text).toBe(400);
    expect(old.json['errcode']).toBe('M_TOKEN_INCORRECT');
    const ok = await call(v1(t, '/validate/email/submitToken'), {
      body: { sid, client_secret: 'revived', token: sydentToken },
    });
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json).toEqual({ success: true });
    expect(sessionOf(db, sid).session).toMatchObject({ validated: 1, mtime: later + 60_000 });
    const bound = await call(v1(t, '/3pid/bind'), {
      body: { sid, client_secret: 'revived', mxid: '@revived:hs.test' },
    });
    expect(bound.status, bound.text).toBe(200);
    expect((await lookupV1(t, 'email', email)).json['mxid']).toBe('@revived:hs.test');
  });

  it('a change Sydent makes while our copy of the session is in memory is seen by the next request', async () => {
    const clock = new ManualClock(Date.now());
    const { first: t } = await sydentTs(clock);
    const db = t.config.db.dbFile;
    const email = 'round.live@example.org';
    const sid = await requestToken(t, email, 'livecopy', 1);
    const notYet = await call(v1(t, `/3pid/getValidated3pid?sid=${sid}&client_secret=livecopy`));
    expect(notYet.json['errcode']).toBe('M_SESSION_NOT_VALIDATED');

    const sydent = sydentDb(db);
    sydent.validate(Number(sid));
    sydent.close();

    const validated = await call(v1(t, `/3pid/getValidated3pid?sid=${sid}&client_secret=livecopy`));
    expect(validated.status, validated.text).toBe(200);
    expect(validated.json).toMatchObject({ medium: 'email', address: email });
    expect(sessionOf(db, sid).session!.validated).toBe(1);
  });
});
