import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

import { closeDatabase, openDatabase } from '../../src/store/database.js';
import { median } from '../lib/alternate.js';
import { builtServer } from '../lib/build.js';
import type { Extra, Scenario, ScenarioContext } from '../lib/scenario.js';
import { prepareSessionsDb } from '../lib/sessions-db.js';

const SESSIONS = 1_000_000;
const ASSOCIATIONS = 1_000_000;
/** starts per database, alternating between the two */
const STARTS = 3;
/** how long `GET /versions` is probed after the server said it listens */
const WATCH_S = 3;
const PROBE_EVERY_MS = 20;
const GOAL_MS = 1000;

/** One GET with its own connection; its latency, ms (null: no answer within 30 s). */
function timedGet(url: string): Promise<number | null> {
  return new Promise((resolve) => {
    const t = performance.now();
    const req = http.get(url, { agent: false, timeout: 30_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(performance.now() - t));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(null));
  });
}

interface Start {
  /** spawn → "sydent-ts started" (every listener listening), ms */
  listeningMs: number;
  /** the server's CPU time (user + system, all threads) by then, ms: what start-up cost, whatever the machine's load */
  cpuMs: number;
  /** the slowest `GET /versions` in the WATCH_S seconds after, ms (what runs at once after start-up) */
  worstProbeMs: number;
}

/**
 * Starts the built sydent-ts (build.ts: the bundle run by plain node, as an operator runs it) on an existing database (so every start is a restart, as an operator's is), with `log.level =
 * INFO` for its "sydent-ts started" line, whose arrival is the moment it listens; then probes `GET /versions` for a
 * few seconds, as a client arriving at once would.
 */
async function timeStart(ctx: ScenarioContext, builtMain: string, dbFile: string): Promise<Start> {
  const server = await ctx.startServer({
    builtMain,
    conf: { db: { 'db.file': dbFile }, general: { 'log.level': 'INFO' } },
    startTimeoutMs: 120_000,
  });
  // the client listener can answer the readiness probe a moment before the line is written
  let seen = server.process.seenAt('sydent-ts started');
  for (let waited = 0; seen === null && waited < 5000; waited += 10) {
    await new Promise((r) => setTimeout(r, 10));
    seen = server.process.seenAt('sydent-ts started');
  }
  if (seen === null) throw new Error('no "sydent-ts started" line at log.level INFO');
  const listeningMs = seen - server.process.spawnedAt;
  const cpuMs = (server.process.cpuWhenSeen('sydent-ts started') ?? NaN) * 1000;
  let worstProbeMs = 0;
  const until = performance.now() + WATCH_S * 1000;
  while (performance.now() < until) {
    const ms = await timedGet(`${server.baseUrl}/_matrix/identity/versions`);
    if (ms === null) throw new Error('GET /versions failed after start-up');
    worstProbeMs = Math.max(worstProbeMs, ms);
    await new Promise((r) => setTimeout(r, PROBE_EVERY_MS));
  }
  await server.stop();
  return { listeningMs, cpuMs, worstProbeMs };
}

const startup: Scenario = {
  name: 'startup',
  description:
    `start-up: from the process's spawn (\`node main.js\`, src/ transpiled: as an operator runs it) to listening, on a database with ` +
    `${ASSOCIATIONS.toLocaleString('en')} associations and ${SESSIONS.toLocaleString('en')} sessions, against an empty ` +
    `one (what start-up costs whatever the data); ${STARTS} starts each, alternating; then the slowest \`GET /versions\` ` +
    `in the ${WATCH_S} s after`,
  // builds (the associations, then the sessions on a copy of them) and a copy, then six starts
  timeLimitS: () => 600,
  async run(ctx) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sydent-bench-startup-'));
    ctx.defer(() => fs.rmSync(dir, { recursive: true, force: true }));
    const full = path.join(dir, 'full', 'sydent.db');
    const empty = path.join(dir, 'empty', 'sydent.db');
    const db = await prepareSessionsDb(full, { count: SESSIONS, associations: ASSOCIATIONS });
    ctx.log(
      (db.buildS
        ? `built ${db.count} sessions on ${db.associations} associations in ${db.buildS.toFixed(1)} s; `
        : '') + `copied ${(db.bytes / 2 ** 20).toFixed(0)} MiB in ${db.copyS.toFixed(1)} s`,
    );
    fs.mkdirSync(path.dirname(empty), { recursive: true });
    closeDatabase(openDatabase(empty));
    const builtMain = builtServer();

    const starts: Record<'full' | 'empty', Start[]> = { full: [], empty: [] };
    for (let i = 0; i < STARTS; i++) {
      for (const which of i % 2 ? (['empty', 'full'] as const) : (['full', 'empty'] as const)) {
        starts[which].push(await timeStart(ctx, builtMain, which === 'full' ? full : empty));
      }
    }
    const med = (which: 'full' | 'empty', of: keyof Start) => median(starts[which].map((s) => s[of]));
    const listening = med('full', 'listeningMs');
    const list = (which: 'full' | 'empty') =>
      starts[which]
        .map(
          (s) =>
            `${s.listeningMs.toFixed(0)} ms, ${s.cpuMs.toFixed(0)} ms of CPU (then /versions at worst ${s.worstProbeMs.toFixed(0)} ms)`,
        )
        .join(', ');
    const extras: Extra[] = [
      {
        label: `**to listening, ${ASSOCIATIONS.toLocaleString('en')} associations + ${SESSIONS.toLocaleString('en')} sessions**`,
        value: `**${listening.toFixed(0)} ms** (median of ${STARTS}): ${list('full')}`,
      },
      {
        label: 'to listening, empty database',
        value: `${med('empty', 'listeningMs').toFixed(0)} ms (median of ${STARTS}): ${list('empty')}`,
      },
      {
        label: 'server CPU time to listening (user + system, all threads; medians)',
        value: `${med('full', 'cpuMs').toFixed(0)} ms with the data, ${med('empty', 'cpuMs').toFixed(0)} ms empty`,
      },
      {
        label: 'what the data costs (median full − median empty)',
        value:
          `${(listening - med('empty', 'listeningMs')).toFixed(0)} ms to listening; the slowest /versions in the first ${WATCH_S} s: ` +
          `${med('full', 'worstProbeMs').toFixed(0)} ms vs ${med('empty', 'worstProbeMs').toFixed(0)} ms (medians)`,
      },
      { label: 'database', value: `${(db.bytes / 2 ** 20).toFixed(0)} MiB` },
    ];
    return {
      extras,
      goals: [
        {
          what: 'start-up with 1M associations and 1M sessions, to listening',
          figure: `${listening.toFixed(0)} ms`,
          goal: `< ${GOAL_MS} ms`,
          met: listening < GOAL_MS,
        },
      ],
    };
  },
};

export default startup;
