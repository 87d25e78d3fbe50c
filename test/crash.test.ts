/**
 * Nothing acknowledged is lost: a real server process under concurrent load (requestToken → the mail, from a real
 * SMTP server on loopback → submitToken → bind) is killed with SIGKILL at random moments over several rounds
 * (a fixed seed, so a failure can be replayed); the SMTP server is slow to answer, so kills fall between a mail's
 * arrival and the server hearing of it. After each restart:
 *  - every requestToken answered 200 has its session row;
 *  - every token that was mailed validates;
 *  - every bind answered 200 is found by lookup and has its homeserver callback in the outbox;
 *  - no session is in a state its rows contradict;
 *  - the requests the kill cut off (no answer) succeed when the client sends them again.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { SESSION_STATES, sessionStateName } from '../src/machines/validation-session.js';
import { call, emailConf, mailLink, type Reply } from './helpers/email.js';
import { rows as query } from './helpers/rows.js';
import { freePort, spawnServer, waitForStart, writeServerConf, type ServerProcess } from './helpers/process.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';
import { tempDir } from './helpers/tmp.js';

const SEED = 0x5eed2101;
const ROUNDS = 4;
const CLIENTS = 12;

/** mulberry32: a small PRNG, so the kill points are the same on every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Step = 'requestToken' | 'submitToken' | 'bind';

/** One user's way through: requestToken, the mail, submitToken, bind. */
interface Flow {
  email: string;
  secret: string;
  mxid: string;
  sid: string | null;
  token: string | null;
  /** the next step to take */
  next: Step | 'done';
}

interface Cut {
  flow: Flow;
  step: Step;
}

let smtp: SmtpTestServer;
let tmp: ReturnType<typeof tempDir>;
let server: ServerProcess | null = null;

beforeAll(async () => {
  // A mail arrives a while before the server hears that it did: a kill often falls in between.
  smtp = await startSmtpServer({ answerDelayMs: 150 });
  tmp = tempDir('sydent-ts-crash-');
});
afterAll(async () => {
  server?.child.kill('SIGKILL');
  await smtp?.close();
  tmp?.cleanup();
});

