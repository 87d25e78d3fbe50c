/**
 * A repeated requestToken answered from the session's rows (src/sessions/repeat.ts) against the machine's own
 * answer, state by state: for each session state (reached by the real flows, or written into the rows as the machine
 * writes that state), the fast path's answer is read first, then the same request goes through the sessions
 * supervisor and the machine. Where the fast path answers, the machine gives the same outcome and writes nothing;
 * where the machine would move, write or send, the fast path leaves the request to it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { encodeStateValue } from '../src/machines/state-value.js';
import { REPEAT_TOUCH_EVERY_MS, SESSION_LIFETIME_MS } from '../src/machines/validation-session.js';
import { answerRepeat, type RepeatRequest } from '../src/sessions/repeat.js';
import { call, emailConf } from './helpers/email.js';
import { requestEmailToken, V1, write } from './helpers/flows.js';
import { row } from './helpers/rows.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let smtp: SmtpTestServer;
let t: TestServer;
const clock = new ManualClock(Date.now());
beforeAll(async () => {
  smtp = await startSmtpServer();
  t = await startTestServer({ clock, conf: { email: emailConf(smtp.port) } });
});
afterAll(async () => {
  await t?.close();
  await smtp?.close();
});

interface MachineRow {
  state: string;
  context: string;
  machine_version: number;
  row_version: number;
  validated: number;
  mtime: number;
  token: string;
  sendAttemptNumber: number;
}

const rowsOf = (sid: string): MachineRow =>
  row<MachineRow>(
    t,
    `SELECT m.state, m.context, m.machine_version, m.row_version, s.validated, s.mtime, a.token, a.sendAttemptNumber
     FROM session_machines m JOIN threepid_validation_sessions s ON s.id = m.sid
     JOIN threepid_token_auths a ON a.validationSession = m.sid WHERE m.sid = ?`,
    Number(sid),
  )!;

/** A session in tokenSent, its token mailed with `sendAttempt`, and the request that repeats it. */
async function tokenSent(name: string, sendAttempt = 2): Promise<{ sid: string; request: RepeatRequest }> {
  const email = `${name}@repeat.example.org`;
  const clientSecret = `secret-${name}`;
  const { sid } = await requestEmailToken(t, smtp, { email, clientSecret, api: 'v1', sendAttempt });
  return { sid, request: { medium: 'email', address: email, clientSecret, sendAttempt } };
}

/**
 * The session's rows as the machine writes `value` with `patch` applied to its context: our row and Sydent's columns
 * (validated, mtime, token, send attempt) saying the same, unless `sydent` says otherwise.
 */
async function plant(
  sid: string,
  value: string | object,
  patch: Record<string, unknown> = {},
  opts: { sydent?: Partial<Pick<MachineRow, 'mtime' | 'token'>>; machineVersion?: number } = {},
): Promise<void> {
  const context = { ...(JSON.parse(rowsOf(sid).context) as Record<string, unknown>), ...patch };
  const state = typeof value === 'string' ? value : encodeStateValue(value as Record<string, string>);
  await write(
    t,
    'UPDATE session_machines SET state = ?, context = ?, machine_version = ? WHERE sid = ?',
    state,
    JSON.stringify(context),
    opts.machineVersion ?? 3,
    Number(sid),
  );
  await write(
    t,
    'UPDATE threepid_validation_sessions SET validated = ?, mtime = ? WHERE id = ?',
    context['validatedAt'] === null ? 0 : 1,
    opts.sydent?.mtime ?? context['mtime'],
    Number(sid),
  );
  await write(
    t,
    'UPDATE threepid_token_auths SET token = ?, sendAttemptNumber = ? WHERE validationSession = ?',
    opts.sydent?.token ?? context['token'],
    context['sendAttempt'],
    Number(sid),
  );
}

/** The fast path's answer, then the machine's (through the sessions supervisor), and the rows before and after. */
async function bothAnswers(sid: string, request: RepeatRequest) {
  const fast = await answerRepeat(t.server.ctx.reads.sessions, request, clock.now());
  const before = rowsOf(sid);
  const machine = await t.server.ctx.facades.sessions.requestToken(
    {
      ...request,
      sendTo: request.address,
      nextLink: null,
      brand: null,
      requester: `requester-${sid}`,
      ipAddress: '127.0.0.1',
      deadline: Date.now() + 10_000,
    },
    { deadline: Date.now() + 10_000 },
  );
  return { fast, machine, before, after: rowsOf(sid) };
}

/** The fast path answered: with the machine's outcome, and the machine found nothing to record. */
async function expectSameAnswer(sid: string, request: RepeatRequest): Promise<void> {
  const { fast, machine, before, after } = await bothAnswers(sid, request);
  expect(fast).toBeDefined();
  expect({ limited: false, ...fast }).toEqual(machine);
  expect(after).toEqual(before);
}

/** The fast path left the request to the machine; `moves`: the machine did record something. */
async function expectLeftToMachine(sid: string, request: RepeatRequest, moves = true): Promise<void> {
  const { fast, before, after } = await bothAnswers(sid, request);
  expect(fast).toBeUndefined();
  if (moves) expect(after.row_version).toBeGreaterThan(before.row_version);
}

const live = (state: string) => ({ live: state });
const awaiting = (state: string) => ({ live: { awaitingToken: state } });

