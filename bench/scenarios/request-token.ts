import type { AutocannonRequest } from 'autocannon';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { closeDatabase, openDatabase } from '../../src/store/database.js';
import { requestJson, statusNotes } from '../lib/associations-db.js';
import { CPU_PER_ANSWER_LABEL, cpuPerAnswer } from '../lib/cpu-per-answer.js';
import type { Extra, Goal, Scenario, ScenarioContext, ScenarioResult, TwinFigure } from '../lib/scenario.js';
import type { SampleSession } from '../lib/sessions-db.js';
import { storedRows, type StoredDatabase } from '../lib/stored-rows.js';

export const REQUEST_TOKEN_PATH = '/_matrix/identity/api/v1/validate/email/requestToken';

/** Mail on loopback to the sink, and a sender rate limit too generous to be what is measured. */
export function emailConf(smtpPort: number): Record<string, Record<string, string>> {
  return {
    email: {
      'email.smtphost': '127.0.0.1',
      'email.smtpport': String(smtpPort),
      'email.tlsmode': '0',
      'email.ratelimit_sender.burst': '1000000000',
      'email.ratelimit_sender.rate_hz': '1000000',
    },
  };
}

// Unique across the warm-up and the measured run (and across scenarios and servers in one bench process).
let counter = 0;

/** One requestToken with a client_secret and address never used before: a new session and one mail each. */
export function uniqueRequest(requestPath = REQUEST_TOKEN_PATH): AutocannonRequest {
  return {
    method: 'POST',
    path: requestPath,
    headers: { 'content-type': 'application/json' },
    setupRequest(req) {
      const n = ++counter;
      req.body = JSON.stringify({ client_secret: `benchsecret${n}`, email: `u${n}@bench.test`, send_attempt: 1 });
      return req;
    },
  };
}

/** sessions/s of the empty-table scenario in this bench process, for request-token-1m's goal (same run) */
export let emptyTableRate: number | null = null;

export interface RequestTokenOptions {
  /** puts the database (sydent-ts's and the twin's copy) in place before they start; none: a new, empty one */
  prepareDb?: (dbPath: string) => Promise<{ samples: SampleSession[]; count: number }>;
  /** how long the SMTP sink must stay quiet before the requests still in flight count as done, ms */
  settleQuietMs?: number;
  startTimeoutMs?: number;
}

/** How long the final check waits for requests still in flight to send their mail. */
const RECONCILE_MS = 60_000;

/** Rows of Sydent's session table: what a requestToken that created a session left behind. */
export async function countSessions(db: StoredDatabase): Promise<number> {
  const [row] = await storedRows<{ n: number | string }>(db, 'SELECT count(*) AS n FROM threepid_validation_sessions');
  return Number(row!.n);
}

/**
 * Sessions per second with one mail each, against its bare twin on a copy of the same database. Checked: every
 * 2xx was mailed, every mail belongs to a session that is stored (rows created = mails, on each side), and on a
 * prepared database, existing sessions are found (the same secret and send_attempt answer their sid, no mail).
 */
/** The bare twin's copy of the database (as `opts.prepareDb` makes it, or empty); removed when the scenario ends. */
async function twinDatabase(ctx: ScenarioContext, opts: RequestTokenOptions): Promise<string> {
  const twinDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sydent-bench-twin-'));
  ctx.defer(() => fs.rmSync(twinDir, { recursive: true, force: true }));
  const twinDb = path.join(twinDir, 'sydent.db');
  if (opts.prepareDb) await opts.prepareDb(twinDb);
  else closeDatabase(openDatabase(twinDb));
  return twinDb;
}