describe('kill -9 under load', () => {
  it('keeps every acknowledged session, mailed token and bind, and every cut request succeeds when sent again', async () => {
    const random = prng(SEED);
    const port = await freePort();
    const { confPath, dbFile } = writeServerConf(
      tmp.dir,
      port,
      emailConf(smtp.port, { 'email.ratelimit_sender.burst': '100000' }),
    );
    const base = `http://127.0.0.1:${port}/_matrix/identity/api/v1`;
    const start = async () => {
      server = spawnServer({ cwd: tmp.dir, args: ['--config', confPath] });
      await waitForStart(server);
    };

    const flows: Flow[] = [];
    const requested = new Map<string, string>(); // email → sid, answered 200
    const bound = new Set<Flow>(); // answered 200
    let cut: Cut[] = [];
    let cutTotal = 0;
    let made = 0;

    /** Sends one step of a flow; the reply, or null when the connection died with the server. */
    const take = async (flow: Flow, step: Step): Promise<Reply | null> => {
      try {
        switch (step) {
          case 'requestToken':
            return await call(`${base}/validate/email/requestToken`, {
              body: { client_secret: flow.secret, email: flow.email, send_attempt: 1 },
            });
          case 'submitToken':
            return await call(`${base}/validate/email/submitToken`, {
              body: { sid: flow.sid, client_secret: flow.secret, token: flow.token },
            });
          case 'bind':
            return await call(`${base}/3pid/bind`, {
              body: { sid: flow.sid, client_secret: flow.secret, mxid: flow.mxid },
            });
        }
      } catch {
        return null;
      }
    };

    /** What an answer means for the flow; a step that failed with an answer fails the test. */
    const answered = async (flow: Flow, step: Step, res: Reply) => {
      expect(res.status, `${step} ${flow.email}: ${res.text}`).toBe(200);
      if (step === 'requestToken') {
        flow.sid = res.json['sid'] as string;
        requested.set(flow.email, flow.sid);
        const mail = await smtp.waitForMessage((m) => m.to.includes(flow.email), 10_000);
        flow.token = mailLink(mail).searchParams.get('token');
        flow.next = 'submitToken';
      } else if (step === 'submitToken') {
        flow.next = 'bind';
      } else {
        bound.add(flow);
        flow.next = 'done';
      }
    };

    const client = async (stop: { killed: boolean }) => {
      while (!stop.killed) {
        const n = made++;
        const flow: Flow = {
          email: `crash${n}@example.org`,
          secret: `crash-secret-${n}`,
          mxid: `@crash${n}:hs.test`,
          sid: null,
          token: null,
          next: 'requestToken',
        };
        flows.push(flow);
        while (flow.next !== 'done') {
          const step = flow.next;
          const res = await take(flow, step);
          if (res === null) {
            cut.push({ flow, step });
            return;
          }
          if (stop.killed && res.status !== 200) {
            // answered by a server on its way down: sent again after the restart
            cut.push({ flow, step });
            return;
          }
          await answered(flow, step, res);
        }
      }
    };

    const check = async () => {
      // Every requestToken answered 200 has its row.
      const ids = new Set(
        query<{ id: number }>(dbFile, 'SELECT id FROM threepid_validation_sessions').map((r) => String(r.id)),
      );
      for (const [email, sid] of requested) expect(ids.has(sid), `session of ${email}`).toBe(true);

      // Every mailed token validates.
      for (const mail of smtp.messages) {
        const link = mailLink(mail);
        const res = await call(`${base}/validate/email/submitToken`, {
          body: {
            sid: link.searchParams.get('sid'),
            client_secret: link.searchParams.get('client_secret'),
            token: link.searchParams.get('token'),
          },
        });
        expect(res.status, `the token mailed to ${mail.to.join()}: ${res.text}`).toBe(200);
      }

      // Every bind answered 200: found by lookup, and its callback is in the outbox.
      for (const flow of bound) {
        const found = await call(`${base}/lookup?medium=email&address=${encodeURIComponent(flow.email)}`);
        expect(found.json['mxid'], `lookup of ${flow.email}`).toBe(flow.mxid);
        const outbox = query(
          dbFile,
          "SELECT id FROM callback_outbox WHERE medium = 'email' AND address = ?",
          flow.email,
        );
        // (a bind sent again after a kill is a bind again, with a callback of its own)
        expect(outbox.length, `the callback of ${flow.email}`).toBeGreaterThanOrEqual(1);
      }

      // No session in a state its rows contradict.
      const rows = query<{
        id: number;
        validated: number;
        state: string;
        machine_version: number;
        context: string;
        mxid: string | null;
      }>(
        dbFile,
        `SELECT s.id, s.validated, m.state, m.machine_version, m.context, a.mxid FROM threepid_validation_sessions s
           JOIN session_machines m ON m.sid = s.id
           LEFT JOIN local_threepid_associations a ON a.medium = s.medium AND a.address = s.address`,
      );
      expect(rows.length).toBe(ids.size);
      for (const row of rows) {
        const state = sessionStateName(row.state, row.machine_version);
        const where = `session ${row.id} (${state})`;
        expect(SESSION_STATES as readonly string[], where).toContain(state);
        expect(row.validated === 1, where).toBe(state === 'validated' || state === 'bound');
        if (state === 'bound') expect(row.mxid, where).toBe((JSON.parse(row.context) as { mxid: string }).mxid);
      }
    };

    for (let round = 0; round <= ROUNDS; round++) {
      await start();
      // First as the users find it (a mailed token is submitted before anyone retries anything), then the
      // requests the last kill cut off, sent again: they succeed.
      await check();
      const again = cut;
      cutTotal += again.length;
      cut = [];
      for (const { flow, step } of again) {
        const res = await take(flow, step);
        expect(res, `${step} of ${flow.email} again`).not.toBeNull();
        await answered(flow, step, res!);
      }
      if (round === ROUNDS) {
        await check();
        break;
      }

      const stop = { killed: false };
      const boundBefore = bound.size;
      const clients = Array.from({ length: CLIENTS }, () => client(stop));
      // The load is real on a slow or busy machine too: a round's flows get as far as a bind per client before
      // the kill is due, at a moment the seed picks.
      await vi.waitFor(() => expect(bound.size - boundBefore).toBeGreaterThanOrEqual(CLIENTS), {
        timeout: 30_000,
        interval: 20,
      });
      await new Promise((r) => setTimeout(r, 400 + random() * 1600));
      server!.child.kill('SIGKILL');
      await server!.exited;
      stop.killed = true;
      await Promise.all(clients);
    }
    server!.child.kill('SIGTERM');
    await server!.exited;
    server = null;

    // The load was real: sessions, binds, and requests cut off by every kill.
    expect(requested.size).toBeGreaterThan(ROUNDS * CLIENTS);
    expect(bound.size).toBeGreaterThanOrEqual(ROUNDS * CLIENTS);
    expect(cutTotal).toBeGreaterThanOrEqual(ROUNDS * CLIENTS);
  }, 180_000);
});
