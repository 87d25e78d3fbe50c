import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import Database from 'better-sqlite3';
import { SESSION_STATES } from '../src/machines/validation-session.js';
import { rows } from './helpers/rows.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { SUPERVISOR_IDS } from './helpers/supervisors.js';
import { tempDir } from './helpers/tmp.js';

/** A session as the debug endpoint answers it. */
interface SessionView {
  state: string;
  context: Record<string, unknown>;
  transitions: { from: string; event: string; to: string }[];
}

/** The parts of the debug summary these tests read. */
interface SummaryView {
  server: unknown;
  sessions: { total: number; byState: Record<string, number> };
  actors: { systemId: string; handled: number }[];
  callbacks: unknown;
  replication: unknown;
}

let smtp: SmtpTestServer;
let t: TestServer;
beforeAll(async () => {
  smtp = await startSmtpServer();
  t = await startTestServer({
    conf: {
      email: {
        'email.smtphost': '127.0.0.1',
        'email.smtpport': String(smtp.port),
        'email.ratelimit_sender.burst': '50',
      },
    },
  });
});
afterAll(async () => {
  await t?.close();
  await smtp?.close();
});

async function requestToken(email: string, secret: string): Promise<string> {
  const res = await fetch(t.url('/_matrix/identity/api/v1/validate/email/requestToken'), {
    method: 'POST',
    body: JSON.stringify({
      client_secret: secret,
      email,
      send_attempt: 1,
      next_link: 'https://app.example/after?token=leak',
    }),
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { sid: string }).sid;
}

describe('session debug endpoints (internal listener)', () => {
  it('shows one session: state, redacted context, transitions; never token, secret or address', async () => {
    const sid = await requestToken('carol.secret@example.org', 'client-SECRET-value');
    const mail = await smtp.waitForMessage((m) => m.to.includes('carol.secret@example.org'));
    const token = /token=([0-9A-Za-z]{32})/.exec(mail.raw)![1]!;

    const res = await fetch(t.internalUrl(`/_sydent/debug/sessions/${sid}`));
    expect(res.status).toBe(200);
    const body = (await res.json()) as SessionView;
    expect(body.state).toBe('tokenSent');
    expect(body.context).toMatchObject({
      sid,
      medium: 'email',
      address: 'c…@e…',
      sendAttempt: 1,
      nextLink: 'https://app.example',
    });
    expect(body.transitions.map((x) => `${x.from} -${x.event}-> ${x.to}`)).toEqual([
      'requested -REQUEST_TOKEN-> sendingToken',
      'sendingToken -done: sendToken-> tokenSent',
    ]);
    const text = JSON.stringify(body);
    for (const secret of [token, 'client-SECRET-value', 'carol.secret', 'example.org', 'leak'])
      expect(text).not.toContain(secret);

    const counts = (await (await fetch(t.internalUrl('/_sydent/debug/sessions'))).json()) as {
      byState: Record<string, number>;
    };
    expect(counts.byState['tokenSent']).toBeGreaterThanOrEqual(1);
  });

  it("names states and events as the machine's diagram does", async () => {
    const sid = await requestToken('erin@example.org', 'names1');
    const session = (await (await fetch(t.internalUrl(`/_sydent/debug/sessions/${sid}`))).json()) as {
      machine: string;
      state: string;
      transitions: { from: string; event: string; to: string }[];
    };
    const { machines } = (await (await fetch(t.internalUrl('/_sydent/debug/machines'))).json()) as {
      machines: { name: string; states: string[]; events: string[]; mermaid: string; counts: Record<string, number> }[];
    };
    const machine = machines.find((m) => m.name === session.machine)!;
    expect([...machine.states].sort()).toEqual([...SESSION_STATES].sort());
    expect(machine.states).toContain(session.state);
    expect(session.transitions.length).toBeGreaterThan(0);
    for (const step of session.transitions) {
      expect(machine.states).toContain(step.from);
      expect(machine.states).toContain(step.to);
      expect(machine.events).toContain(step.event);
      expect(machine.mermaid).toContain(step.event);
    }
    // The diagram carries the live counts and marks the states holding sessions.
    expect(machine.mermaid).toContain(`"tokenSent (${machine.counts['tokenSent']})"`);
    expect(machine.mermaid).toMatch(/class [\w,]*s_tokenSent[\w,]* live/);
    expect(machine.mermaid).not.toMatch(/class [\w,]*s_expired[\w,]* live/);
  });

  it('the actor list is bounded: counts per state, and the actors below one a page at a time; idle sessions leave memory', async () => {
    // Session actors live only while an event is in flight: sends held at the SMTP server keep three of them.
    let release!: () => void;
    const held = await startSmtpServer({ holdData: new Promise<void>((resolve) => (release = resolve)) });
    const r = await startTestServer({
      conf: {
        email: {
          'email.smtphost': '127.0.0.1',
          'email.smtpport': String(held.port),
          'email.ratelimit_sender.burst': '50',
        },
      },
    });
    try {
      const answers = [0, 1, 2].map((i) =>
        fetch(r.url('/_matrix/identity/api/v1/validate/email/requestToken'), {
          method: 'POST',
          body: JSON.stringify({ client_secret: `paged${i}`, email: `page${i}@example.org`, send_attempt: 1 }),
        }),
      );
      type Tree = { actors: { systemId: string; children: { total: number; byState: Record<string, number> } }[] };
      const sessionsOf = async () =>
        ((await (await fetch(r.internalUrl('/_sydent/debug/actors'))).json()) as Tree).actors.find(
          (a) => a.systemId === 'sessions',
        )!;
      await vi.waitFor(async () => expect((await sessionsOf()).children.byState['sendingToken']).toBe(3), {
        timeout: 5_000,
      });
      const tree = (await (await fetch(r.internalUrl('/_sydent/debug/actors'))).json()) as Tree;
      const sessions = tree.actors.find((a) => a.systemId === 'sessions')!;
      expect(sessions.children).toEqual({ total: 3, byState: { sendingToken: 3 } });
      expect(tree.actors.find((a) => a.systemId === 'root')!.children).toEqual({ total: 6, byState: { active: 6 } });

      const page = async (q: string) => fetch(r.internalUrl(`/_sydent/debug/actors/${q}`));
      const first = (await (await page('sessions?limit=2')).json()) as {
        total: number;
        offset: number;
        limit: number;
        children: { id: string; state: string }[];
      };
      expect(first).toMatchObject({ systemId: 'sessions', offset: 0, limit: 2, total: 3 });
      expect(first.children).toHaveLength(2);
      const rest = (await (await page(`sessions?offset=2&limit=1000`)).json()) as typeof first;
      const ids = [...first.children, ...rest.children].map((c) => c.id);
      expect(ids).toHaveLength(3);
      expect(new Set(ids).size).toBe(ids.length);
      for (const id of ids) expect(id).toMatch(/^session:\d+$/);
      expect(((await (await page('root')).json()) as typeof first).children.map((c) => c.id)).toEqual(SUPERVISOR_IDS);

      for (const bad of ['sessions?limit=0', 'sessions?limit=1001', 'sessions?limit=abc', 'sessions?offset=-1']) {
        const res = await page(bad);
        expect(res.status, bad).toBe(400);
        expect(await res.json()).toMatchObject({ errcode: 'M_INVALID_PARAM' });
      }
      const unknown = await page('nobody');
      expect(unknown.status).toBe(404);
      expect(await unknown.json()).toMatchObject({ errcode: 'M_NOT_FOUND' });

      // Answered: the sessions are in the database, and no actor of theirs is left in memory.
      release();
      for (const res of await Promise.all(answers)) expect(res.status).toBe(200);
      expect((await sessionsOf()).children).toEqual({ total: 0, byState: {} });
      const counts = (await (await fetch(r.internalUrl('/_sydent/debug/sessions'))).json()) as {
        byState: Record<string, number>;
      };
      expect(counts.byState).toEqual({ tokenSent: 3 });
    } finally {
      release();
      await r.close();
      await held.close();
    }
  });

  it('the summary says who this is and the numbers, and nothing secret', async () => {
    const before = (await (await fetch(t.internalUrl('/_sydent/debug/summary'))).json()) as SummaryView;
    await requestToken('frank.summary@example.org', 'summary-secret');
    const after = (await (await fetch(t.internalUrl('/_sydent/debug/summary'))).json()) as SummaryView;
    expect(after.server).toMatchObject({
      name: 'is.example.test',
      version: expect.stringMatching(/^\d+\.\d+\.\d+/),
      node: { pid: process.pid, nodeVersion: process.version },
      uptimeSeconds: expect.any(Number),
    });
    expect(after.sessions.total).toBe(before.sessions.total + 1);
    expect(after.sessions.byState['tokenSent']).toBe(before.sessions.byState['tokenSent']! + 1);
    const mailer = (s: SummaryView) => s.actors.find((a) => a.systemId === 'mailer')!;
    expect(mailer(after).handled).toBeGreaterThan(mailer(before).handled);
    expect(after.callbacks).toEqual({
      pending: 0,
      counts: { pending: 0, delivering: 0, retrying: 0, delivered: 0, abandoned: 0 },
    });
    expect(after.replication).toEqual({ enabled: false, reason: 'replication.https.certfile is not set', peers: [] });
    const text = JSON.stringify(after);
    for (const secret of ['frank', 'example.org', 'summary-secret']) expect(text).not.toContain(secret);
  });

  it('counts move when a session is validated', async () => {
    const before = (
      (await (await fetch(t.internalUrl('/_sydent/debug/sessions'))).json()) as { byState: Record<string, number> }
    ).byState;
    const sid = await requestToken('dan@example.org', 'secret2');
    const mail = await smtp.waitForMessage((m) => m.to.includes('dan@example.org'));
    const token = /token=([0-9A-Za-z]{32})/.exec(mail.raw)![1]!;
    await fetch(t.url('/_matrix/identity/api/v1/validate/email/submitToken'), {
      method: 'POST',
      body: JSON.stringify({ sid, client_secret: 'secret2', token }),
    });
    const after = (
      (await (await fetch(t.internalUrl('/_sydent/debug/sessions'))).json()) as { byState: Record<string, number> }
    ).byState;
    expect(after['validated'] ?? 0).toBe((before['validated'] ?? 0) + 1);
    // What the endpoint says is what the rows say.
    // Nested states are stored as the machine gives them ({"live":"validated"}); the endpoint names the leaf.
    const leafOf = (value: unknown): string =>
      typeof value === 'string' ? value : leafOf(Object.values(value as object)[0]);
    const leaf = (state: string): string => leafOf(state.startsWith('{') ? JSON.parse(state) : state);
    const stored = Object.fromEntries(
      rows<{ state: string; n: number }>(
        t.config.db.dbFile,
        'SELECT state, count(*) AS n FROM session_machines GROUP BY state',
      ).map((r) => [leaf(r.state), r.n]),
    );
    expect(after).toEqual(stored);
  });

  it('an unknown sid is 404, and the endpoints are not on the client listener', async () => {
    expect((await fetch(t.internalUrl('/_sydent/debug/sessions/12345'))).status).toBe(404);
    expect((await fetch(t.internalUrl('/_sydent/debug/sessions/abc'))).status).toBe(404);
    expect((await fetch(t.url('/_sydent/debug/sessions'))).status).toBe(404);
  });
});

describe('what the session endpoint shows of a failure and of older rows', () => {
  it('a refused send: the event named as the machine names it, the refusal shown without the address it quoted', async () => {
    const rejecting = await startSmtpServer({ rejectAll: true });
    const r = await startTestServer({
      conf: { email: { 'email.smtphost': '127.0.0.1', 'email.smtpport': String(rejecting.port) } },
    });
    try {
      const res = await fetch(r.url('/_matrix/identity/api/v1/validate/email/requestToken'), {
        method: 'POST',
        body: JSON.stringify({ client_secret: 'refused1', email: 'Grace.Hidden@Example.org', send_attempt: 1 }),
      });
      expect(res.status).toBe(500);
      const sid = rows<{ id: number }>(r.config.db.dbFile, 'SELECT id FROM threepid_validation_sessions')[0]!.id;
      const body = (await (await fetch(r.internalUrl(`/_sydent/debug/sessions/${sid}`))).json()) as SessionView;
      expect(body.state).toBe('sendFailed');
      expect(body.context['lastError']).toMatch(/Recipient address rejected/);
      expect(JSON.stringify(body).toLowerCase()).not.toContain('grace.hidden');
      expect(JSON.stringify(body).toLowerCase()).not.toContain('example.org');
      expect(body.transitions.at(-1)).toMatchObject({
        from: 'sendingToken',
        event: 'error: sendToken',
        to: 'sendFailed',
      });
    } finally {
      await r.close();
      await rejecting.close();
    }
  });

  it("a history written with the old names (new, SENT) is shown in the machine's names", async () => {
    const tmp = tempDir();
    const conf = { email: { 'email.smtphost': '127.0.0.1', 'email.smtpport': String(smtp.port) } };
    try {
      const first = await startTestServer({ dir: tmp.dir, conf });
      const res = await fetch(first.url('/_matrix/identity/api/v1/validate/email/requestToken'), {
        method: 'POST',
        body: JSON.stringify({ client_secret: 'old-names', email: 'olga@example.org', send_attempt: 1 }),
      });
      const { sid } = (await res.json()) as { sid: string };
      const dbFile = first.config.db.dbFile;
      await first.close();
      const db = new Database(dbFile);
      const old = [
        { at: 1, event: 'REQUEST_TOKEN', from: 'new', to: 'sendingToken' },
        { at: 2, event: 'SENT', from: 'sendingToken', to: 'tokenSent' },
      ];
      db.prepare('UPDATE session_machines SET history = ? WHERE sid = ?').run(JSON.stringify(old), Number(sid));
      db.close();

      const again = await startTestServer({ dir: tmp.dir, conf });
      try {
        const body = (await (await fetch(again.internalUrl(`/_sydent/debug/sessions/${sid}`))).json()) as SessionView;
        expect(body.transitions).toEqual([
          { at: 1, event: 'REQUEST_TOKEN', from: 'requested', to: 'sendingToken' },
          { at: 2, event: 'done: sendToken', from: 'sendingToken', to: 'tokenSent' },
        ]);
      } finally {
        await again.close();
      }
    } finally {
      tmp.cleanup();
    }
  });
});
