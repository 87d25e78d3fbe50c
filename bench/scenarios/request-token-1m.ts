import { alternate, mean } from '../lib/alternate.js';
import type { CannonSummary } from '../lib/cannon.js';
import type { Scenario, ScenarioContext } from '../lib/scenario.js';
import { prepareSessionsDb } from '../lib/sessions-db.js';
import { emailConf, emptyTableRate, measureRequestToken, uniqueRequest } from './request-token.js';

const SESSIONS = 1_000_000;
/** an operator's database holds both; the same file serves the startup scenario (built once per run) */
const ASSOCIATIONS = 1_000_000;

/** rounds of the same-minute comparison with an empty table, one slice of each side per round */
const EMPTY_ROUNDS = 4;
const EMPTY_SLICE_S = 3;

const perS = (slices: CannonSummary[]) => slices.map((s) => s.ok2xx / s.durationS);

/**
 * The goal's comparison measured in the same minutes: slices of requestTokens alternating between this server (the
 * table of a million sessions) and a sydent-ts on an empty table, each with its own SMTP sink. The empty table's own
 * scenario runs minutes earlier, and this machine drifts by ±20 % between minutes: two figures taken that far apart
 * say more about the minutes than about the table.
 */
async function againstEmptyTable(ctx: ScenarioContext, fullUrl: string): Promise<{ full: number[]; empty: number[] }> {
  const sink = await ctx.startSmtpSink();
  const empty = await ctx.startServer({ conf: emailConf(sink.port) });
  // as warm as the other side, which has run the warm-up, the measured run and the twin's slices by now
  await ctx.cannon({
    url: empty.baseUrl,
    requests: [uniqueRequest()],
    connections: ctx.connections,
    duration: ctx.warmupS + ctx.durationS,
  });
  const slices = await alternate(
    new Map([
      ['full', { url: fullUrl, requests: [uniqueRequest()] }],
      ['empty', { url: empty.baseUrl, requests: [uniqueRequest()] }],
    ]),
    { rounds: EMPTY_ROUNDS, sliceS: EMPTY_SLICE_S, connections: ctx.connections },
  );
  return { full: perS(slices.get('full')!), empty: perS(slices.get('empty')!) };
}

/**
 * request-token on an operator's database after a busy day: 1,000,000 sessions already in Sydent's tables (and
 * our machine rows), beside 1,000,000 associations, built once per run (bench/lib/sessions-db.ts) and copied for
 * sydent-ts and for its twin.
 */
const requestToken1m: Scenario = {
  name: 'request-token-1m',
  description:
    '`POST …/v1/validate/email/requestToken`, a new client_secret and address per request (new session + one mail), with ' +
    `${SESSIONS.toLocaleString('en')} sessions already in the tables (distinct addresses and secrets, mtimes over the last 24 h; ` +
    `and ${ASSOCIATIONS.toLocaleString('en')} associations)`,
  // the build (about a minute on a quiet machine), two copies, and requests that may take seconds each
  timeLimitS: ({ warmupS, durationS }) => warmupS + durationS + 600,
  async run(ctx) {
    const result = await measureRequestToken(ctx, {
      prepareDb: async (dbPath) => {
        const db = await prepareSessionsDb(dbPath, { count: SESSIONS, associations: ASSOCIATIONS });
        ctx.log(
          (db.buildS
            ? `built ${db.count} sessions on ${db.associations} associations in ${db.buildS.toFixed(1)} s; `
            : '') + `copied ${(db.bytes / 2 ** 20).toFixed(0)} MiB in ${db.copyS.toFixed(1)} s`,
        );
        return { samples: db.samples, count: db.count };
      },
      // one requestToken may take over a second here: wait that long for quiet before counting mails
      settleQuietMs: 3000,
      startTimeoutMs: 60_000,
    });
    const rate = result.summary!.ok2xx / result.summary!.durationS;
    const share = emptyTableRate ? rate / emptyTableRate : null;
    const paired = await againstEmptyTable(ctx, result.baseUrl);
    const pairedShare = mean(paired.full) / mean(paired.empty);
    const { baseUrl: _baseUrl, ...shown } = result;
    return {
      ...shown,
      extras: [
        ...(result.extras ?? []),
        {
          label: 'against an empty table in the same minutes',
          value:
            `${(pairedShare * 100).toFixed(1)} % (2xx/s per round, ${SESSIONS.toLocaleString('en')} sessions / empty table: ` +
            paired.full.map((f, i) => `${f.toFixed(0)}/${paired.empty[i]!.toFixed(0)}`).join(', ') +
            `; ${EMPTY_ROUNDS} rounds of ${EMPTY_SLICE_S} s slices, a sydent-ts on an empty table started and warmed for it)`,
        },
        {
          label: "against the empty-table scenario's measured run (minutes earlier)",
          value: share !== null ? `${rate.toFixed(1)}/s, ${(share * 100).toFixed(1)} %` : 'not run',
        },
      ],
      goals: [
        {
          what: `requestToken + mail, ${SESSIONS.toLocaleString('en')} sessions in the table`,
          figure: `${(pairedShare * 100).toFixed(1)} % of an empty table's 2xx/s in the same minutes (${rate.toFixed(1)}/s measured)`,
          goal: '≥ 90 % of the empty-table figure',
          met: pairedShare >= 0.9,
        },
        {
          what: `requestToken + mail, ${SESSIONS.toLocaleString('en')} sessions, vs its bare twin`,
          figure: result.twin!.ratio.toFixed(3),
          goal: '≥ 0.5',
          met: result.twin!.ratio >= 0.5,
        },
      ],
    };
  },
};

export default requestToken1m;