export async function measureRequestToken(
  ctx: ScenarioContext,
  opts: RequestTokenOptions = {},
): Promise<ScenarioResult & { baseUrl: string }> {
  const quietMs = opts.settleQuietMs ?? 300;
  // One sink each, alike: a request of one side still running after its slice (past autocannon's timeout, the
  // server goes on) mails into its own count, never the other side's.
  const sinks = { scenario: await ctx.startSmtpSink(), twin: await ctx.startSmtpSink() };
  const sink = sinks.scenario;
  const settle = (side: keyof typeof sinks = 'scenario') => sinks[side].settle(quietMs, Math.max(5000, quietMs * 10));
  let prepared: { samples: SampleSession[]; count: number } = { samples: [], count: 0 };
  const server = await ctx.startServer({
    conf: emailConf(sink.port),
    ...(opts.prepareDb ? { prepareDb: async (dbPath: string) => void (prepared = await opts.prepareDb!(dbPath)) } : {}),
    startTimeoutMs: opts.startTimeoutMs ?? 20_000,
  });
  // the bare twin works on SQLite: beside sydent-ts on SQLite only
  const twinDb = ctx.engine === 'sqlite' ? await twinDatabase(ctx, opts) : null;
  const twin = twinDb
    ? await ctx.startTwin({ kind: 'request-token', dbPath: twinDb, smtpPort: sinks.twin.port })
    : null;

  const extras: Extra[] = [];
  const notes: string[] = [];
  // mails per side, over every phase (each phase settled before the next, so none is counted on the wrong side)
  const mails = { scenario: 0, twin: 0 };
  const counted = async (side: keyof typeof mails) => {
    const n = await settle(side);
    mails[side] += n;
    sinks[side].reset();
    return n;
  };

  if (prepared.samples.length) {
    // an existing session, asked for again with the same send_attempt: its sid, and no new mail
    const checks = prepared.samples.slice(0, 4);
    const ms: number[] = [];
    for (const sample of checks) {
      const res = await requestJson(`${server.baseUrl}${REQUEST_TOKEN_PATH}`, {
        headers: { 'content-type': 'application/json' },
        body: { client_secret: sample.clientSecret, email: sample.address, send_attempt: sample.sendAttempt },
      });
      ms.push(res.ms);
      if (res.status !== 200 || (res.body as { sid?: unknown }).sid !== String(sample.sid)) {
        throw new Error(
          `existing session check: status ${res.status}, ${JSON.stringify(res.body).slice(0, 200)}, expected sid ${sample.sid}`,
        );
      }
    }
    const mailed = await settle();
    if (mailed !== 0) throw new Error(`existing session check: ${mailed} mails for sessions that were already mailed`);
    extras.push({
      label: 'check before measuring',
      value: `${checks.length} existing sessions asked for again (same secret and send_attempt): their sids, no mail; ${ms.map((v) => `${v.toFixed(0)} ms`).join(', ')}`,
    });
  }

  const cpu = cpuPerAnswer(ctx.engine, server.process.child.pid);
  const summary = await ctx.measure(
    { url: server.baseUrl, requests: [uniqueRequest()] },
    // mails of warm-up requests still in flight land before the count starts
    {
      afterWarmup: async () => {
        await counted('scenario');
        await cpu.start();
      },
    },
  );
  const cpuUsed = await cpu.end(summary.total);
  // and those of measured requests the server finished after autocannon stopped
  const measuredMails = await counted('scenario');
  const sessionsPerS = summary.ok2xx / summary.durationS;
  // Every 2xx means its mail was accepted by the sink (the answer waits for the send). Requests in flight when
  // autocannon stopped (at most one per connection) are finished by the server, mail included, but their answers
  // are not counted: so 2xx ≤ mails ≤ requests sent is expected, anything else is odd.
  // (On a large table requests outlive the run and the warm-up's land in it: there only the lower bound holds, and
  // the reconciliation at the end checks the rest.)
  if (measuredMails < summary.ok2xx || (!opts.prepareDb && measuredMails > summary.sent)) {
    notes.push(
      `SMTP mismatch: ${measuredMails} messages for ${summary.ok2xx} 2xx answers and ${summary.sent} requests sent`,
    );
  }

  const twinFigure: TwinFigure | undefined = twin
    ? await ctx.pairedWithTwin(
        { url: server.baseUrl, requests: [uniqueRequest()] },
        { url: twin.baseUrl, requests: [uniqueRequest(twin.path)] },
        {
          async afterSlice(side, slice) {
            const n = await counted(side);
            // (sydent-ts's slices are reconciled at the end only: on a large table its requests outlive their slice)
            if (side === 'twin' && (n < slice.ok2xx || n > slice.sent)) {
              notes.push(`SMTP mismatch in a twin slice: ${n} messages, ${slice.ok2xx} 2xx, ${slice.sent} sent`);
            }
          },
        },
      )
    : undefined;

  // One session row per mail, on each side. A session is stored before its mail goes out, so requests still
  // running (a slow server goes on past autocannon's timeout) are waited for, up to RECONCILE_MS.
  const rows = { scenario: 0, twin: 0 };
  const deadline = performance.now() + RECONCILE_MS;
  for (;;) {
    for (const side of ['scenario', 'twin'] as const) {
      mails[side] += sinks[side].count();
      sinks[side].reset();
    }
    rows.scenario = (await countSessions(server)) - prepared.count;
    rows.twin = twinDb ? (await countSessions({ dbPath: twinDb, pgUrl: null })) - prepared.count : 0;
    if ((rows.scenario === mails.scenario && rows.twin === mails.twin) || performance.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  for (const side of ['scenario', 'twin'] as const) {
    if (rows[side] !== mails[side]) {
      notes.push(
        `${side}: ${rows[side]} sessions stored, ${mails[side]} mails received ${RECONCILE_MS / 1000} s after the load ` +
          '(requests still running then, or sessions stored whose mail never went)',
      );
    }
  }

  if (!opts.prepareDb && ctx.engine === 'sqlite') emptyTableRate = sessionsPerS;
  extras.push(
    { label: 'sessions/s (2xx/s)', value: sessionsPerS.toFixed(1) },
    { label: '2xx answers (measured run)', value: String(summary.ok2xx) },
    { label: 'requests sent (measured run)', value: String(summary.sent) },
    {
      label: 'messages received by the SMTP sink (measured run)',
      value:
        measuredMails > summary.ok2xx
          ? `${measuredMails} (+${measuredMails - summary.ok2xx} vs 2xx: requests in flight when autocannon stopped, mailed but answered after it)`
          : String(measuredMails),
    },
    {
      label: 'sessions stored vs mails, whole scenario',
      value: `sydent-ts ${rows.scenario} / ${mails.scenario}` + (twin ? `, twin ${rows.twin} / ${mails.twin}` : ''),
    },
  );
  if (cpuUsed) extras.push({ label: CPU_PER_ANSWER_LABEL, value: cpuUsed });
  if (prepared.count)
    extras.push({ label: 'sessions in the database before', value: prepared.count.toLocaleString('en') });
  return {
    summary,
    twin: twinFigure,
    extras,
    notes: [...notes, ...statusNotes(summary)],
    goals: [],
    baseUrl: server.baseUrl,
  };
}

const requestToken: Scenario = {
  name: 'request-token',
  engines: ['sqlite', 'postgresql'],
  description:
    '`POST /_matrix/identity/api/v1/validate/email/requestToken`, a new client_secret and address per request: new session + one mail to a loopback SMTP sink; empty sessions table',
  async run(ctx) {
    const { baseUrl: _baseUrl, ...result } = await measureRequestToken(ctx);
    const rate = result.summary!.ok2xx / result.summary!.durationS;
    const goals: Goal[] = [
      {
        what: 'requestToken + mail, empty sessions table',
        figure: `${rate.toFixed(0)}/s`,
        goal: '≥ 1,000/s',
        met: rate >= 1000,
      },
    ];
    if (result.twin) {
      goals.push({
        what: 'requestToken + mail, empty table, vs its bare twin',
        figure: result.twin.ratio.toFixed(3),
        goal: '≥ 0.5',
        met: result.twin.ratio >= 0.5,
      });
    }
    return { ...result, goals };
  },
};

export default requestToken;
