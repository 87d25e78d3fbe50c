import {
  V2_LOOKUP_PATH,
  lookupRequest,
  mixedHashes,
  startAssociationsServer,
  statusNotes,
  verifyLookup,
} from '../lib/associations-db.js';
import type { Scenario } from '../lib/scenario.js';

/** distinct request bodies, cycled by every connection: hit, miss, hit, miss, … */
const BODIES = 16;
/** sydent-ts processes in the paired measurement */
const PAIRED_SERVERS = 3;

const lookup1: Scenario = {
  name: 'lookup-1',
  engines: ['sqlite', 'postgresql'],
  description:
    '`POST /_matrix/identity/v2/lookup` (sha256) of 1 hash, with 1,000,000 associations in the database: ' +
    `${BODIES} request bodies cycled per connection, alternating a hash that exists and one that does not`,
  async run(ctx) {
    const s = await startAssociationsServer(ctx);
    const { hashes, expected } = mixedHashes(s.db, BODIES / 2, BODIES / 2);
    // every body on its own before measuring: hits answer their mxid, misses nothing
    for (const hash of hashes) {
      const mxid = expected.get(hash);
      await verifyLookup(s, [hash], mxid ? new Map([[hash, mxid]]) : new Map());
    }
    const load = { url: s.server.baseUrl, requests: hashes.map((hash) => lookupRequest(s, [hash])) };
    const summary = await ctx.measure(load);
    // Paired on two more sydent-ts processes besides this one (own copies of the same database on SQLite, the same
    // database on PostgreSQL), because identical processes differ here by up to 40 % (bench/lib/scenario.ts,
    // PAIRED_BASELINES).
    const hit = hashes.find((hash) => expected.has(hash))!;
    const paired = await ctx.pairedWithBaseline(load, {
      count: PAIRED_SERVERS - 1,
      start: async () => {
        const other = await startAssociationsServer(ctx, { pgUrl: s.server.pgUrl ?? undefined });
        await verifyLookup(other, [hit], new Map([[hit, expected.get(hit)!]]));
        return { ...load, url: other.server.baseUrl };
      },
    });
    return {
      summary,
      paired,
      extras: [
        { label: 'associations in the database', value: s.db.count.toLocaleString('en') },
        { label: 'request', value: `${V2_LOOKUP_PATH}, 1 hash, half the requests a hit, Authorization: Bearer` },
        {
          label: 'goal',
          value: 'at least 0.80 of the baseline\'s req/s, kept (column "paired": measured in the same minutes)',
        },
      ],
      notes: statusNotes(summary),
      goals: [
        {
          what: '1-address lookup, paired with a bare GET',
          figure: paired.ratio.toFixed(3),
          goal: '≥ 0.80, kept',
          met: paired.ratio >= 0.8,
        },
      ],
    };
  },
};

export default lookup1;
