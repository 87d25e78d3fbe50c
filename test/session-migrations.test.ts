/**
 * Session rows written by older versions of the session machine (version 1 without the wrong-token count,
 * version 2 with its states as plain top-level names) go on after an upgrade: migrated by `machine_version` when
 * the session is next touched, counted by state meanwhile, and written back in today's shape.
 */
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { SESSION_MACHINE_VERSION } from '../src/machines/validation-session.js';
import { call, emailConf, mailToken } from './helpers/email.js';
import { rows as query } from './helpers/rows.js';
import { cleanupsAfterEach } from './helpers/cleanups.js';
import { smtpServerForFile } from './helpers/per-file.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const smtp = smtpServerForFile();
const cleanups = cleanupsAfterEach();

const v1 = (t: TestServer, p: string) => t.url(`/_matrix/identity/api/v1${p}`);
const requestToken = (t: TestServer, email: string, secret: string, sendAttempt = 1) =>
  call(v1(t, '/validate/email/requestToken'), { body: { client_secret: secret, email, send_attempt: sendAttempt } });
const submitToken = (t: TestServer, sid: string, secret: string, token: string) =>
  call(v1(t, '/validate/email/submitToken'), { body: { sid, client_secret: secret, token } });
const mailsTo = (address: string) => smtp.messages.filter((m) => m.to.includes(address));

interface MachineRow {
  state: string;
  context: string;
  machine_version: number;
}

describe('session rows of older machine versions', () => {
  it('restore, answer and are saved again in the current shape', async () => {
    const first = await startTestServer({ conf: { email: emailConf(smtp.port) } });
    cleanups.push(() => first.close());
    const sids: Record<string, string> = {};
    for (const name of ['one', 'two', 'failed', 'locked', 'cut']) {
      const res = await requestToken(first, `${name}@migrate.example`, `secret-${name}`);
      expect(res.status, res.text).toBe(200);
      sids[name] = res.json['sid'] as string;
    }
    await first.server.close();

    // Rewritten as the older versions wrote them: plain state names; version 1 had no wrongTokens, neither had
    // createdBySydent.
    const db = new Database(first.config.db.dbFile);
    const old = (sid: string, version: number, state: string, change: (c: Record<string, unknown>) => void) => {
      const row = db
        .prepare<[number], MachineRow>('SELECT state, context, machine_version FROM session_machines WHERE sid = ?')
        .get(Number(sid))!;
      const context = JSON.parse(row.context) as Record<string, unknown>;
      delete context['createdBySydent'];
      change(context);
      db.prepare('UPDATE session_machines SET state = ?, context = ?, machine_version = ? WHERE sid = ?').run(
        state,
        JSON.stringify(context),
        version,
        Number(sid),
      );
    };
    old(sids['one']!, 1, 'tokenSent', (c) => delete c['wrongTokens']);
    old(sids['two']!, 2, 'tokenSent', () => undefined);
    old(sids['failed']!, 2, 'sendFailed', (c) => {
      c['everSent'] = false;
      c['lastError'] = 'smtp down';
      c['rejection'] = 'sendFailed';
    });
    old(sids['locked']!, 2, 'locked', (c) => (c['wrongTokens'] = 5));
    old(sids['cut']!, 2, 'sendingToken', (c) => (c['everSent'] = false));
    db.close();

    const t = await startTestServer({ dir: first.dir, clock: new ManualClock(Date.now()) });
    cleanups.push(() => t.server.close());
    // Counted by the states' names before any of them is touched.
    const counts = (await (await fetch(t.internalUrl('/_sydent/debug/sessions'))).json()) as {
      byState: Record<string, number>;
    };
    expect(counts.byState).toEqual({ tokenSent: 2, sendFailed: 1, locked: 1, sendingToken: 1 });

    // Version 1 and 2 sessions awaiting their token: the mailed token validates.
    for (const name of ['one', 'two']) {
      const ok = await submitToken(t, sids[name]!, `secret-${name}`, mailToken(mailsTo(`${name}@migrate.example`)[0]!));
      expect(ok.status, `${name}: ${ok.text}`).toBe(200);
    }
    // A failed send: the same send_attempt sends again.
    expect((await requestToken(t, 'failed@migrate.example', 'secret-failed')).json).toEqual({ sid: sids['failed'] });
    expect(mailsTo('failed@migrate.example')).toHaveLength(2);
    // Locked stays locked: the right token is refused.
    const locked = await submitToken(
      t,
      sids['locked']!,
      'secret-locked',
      mailToken(mailsTo('locked@migrate.example')[0]!),
    );
    expect(locked.json).toMatchObject({ errcode: 'M_TOKEN_INCORRECT' });
    expect(locked.json['error']).toMatch(/^Too many incorrect tokens/);
    // A send a restart cut short: its token is accepted.
    const cut = await submitToken(t, sids['cut']!, 'secret-cut', mailToken(mailsTo('cut@migrate.example')[0]!));
    expect(cut.status, cut.text).toBe(200);

    // Each was written back as today's machine writes it.
    const rows = query<MachineRow & { sid: number }>(
      t.config.db.dbFile,
      'SELECT sid, state, context, machine_version FROM session_machines',
    );
    const bySid = new Map(rows.map((r) => [String(r.sid), r]));
    const stored = (name: string) => {
      const row = bySid.get(sids[name]!)!;
      return {
        version: row.machine_version,
        value: JSON.parse(row.state) as unknown,
        context: JSON.parse(row.context) as Record<string, unknown>,
      };
    };
    expect(stored('one')).toMatchObject({
      version: SESSION_MACHINE_VERSION,
      value: { live: 'validated' },
      context: { wrongTokens: 0, createdBySydent: false },
    });
    expect(stored('two')).toMatchObject({ version: SESSION_MACHINE_VERSION, value: { live: 'validated' } });
    expect(stored('failed')).toMatchObject({
      version: SESSION_MACHINE_VERSION,
      value: { live: { awaitingToken: 'tokenSent' } },
    });
    expect(stored('locked')).toMatchObject({
      version: SESSION_MACHINE_VERSION,
      value: { live: 'locked' },
      context: { wrongTokens: 5 },
    });
    expect(stored('cut')).toMatchObject({ version: SESSION_MACHINE_VERSION, value: { live: 'validated' } });
    const after = (await (await fetch(t.internalUrl('/_sydent/debug/sessions'))).json()) as {
      byState: Record<string, number>;
    };
    expect(after.byState).toEqual({ validated: 3, tokenSent: 1, locked: 1 });
  });
});
