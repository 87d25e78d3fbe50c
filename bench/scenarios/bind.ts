import type { AutocannonRequest } from 'autocannon';
import { lookupHash } from '../../src/crypto/hash.js';
import { requestJson, startAssociationsServer, statusNotes, verifyLookup } from '../lib/associations-db.js';
import { freePort } from '../lib/ports.js';
import type { Scenario } from '../lib/scenario.js';

const BIND_PATH = '/_matrix/identity/internal/bind';

/**
 * The homeserver of every bound mxid: a bind records an onbind callback for it, and the notifier tries to deliver
 * it. `localhost` resolves to loopback, which the outbound IP guard refuses (and port 1 would refuse anyway), so
 * each delivery fails at once and is retried later: callbacks cost the notifier's bookkeeping, never a wait.
 */
const HOMESERVER = 'localhost:1';

// unique across the warm-up and the measured run, and across bench runs on one database copy
const run = Date.now().toString(36);
let counter = 0;

function bindBody(n: number): { medium: string; address: string; mxid: string } {
  return { medium: 'email', address: `bind${n}-${run}@bench.test`, mxid: `@bind${n}:${HOMESERVER}` };
}

const bind: Scenario = {
  name: 'bind',
  description:
    '`POST /_matrix/identity/internal/bind` (internal listener) of a new email address per request, with 1,000,000 ' +
    `associations in the database; mxids on \`${HOMESERVER}\` so the onbind callbacks fail fast`,
  async run(ctx) {
    const internalPort = await freePort();
    const s = await startAssociationsServer(ctx, {
      conf: { http: { 'internalapi.http.bind_address': '127.0.0.1', 'internalapi.http.port': String(internalPort) } },
    });
    const internalUrl = `http://127.0.0.1:${internalPort}`;

    // one bind first: the signed association comes back, and a v2 lookup of its hash finds it
    const probe = bindBody(0);
    const check = await requestJson(`${internalUrl}${BIND_PATH}`, {
      headers: { 'content-type': 'application/json' },
      body: probe,
    });
    const signed = check.body as Record<string, unknown>;
    if (
      check.status !== 200 ||
      signed.address !== probe.address ||
      signed.mxid !== probe.mxid ||
      typeof signed.signatures !== 'object'
    ) {
      throw new Error(`bind check: status ${check.status}, ${JSON.stringify(check.body).slice(0, 300)}`);
    }
    const hash = lookupHash(probe.address, 'email', s.db.pepper);
    await verifyLookup(s, [hash], new Map([[hash, probe.mxid]]));

    const request: AutocannonRequest = {
      method: 'POST',
      path: BIND_PATH,
      headers: { 'content-type': 'application/json' },
      setupRequest(req) {
        req.body = JSON.stringify(bindBody(++counter));
        return req;
      },
    };
    const summary = await ctx.measure({ url: internalUrl, requests: [request] });
    const retries = s.server.process.stderr().split('\n').filter((l) => l.includes('homeserver callback failed')).length;
    return {
      summary,
      extras: [
        { label: 'binds/s (2xx/s)', value: (summary.ok2xx / summary.durationS).toFixed(1) },
        { label: 'associations in the database before', value: s.db.count.toLocaleString('en') },
        {
          label: 'homeserver callbacks',
          value: `one per bind, to ${HOMESERVER}: refused at once by the outbound IP guard (loopback), retried later`,
        },
        {
          label: 'failed callback attempts logged (WARNING "homeserver callback failed; will retry", expected here)',
          value: String(retries),
        },
      ],
      notes: statusNotes(summary),
    };
  },
};

export default bind;
