import { measureBulkLookup } from '../lib/associations-db.js';
import type { Scenario } from '../lib/scenario.js';

const lookup1000: Scenario = {
  name: 'lookup-1000',
  engines: ['sqlite', 'postgresql'],
  description:
    '`POST /_matrix/identity/v2/lookup` (sha256) of 1,000 hashes, half of them in the 1,000,000 associations: ' +
    '4 request bodies with different hashes, cycled per connection',
  run: (ctx) => measureBulkLookup(ctx, { hashes: 1000, bodies: 4 }),
};

export default lookup1000;