describe('a repeated requestToken answered from the rows gives the machine’s answer', () => {
  it('tokenSent: the same or an older send_attempt within a minute; a newer one, or a minute later, goes to the machine', async () => {
    const s = await tokenSent('token-sent');
    await expectSameAnswer(s.sid, s.request);
    await expectSameAnswer(s.sid, { ...s.request, sendAttempt: 1 });
    clock.advance(REPEAT_TOUCH_EVERY_MS);
    // The machine moves the mtime (the touch a repeat makes once a minute)...
    await expectLeftToMachine(s.sid, s.request);
    // ...after which the repeat is a read again.
    await expectSameAnswer(s.sid, s.request);
    // A newer send_attempt sends a new token.
    await expectLeftToMachine(s.sid, { ...s.request, sendAttempt: 3 });
    expect(JSON.parse(rowsOf(s.sid).context)).toMatchObject({ sendAttempt: 3 });
  });

  it('tokenSent after a wrong token: the machine clears the rejection first, then the repeat is a read', async () => {
    const s = await tokenSent('rejected');
    const wrong = await call(t.url(`${V1}/validate/email/submitToken`), {
      body: { sid: s.sid, client_secret: s.request.clientSecret, token: 'not-the-token' },
    });
    expect(wrong.status).toBe(400);
    await expectLeftToMachine(s.sid, s.request);
    await expectSameAnswer(s.sid, s.request);
  });

  it('validated and bound: any send_attempt, at any age short of expiry', async () => {
    const s = await tokenSent('validated');
    await plant(s.sid, live('validated'), { validatedAt: clock.now() });
    clock.advance(REPEAT_TOUCH_EVERY_MS * 3);
    await expectSameAnswer(s.sid, s.request);
    await expectSameAnswer(s.sid, { ...s.request, sendAttempt: 9 });

    const b = await tokenSent('bound');
    await plant(b.sid, live('bound'), { validatedAt: clock.now(), mxid: '@alice:hs.example.test' });
    await expectSameAnswer(b.sid, { ...b.request, sendAttempt: 9 });
  });

  it('locked: the same send_attempt is a read; a newer one renews the token through the machine', async () => {
    const s = await tokenSent('locked');
    await plant(s.sid, live('locked'), { wrongTokens: 5 });
    await expectSameAnswer(s.sid, s.request);
    await expectLeftToMachine(s.sid, { ...s.request, sendAttempt: 3 });
  });

  it('expired (by age, or in the expired state): revived by the machine, with a fresh token', async () => {
    const s = await tokenSent('expired-by-age');
    clock.advance(SESSION_LIFETIME_MS + 1);
    await expectLeftToMachine(s.sid, s.request);

    const e = await tokenSent('expired-state');
    await plant(e.sid, 'expired', { rejection: 'expired' });
    await expectLeftToMachine(e.sid, e.request);

    const v = await tokenSent('validated-expired');
    await plant(v.sid, live('validated'), { validatedAt: clock.now() });
    clock.advance(SESSION_LIFETIME_MS + 1);
    await expectLeftToMachine(v.sid, v.request);
  });

  it('requested, sendingToken and sendFailed: the machine sends', async () => {
    const r = await tokenSent('requested');
    await plant(r.sid, live('requested'), { sendAttempt: -1, everSent: false });
    await expectLeftToMachine(r.sid, r.request);

    // A send a restart cut short: restored as failed, and the same send_attempt sends again.
    const s = await tokenSent('sending');
    await plant(s.sid, live('sendingToken'));
    await expectLeftToMachine(s.sid, s.request);

    const f = await tokenSent('send-failed');
    await plant(f.sid, awaiting('sendFailed'), { rejection: 'sendFailed', lastError: 'refused' });
    await expectLeftToMachine(f.sid, f.request);
  });

  it('rows the machine did not write last (Sydent moved them, an older machine version) go to the machine', async () => {
    const s = await tokenSent('sydent-moved');
    await plant(s.sid, awaiting('tokenSent'), {}, { sydent: { mtime: clock.now() + 1_000 } });
    // Sydent's newer mtime is taken by the restore: an answer, but not one the stored row alone gives.
    await expectLeftToMachine(s.sid, s.request, false);

    const o = await tokenSent('older-version');
    await plant(o.sid, 'tokenSent', {}, { machineVersion: 2 });
    await expectLeftToMachine(o.sid, o.request, false);
  });

  it('another client_secret is another session: never answered from this one', async () => {
    const s = await tokenSent('other-secret');
    const other = { ...s.request, clientSecret: 'secret-someone-else' };
    const { fast, machine } = await bothAnswers(s.sid, other);
    expect(fast).toBeUndefined();
    expect(machine).toMatchObject({ limited: false });
    expect(machine.limited === false && machine.sid).not.toBe(s.sid);
  });

  it('over HTTP: the repeat answers the same sid as the first request', async () => {
    const s = await tokenSent('http');
    const res = await call(t.url(`${V1}/validate/email/requestToken`), {
      body: { client_secret: s.request.clientSecret, email: s.request.address, send_attempt: s.request.sendAttempt },
    });
    expect(res.status, res.text).toBe(200);
    expect(res.json).toEqual({ sid: s.sid });
  });
});
