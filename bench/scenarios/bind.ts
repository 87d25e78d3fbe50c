import Database from 'better-sqlite3';
import type { AutocannonRequest } from 'autocannon';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { decodeBase64, verifySignedJson } from '../../src/crypto/index.js';
import { lookupHash } from '../../src/crypto/hash.js';
import {
  prepareAssociationsDb,
  requestJson,
  startAssociationsServer,
  statusNotes,
  verifyLookup,
} from '../lib/associations-db.js';
import { freePort } from '../lib/ports.js';
import type { Scenario } from '../lib/scenario.js';
import { SERVER_NAME } from '../lib/sydent.js';

const BIND_PATH = '/_matrix/identity/internal/bind';

/**
 * The homeserver of every bound mxid: a bind records an onbind callback for it, and the notifier tries to deliver
 * it. `localhost` resolves to loopback, which the outbound IP guard refuses (and port 1 would refuse anyway), so
 * each delivery fails at once and is retried later: callbacks cost the notifier's bookkeeping, never a wait.
 */
const HOMESERVER = 'localhost:1';

// unique across the warm-up and the measured run, across both servers, and across bench runs on one database copy
const run = Date.now().toString(36);
let counter = 0;

function bindBody(n: number): { medium: string; address: string; mxid: string } {
  return { medium: 'email', address: `bind${n}-${run}@bench.test`, mxid: `@bind${n}:${HOMESERVER}` };
}

function bindRequest(requestPath: string): AutocannonRequest {
  return {
    method: 'POST',
    path: requestPath,
    headers: { 'content-type': 'application/json' },
    setupRequest(req) {
      req.body = JSON.stringify(bindBody(++counter));
      return req;
    },
  };
}

/**
 * Every bind since the database was built, checked: a local row (the replication log) and its global row, whose
 * signed association verifies under the server's key and names the same 3PID and mxid. Returns how many.
 */
function checkStoredBinds(dbPath: string, after: number, verifyKey: string): number {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    const key = decodeBase64(verifyKey);
    const rows = db
      .prepare(
        `SELECT l.id, l.address, l.mxid, g.sgAssoc FROM local_threepid_associations l
         LEFT JOIN global_threepid_associations g ON g.originServer = ? AND g.originId = l.id
         WHERE l.id > ?`,
      )
      .all(SERVER_NAME, after) as Array<{ id: number; address: string; mxid: string; sgAssoc: string | null }>;
    for (const row of rows) {
      if (!row.sgAssoc) throw new Error(`bind ${row.id} has a local row but no global row`);
      const signed = JSON.parse(row.sgAssoc) as { address?: string; mxid?: string };
      if (signed.address !== row.address || signed.mxid !== row.mxid)
        throw new Error(`bind ${row.id}: the signed association names another binding`);
      verifySignedJson(signed, SERVER_NAME, 'ed25519:0', key);
    }
    return rows.length;
  } finally {
    db.close();
  }
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
    const twinDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sydent-bench-twin-'));
    ctx.defer(() => fs.rmSync(twinDir, { recursive: true, force: true }));
    const twinDb = path.join(twinDir, 'sydent.db');
    await prepareAssociationsDb(twinDb);
    const twin = await ctx.startTwin({ kind: 'bind', dbPath: twinDb });

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
    const pubkey = await requestJson(`${s.server.baseUrl}/_matrix/identity/v2/pubkey/ed25519:0`);
    const serverKey = (pubkey.body as { public_key?: string }).public_key;
    if (!serverKey) throw new Error(`pubkey: ${JSON.stringify(pubkey.body).slice(0, 200)}`);

    const summary = await ctx.measure({ url: internalUrl, requests: [bindRequest(BIND_PATH)] });
    const twinFigure = await ctx.pairedWithTwin(
      { url: internalUrl, requests: [bindRequest(BIND_PATH)] },
      { url: twin.baseUrl, requests: [bindRequest(twin.path)] },
    );
    // requests in flight when a slice stopped finish on their own: wait for the writes to land
    await new Promise((r) => setTimeout(r, 500));
    const stored = {
      scenario: checkStoredBinds(s.server.dbPath, s.db.count, serverKey),
      twin: checkStoredBinds(twinDb, s.db.count, twin.verifyKey!),
    };

    const retries = s.server.process
      .stderr()
      .split('\n')
      .filter((l) => l.includes('homeserver callback failed')).length;
    const rate = summary.ok2xx / summary.durationS;
    return {
      summary,
      twin: twinFigure,
      extras: [
        { label: 'binds/s (2xx/s)', value: rate.toFixed(1) },
        { label: 'associations in the database before', value: s.db.count.toLocaleString('en') },
        {
          label: 'check after measuring',
          value:
            `every bind since the build has its local and global row, the signed association verifying under the server's ` +
            `key: sydent-ts ${stored.scenario}, twin ${stored.twin}`,
        },
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
      goals: [
        {
          what: 'bind (internal), 1M associations',
          figure: `${rate.toFixed(0)}/s`,
          goal: '≥ 1,000/s',
          met: rate >= 1000,
        },
        {
          what: 'bind, 1M associations, vs its bare twin',
          figure: twinFigure.ratio.toFixed(3),
          goal: '≥ 0.5',
          met: twinFigure.ratio >= 0.5,
        },
      ],
    };
  },
};

export default bind;
