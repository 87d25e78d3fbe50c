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
import { CPU_PER_ANSWER_LABEL, cpuPerAnswer } from '../lib/cpu-per-answer.js';
import { freePort } from '../lib/ports.js';
import type { Goal, Scenario, TwinFigure } from '../lib/scenario.js';
import { storedRows, type StoredDatabase } from '../lib/stored-rows.js';
import { SERVER_NAME } from '../lib/sydent.js';

export const BIND_PATH = '/_matrix/identity/internal/bind';

/**
 * The homeserver of every bound mxid: a bind records an onbind callback for it, and the notifier tries to deliver
 * it. `localhost` resolves to loopback, which the outbound IP guard refuses (and port 1 would refuse anyway), so
 * each delivery fails at once and is retried later: callbacks cost the notifier's bookkeeping, never a wait.
 */
const HOMESERVER = 'localhost:1';

// unique across the warm-up and the measured run, across both servers, and across bench runs on one database copy
const run = Date.now().toString(36);
let counter = 0;

export function bindBody(n: number): { medium: string; address: string; mxid: string } {
  return { medium: 'email', address: `bind${n}-${run}@bench.test`, mxid: `@bind${n}:${HOMESERVER}` };
}

export function bindRequest(requestPath = BIND_PATH): AutocannonRequest {
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
export async function checkStoredBinds(db: StoredDatabase, after: number, verifyKey: string): Promise<number> {
  const key = decodeBase64(verifyKey);
  const rows = await storedRows<{ id: number | string; address: string; mxid: string; sg_assoc: string | null }>(
    db,
    `SELECT l.id AS id, l.address AS address, l.mxid AS mxid, g.sgAssoc AS sg_assoc FROM local_threepid_associations l
     LEFT JOIN global_threepid_associations g ON g.originServer = ? AND g.originId = l.id
     WHERE l.id > ?`,
    [SERVER_NAME, after],
  );
  for (const row of rows) {
    if (!row.sg_assoc) throw new Error(`bind ${row.id} has a local row but no global row`);
    const signed = JSON.parse(row.sg_assoc) as { address?: string; mxid?: string };
    if (signed.address !== row.address || signed.mxid !== row.mxid)
      throw new Error(`bind ${row.id}: the signed association names another binding`);
    verifySignedJson(signed, SERVER_NAME, 'ed25519:0', key);
  }
  return rows.length;
}

/** A copy of the 1,000,000 associations for the bare twin, removed when the scenario ends. */
async function twinDatabase(ctx: Parameters<Scenario['run']>[0]): Promise<string> {
  const twinDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sydent-bench-twin-'));
  ctx.defer(() => fs.rmSync(twinDir, { recursive: true, force: true }));
  const twinDb = path.join(twinDir, 'sydent.db');
  await prepareAssociationsDb(twinDb);
  return twinDb;
}

const bind: Scenario = {
  name: 'bind',
  engines: ['sqlite', 'postgresql'],
  description:
    '`POST /_matrix/identity/internal/bind` (internal listener) of a new email address per request, with 1,000,000 ' +
    `associations in the database; mxids on \`${HOMESERVER}\` so the onbind callbacks fail fast`,
  async run(ctx) {
    const internalPort = await freePort();
    const s = await startAssociationsServer(ctx, {
      conf: { http: { 'internalapi.http.bind_address': '127.0.0.1', 'internalapi.http.port': String(internalPort) } },
    });
    const internalUrl = `http://127.0.0.1:${internalPort}`;
    // the bare twin works on SQLite: beside sydent-ts on SQLite only
    const twinDb = ctx.engine === 'sqlite' ? await twinDatabase(ctx) : null;
    const twin = twinDb ? await ctx.startTwin({ kind: 'bind', dbPath: twinDb }) : null;

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

    const cpu = cpuPerAnswer(ctx.engine, s.server.process.child.pid);
    const summary = await ctx.measure(
      { url: internalUrl, requests: [bindRequest(BIND_PATH)] },
      { afterWarmup: () => cpu.start() },
    );
    const cpuUsed = await cpu.end(summary.total);
    const twinFigure: TwinFigure | undefined = twin
      ? await ctx.pairedWithTwin(
          { url: internalUrl, requests: [bindRequest(BIND_PATH)] },
          { url: twin.baseUrl, requests: [bindRequest(twin.path)] },
        )
      : undefined;
    // requests in flight when a slice stopped finish on their own: wait for the writes to land
    await new Promise((r) => setTimeout(r, 500));
    const stored = {
      scenario: await checkStoredBinds(s.server, s.db.count, serverKey),
      twin: twinDb ? await checkStoredBinds({ dbPath: twinDb, pgUrl: null }, s.db.count, twin!.verifyKey!) : null,
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
        ...(cpuUsed ? [{ label: CPU_PER_ANSWER_LABEL, value: cpuUsed }] : []),
        { label: 'associations in the database before', value: s.db.count.toLocaleString('en') },
        {
          label: 'check after measuring',
          value:
            `every bind since the build has its local and global row, the signed association verifying under the server's ` +
            `key: sydent-ts ${stored.scenario}` +
            (stored.twin === null ? '' : `, twin ${stored.twin}`),
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
        ...(twinFigure
          ? [
              {
                what: 'bind, 1M associations, vs its bare twin',
                figure: twinFigure.ratio.toFixed(3),
                goal: '≥ 0.5',
                met: twinFigure.ratio >= 0.5,
              } satisfies Goal,
            ]
          : []),
      ],
    };
  },
};

export default bind;
