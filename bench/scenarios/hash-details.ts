import { requestJson, startAssociationsServer, statusNotes } from '../lib/associations-db.js';
import type { Scenario } from '../lib/scenario.js';

const HASH_DETAILS_PATH = '/_matrix/identity/v2/hash_details';

const hashDetails: Scenario = {
  name: 'hash-details',
  engines: ['sqlite', 'postgresql'],
  description: '`GET /_matrix/identity/v2/hash_details` with an access token, 1,000,000 associations in the database',
  async run(ctx) {
    const s = await startAssociationsServer(ctx);
    const headers = { authorization: s.authHeaders.authorization! };
    const check = await requestJson(`${s.server.baseUrl}${HASH_DETAILS_PATH}`, { headers });
    const body = check.body as { algorithms?: unknown; lookup_pepper?: unknown };
    if (
      check.status !== 200 ||
      body.lookup_pepper !== s.db.pepper ||
      !Array.isArray(body.algorithms) ||
      !body.algorithms.includes('sha256')
    ) {
      throw new Error(`hash_details check: status ${check.status}, ${JSON.stringify(check.body).slice(0, 300)}`);
    }
    const load = { url: `${s.server.baseUrl}${HASH_DETAILS_PATH}`, headers };
    const summary = await ctx.measure(load);
    const paired = await ctx.pairedWithBaseline(load);
    return { summary, paired, notes: statusNotes(summary) };
  },
};

export default hashDetails;
