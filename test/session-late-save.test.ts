/**
 * Two nodes (two servers in this process) on one PostgreSQL database, and a session that node B changes while node
 * A's mail for it is still on its way: the SMTP server has the mail (and the test its token) but holds its answer to
 * DATA until B has answered. A's request must then answer as the mail went (200 with the sid), not 500, and the row
 * must hold both nodes' work: one mail, nothing lost.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { systemClock } from '../src/clock.js';
import { call, emailConf, mailToken, sameMailbox, type Reply } from './helpers/email.js';
import { testDatabase, type TestDatabase } from './helpers/postgres.js';
import { row } from './helpers/rows.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { startSmtpServer, type ReceivedMail, type SmtpTestServer } from './helpers/smtp.js';

const V1 = '/_matrix/identity/api/v1';

let db: TestDatabase;
const cleanups: Array<() => Promise<void>> = [];

beforeAll(async () => {
  db = await testDatabase();
}, 60_000);

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

afterAll(async () => {
  await db?.drop();
});

/** Node A and node B on the test's database, mailing through one SMTP server that holds its answers until `release`. */
async function twoNodes(): Promise<{ a: TestServer; b: TestServer; smtp: SmtpTestServer; release: () => void }> {
  let release = (): void => undefined;
  const held = new Promise<void>((resolve) => {
    release = resolve;
  });
  const smtp = await startSmtpServer({ holdData: held });
  cleanups.push(async () => {
    release();
    await smtp.close();
  });
  const node = async (name: string) => {
    const t = await startTestServer({
      engine: 'sqlite', // the database is the test's: given below, not made per server
      clock: systemClock,
      conf: {
        general: { node_name: name },
        db: { 'db.engine': 'postgresql', 'db.url': db.url },
        email: emailConf(smtp.port),
      },
    });
    cleanups.push(() => t.close());
    return t;
  };
  // one after the other: the first migrates the database
  const a = await node('node-a');
  const b = await node('node-b');
  return { a, b, smtp, release };
}

const requestToken = (t: TestServer, body: Record<string, unknown>): Promise<Reply> =>
  call(t.url(`${V1}/validate/email/requestToken`), { body });
const submitToken = (t: TestServer, body: Record<string, unknown>): Promise<Reply> =>
  call(t.url(`${V1}/validate/email/submitToken`), { body });
const getValidated = (t: TestServer, sid: string, secret: string): Promise<Reply> =>
  call(t.url(`${V1}/3pid/getValidated3pid?sid=${sid}&client_secret=${secret}`));

const mailsTo = (smtp: SmtpTestServer, address: string): ReceivedMail[] =>
  smtp.messages.filter((m) => m.to.some((r) => sameMailbox(r, address)));

interface StoredSession {
  validated: number;
  state: string;
  context: string;
}

function stored(t: TestServer, sid: string): StoredSession | undefined {
  return row<StoredSession>(
    t,
    `SELECT s.validated, m.state, m.context FROM threepid_validation_sessions s
       JOIN session_machines m ON m.sid = s.id WHERE s.id = ?`,
    Number(sid),
  );
}

/** The sid of the one session of `address` (the mail is held: A has not answered yet). */
function sidOf(t: TestServer, address: string): string {
  const found = row<{ id: number }>(t, 'SELECT id FROM threepid_validation_sessions WHERE address = ?', address);
  if (!found) throw new Error(`no session for ${address}`);
  return String(found.id);
}

describe('a session changed on node B while node A mails its token', () => {
  it('B validates it with the mailed token before the SMTP server answers A: A answers 200 with the sid, the session stays validated, one mail', async () => {
    const { a, b, smtp, release } = await twoNodes();
    const email = 'late.validate@example.org';
    const secret = 'lateValidateSecret';
    const answer = requestToken(a, { email, client_secret: secret, send_attempt: 1 });
    const mail = await smtp.waitForMessage((m) => m.to.some((r) => sameMailbox(r, email)), 10_000);
    const sid = sidOf(a, email);

    const submitted = await submitToken(b, { sid, client_secret: secret, token: mailToken(mail) });
    expect(submitted.status, submitted.text).toBe(200);
    expect(submitted.json).toEqual({ success: true });

    release();
    const res = await answer;
    expect(res.status, res.text).toBe(200);
    expect(res.json).toEqual({ sid });

    const after = stored(a, sid);
    expect(after?.validated).toBe(1);
    expect(after?.state).toContain('validated');
    const validated = await getValidated(a, sid, secret);
    expect(validated.status, validated.text).toBe(200);
    expect(validated.json).toMatchObject({ medium: 'email', address: email });
    expect(mailsTo(smtp, email)).toHaveLength(1);
  });

  it('B reads it (getValidated3pid) before the SMTP server answers A: A answers 200 with the sid, the row says the token went, and it validates', async () => {
    const { a, b, smtp, release } = await twoNodes();
    const email = 'late.read@example.org';
    const secret = 'lateReadSecret';
    const answer = requestToken(a, { email, client_secret: secret, send_attempt: 1 });
    const mail = await smtp.waitForMessage((m) => m.to.some((r) => sameMailbox(r, email)), 10_000);
    const sid = sidOf(a, email);

    const read = await getValidated(b, sid, secret);
    expect(read.status, read.text).toBe(400);
    expect(read.json['errcode']).toBe('M_SESSION_NOT_VALIDATED');

    release();
    const res = await answer;
    expect(res.status, res.text).toBe(200);
    expect(res.json).toEqual({ sid });

    const after = stored(a, sid);
    expect(after?.validated).toBe(0);
    expect(after?.state).toContain('tokenSent');
    expect(JSON.parse(after!.context)).toMatchObject({ everSent: true, lastError: null, rejection: null });
    // the same send_attempt again is a repeat: no second mail
    const again = await requestToken(b, { email, client_secret: secret, send_attempt: 1 });
    expect(again.status, again.text).toBe(200);
    expect(again.json).toEqual({ sid });

    const submitted = await submitToken(b, { sid, client_secret: secret, token: mailToken(mail) });
    expect(submitted.status, submitted.text).toBe(200);
    expect(stored(a, sid)?.validated).toBe(1);
    expect(mailsTo(smtp, email)).toHaveLength(1);
  });
});
