import type { Scenario } from '../lib/scenario.js';
import { prepareSessionsDb } from '../lib/sessions-db.js';
import { emptyTableRate, measureRequestToken } from './request-token.js';

const SESSIONS = 1_000_000;
/** an operator's database holds both; the same file serves the startup scenario (built once per run) */
const ASSOCIATIONS = 1_000_000;

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
    return {
      ...result,
      goals: [
        {
          what: `requestToken + mail, ${SESSIONS.toLocaleString('en')} sessions in the table`,
          figure:
            `${rate.toFixed(1)}/s` + (share !== null ? ` (${(share * 100).toFixed(1)} % of the empty table's)` : ''),
          goal: '≥ 90 % of the empty-table figure',
          met: share === null ? null : share >= 0.9,
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
