import { measureBulkLookup } from '../lib/associations-db.js';
import type { Scenario } from '../lib/scenario.js';

/**
 * One connection: each request is sent once the previous answer arrived, so the latency is the server's time for
 * one 10,000-hash lookup (plus loopback transfer of ~460 KB in and ~350 KB out), with no queueing behind another.
 */
const CONNECTIONS = 1;

/** the median goal: issue 22's on SQLite, issue 23's on PostgreSQL */
const GOAL_P50_MS = { sqlite: 25, postgresql: 50 } as const;

const lookup10000: Scenario = {
  name: 'lookup-10000',
  engines: ['sqlite', 'postgresql'],
  description:
    '`POST /_matrix/identity/v2/lookup` (sha256) of 10,000 hashes (the default address_lookup_limit), half of them ' +
    `in the 1,000,000 associations: 2 request bodies with different hashes, ${CONNECTIONS} connection (latency without queueing)`,
  run: (ctx) =>
    measureBulkLookup(ctx, { hashes: 10_000, bodies: 2, connections: CONNECTIONS, goalP50Ms: GOAL_P50_MS[ctx.engine] }),
};

export default lookup10000;
