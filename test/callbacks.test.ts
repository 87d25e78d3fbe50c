/**
 * Homeserver callbacks (onbind) end to end: rows recorded through the store actor as a bind records them, the
 * notifier delivering them over real HTTPS to loopback homeservers found through a test DNS server, retries moved
 * on with the manual clock, restarts on the same database.
 */
import type http from 'node:http';
import https from 'node:https';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ManualClock } from '../src/clock.js';
import { toDebugRow, type CallbackDebugRow, type DebugRow } from '../src/store/callbacks.js';
import { makeCert } from './helpers/certs.js';
import { mergeConf, startFederationEnv, type FederationEnv } from './helpers/federation-env.js';
import { startHomeserver, type Homeserver, type RecordedRequest, type RouteHandler } from './helpers/homeserver.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { write } from './helpers/flows.js';
import { openRowReader, rows, row as firstRow, type RowReader } from './helpers/rows.js';

const ONBIND = '/_matrix/federation/v1/3pid/onbind';
const ROUTE = `POST ${ONBIND}`;
const SECOND = 1000;
const HOUR = 3600 * SECOND;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function env(routes: Record<string, RouteHandler>): Promise<FederationEnv> {
  const e = await startFederationEnv(routes);
  cleanups.push(() => e.close());
  return e;
}

async function server(
  e: FederationEnv,
  opts: { conf?: Record<string, Record<string, string>>; dir?: string; clock?: ManualClock } = {},
) {
  const t = await startTestServer({
    conf: mergeConf(e.conf, opts.conf ?? {}),
    ...(opts.dir ? { dir: opts.dir } : {}),
    ...(opts.clock ? { clock: opts.clock } : {}),
  });
  // a server on its own new directory removes it when closed; a restarted one leaves that to the first
  cleanups.push(() => (opts.dir ? t.server.close() : t.close()));
  return t;
}

/** A signed association as the bind code sends it, with one invite. */
function association(mxid: string, address = 'alice@example.com') {
  return {
    medium: 'email',
    address,
    mxid,
    ts: 1_700_000_000_000,
    not_before: 1_700_000_000_000,
    not_after: 4_853_600_000_000,
    invites: [
      {
        medium: 'email',
        address,
        mxid,
        room_id: '!room:hs.test',
        sender: '@bob:hs.test',
        token: 'invitetoken',
        signed: { mxid, token: 'invitetoken', signatures: { 'is.example.test': { 'ed25519:0': 'c2ln' } } },
      },
    ],
    signatures: { 'is.example.test': { 'ed25519:0': 'c2lnbmF0dXJl' } },
  };
}

/** Records a callback through the store supervisor, as a bind does in its transaction, and wakes the notifier. */
async function enqueue(
  t: TestServer,
  destination: string,
  body: unknown,
  address = 'alice@example.com',
): Promise<number> {
  const { facades } = t.server.ctx;
  const id = await facades.stores.enqueueCallback({
    destination,
    path: ONBIND,
    body,
    medium: 'email',
    address,
    now: t.clock.now(),
  });
  await facades.notifier.wake({});
  return id;
}

const wake = (t: TestServer) => t.server.ctx.facades.notifier.wake({});
/** A callback row as the database holds it now, read on a connection of the test's own (either engine). */
const readers = new Map<string, Promise<RowReader>>();
const row = async (t: TestServer, id: number): Promise<CallbackDebugRow | undefined> => {
  const file = t.config.db.dbFile;
  let reader = readers.get(file);
  if (!reader) {
    const opened = openRowReader(t);
    readers.set(file, (reader = opened));
    // closed before the server (its database is dropped at close on PostgreSQL)
    cleanups.push(async () => {
      readers.delete(file);
      await (await opened).close();
    });
  }
  const [r] = await (
    await reader
  ).rows<DebugRow>(
    `SELECT id, destination, state, attempts, next_attempt_ts, claimed_until, last_error, created_ts, delivered_ts
     FROM callback_outbox WHERE id = ?`,
    id,
  );
  return r && toDebugRow(r);
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Callbacks are delivered by the notifier on its own time: what a test waits for is polled. */
const WAIT = { timeout: 8000, interval: 15 };

/** The row of callback `id` once `ready` holds for it. */
const rowWhen = (t: TestServer, id: number, what: string, ready: (r: CallbackDebugRow) => boolean) =>
  vi.waitFor(async () => {
    const r = await row(t, id);
    expect(r !== undefined && ready(r), what).toBe(true);
    return r!;
  }, WAIT);
const inState = (t: TestServer, id: number, state: CallbackDebugRow['state']) =>
  rowWhen(t, id, `callback ${id} to be ${state}`, (r) => r.state === state);

const onbinds = (hs: Homeserver) => hs.requests.filter((r) => r.method === 'POST' && r.url === ONBIND);

/** Moves the clock past the next attempt of `id` and wakes the worker. */
async function advancePastRetry(t: TestServer, id: number): Promise<void> {
  const r = (await row(t, id))!;
  const clock = t.clock as ManualClock;
  clock.set(Math.max(clock.now(), r.nextAttemptTs));
  await wake(t);
}

/** A homeserver on a port chosen by the test, so it can be down first and up later at the same address. */
async function homeserverOnPort(
  port: number,
  tls: { key: string; cert: string },
  status: number,
): Promise<{ requests: RecordedRequest[]; close(): Promise<void> }> {
  const requests: RecordedRequest[] = [];
  const srv = https.createServer(tls, (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      requests.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      });
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, '127.0.0.1', () => resolve());
  });
  return {
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        srv.close(() => resolve());
        srv.closeAllConnections();
      }),
  };
}

describe('onbind delivery', () => {
  it('POSTs the exact signed association as application/json to the homeserver, once', async () => {
    const e = await env({ [ROUTE]: () => ({ json: {} }) });
    const t = await server(e);
    const mxid = `@alice:${e.serverName}`;
    const body = association(mxid);
    const id = await enqueue(t, e.serverName, body);

    const delivered = await inState(t, id, 'delivered');
    expect(delivered.attempts).toBe(0);
    expect(delivered.lastError).toBeNull();
    expect(delivered.deliveredTs).toBe(t.clock.now());
    const reqs = onbinds(e.hs);
    expect(reqs).toHaveLength(1);
    const req = reqs[0]!;
    expect(req.headers['content-type']).toBe('application/json');
    expect(req.headers['host']).toBe(e.serverName);
    expect(req.headers['authorization']).toBeUndefined();
    expect(JSON.parse(req.body)).toEqual(body);

    // nothing more happens, however long we wait
    (t.clock as ManualClock).advance(10 * HOUR);
    await wake(t);
    await sleep(200);
    expect(onbinds(e.hs)).toHaveLength(1);

    // the debug view: counts and rows, never the body nor the 3PID
    const outbox = await t.server.ctx.facades.notifier.outbox({});
    expect(outbox.counts.delivered).toBe(1);
    expect(outbox.pending).toBe(0);
    expect(outbox.inFlight).toEqual([]);
    expect(outbox.rows).toEqual([delivered]);
    expect(JSON.stringify(outbox)).not.toContain('alice@example.com');
    expect(JSON.stringify(outbox)).not.toContain('invitetoken');
  });

  it('retries a 500 with backoff and delivers exactly once on the 200', async () => {
    let calls = 0;
    const e = await env({
      [ROUTE]: () => (++calls < 3 ? { status: 500, json: { errcode: 'M_UNKNOWN' } } : { json: {} }),
    });
    const t = await server(e);
    const id = await enqueue(t, e.serverName, association(`@alice:${e.serverName}`));

    const first = await inState(t, id, 'retrying');
    expect(first.attempts).toBe(1);
    expect(first.lastError).toBe('HTTP 500');
    const t1 = t.clock.now();
    expect(first.nextAttemptTs).toBeGreaterThan(t1 + 0.75 * SECOND - 1);
    expect(first.nextAttemptTs).toBeLessThanOrEqual(t1 + SECOND);

    // not due yet: a wake does nothing
    (t.clock as ManualClock).advance(SECOND / 2 - 1);
    await wake(t);
    await sleep(100);
    expect(onbinds(e.hs)).toHaveLength(1);

    await advancePastRetry(t, id);
    const second = await rowWhen(t, id, 'the second failure', (r) => r.attempts === 2);
    expect(second.state).toBe('retrying');
    // the delay grew: 2 s nominal, less at most 25 % jitter
    const t2 = t.clock.now();
    expect(second.nextAttemptTs - t2).toBeGreaterThanOrEqual(1.5 * SECOND);
    expect(second.nextAttemptTs - t2).toBeLessThanOrEqual(2 * SECOND);

    await advancePastRetry(t, id);
    await inState(t, id, 'delivered');
    (t.clock as ManualClock).advance(HOUR);
    await wake(t);
    await sleep(200);
    expect(onbinds(e.hs)).toHaveLength(3);
  });

  it('counts 3xx and 4xx answers as failures', async () => {
    const answers = [
      { status: 302, headers: { location: 'https://elsewhere.test/' }, text: '' },
      { status: 404, json: { errcode: 'M_UNRECOGNIZED' } },
      { status: 204, text: '' },
      { status: 200, json: {} },
    ];
    const e = await env({ [ROUTE]: () => answers.shift()! });
    const t = await server(e);
    const id = await enqueue(t, e.serverName, association(`@alice:${e.serverName}`));
    const errors: string[] = [];
    for (let attempt = 1; attempt <= 3; attempt++) {
      const r = await rowWhen(t, id, `failure ${attempt}`, (r) => r.attempts === attempt);
      expect(r.state).toBe('retrying');
      errors.push(r.lastError!);
      await advancePastRetry(t, id);
    }
    expect(errors).toEqual(['HTTP 302', 'HTTP 404', 'HTTP 204']);
    await inState(t, id, 'delivered');
    expect(onbinds(e.hs)).toHaveLength(4);
  });

  it('retries while the homeserver is down and delivers once it is up', async () => {
    const e = await env({});
    const cert = await makeCert(e.ca, { hostnames: ['hs.test'] });
    // a free port with nobody listening: the homeserver is down
    const probe = await startHomeserver({ routes: {} });
    const port = probe.port;
    await probe.close();
    const destination = `hs.test:${port}`;

    const t = await server(e);
    const body = association(`@alice:${destination}`);
    const id = await enqueue(t, destination, body);
    const failed = await inState(t, id, 'retrying');
    expect(failed.lastError).toMatch(/^Unable to contact the Matrix homeserver hs\.test:\d+/);

    const hs = await homeserverOnPort(port, cert, 200);
    cleanups.push(() => hs.close());
    await advancePastRetry(t, id);
    await inState(t, id, 'delivered');
    expect(hs.requests).toHaveLength(1);
    expect(JSON.parse(hs.requests[0]!.body)).toEqual(body);
  });

  it('a homeserver that fails is left alone until its failed row is due again: one attempt, not one after another', async () => {
    let failing = true;
    const e = await env({
      [ROUTE]: () => (failing ? { status: 500, json: { errcode: 'M_UNKNOWN' } } : { json: {} }),
    });
    const other = await startHomeserver({
      tls: await makeCert(e.ca, { hostnames: ['hs.test'] }),
      routes: { [ROUTE]: () => ({ json: {} }) },
    });
    cleanups.push(() => other.close());
    const otherName = `hs.test:${other.port}`;
    const t = await server(e);
    const ids: number[] = [];
    for (let i = 0; i < 5; i++)
      ids.push(await enqueue(t, e.serverName, association(`@u${i}:${e.serverName}`, `u${i}@example.com`)));
    const first = await vi.waitFor(async () => {
      const failed = (await Promise.all(ids.map((id) => row(t, id)))).filter((r) => r?.state === 'retrying');
      expect(failed.length, 'an attempt to fail').toBeGreaterThan(0);
      return failed[0]!;
    }, WAIT);
    // The other homeserver is delivered to meanwhile; the failing one was asked once, its four other rows (all due
    // since they were recorded) wait.
    const otherId = await enqueue(t, otherName, association(`@carol:${otherName}`, 'carol@example.com'));
    await inState(t, otherId, 'delivered');
    await wake(t);
    await sleep(300);
    expect(onbinds(e.hs)).toHaveLength(1);
    expect((await Promise.all(ids.map((id) => row(t, id)))).filter((r) => r?.state === 'pending')).toHaveLength(4);

    // Once the failed row is due again the homeserver is tried again; now it answers, and every row is delivered.
    failing = false;
    (t.clock as ManualClock).set(first.nextAttemptTs);
    await wake(t);
    for (const id of ids) await inState(t, id, 'delivered');
    expect(onbinds(e.hs)).toHaveLength(6);
  });

  it('gives up at once on a destination that is no server name', async () => {
    const e = await env({ [ROUTE]: () => ({ json: {} }) });
    const t = await server(e);
    const id = await enqueue(t, 'not a server name', association('@alice:not a server name'));
    const r = await inState(t, id, 'abandoned');
    expect(r.lastError).toContain('not a valid Matrix server name');
    (t.clock as ManualClock).advance(HOUR);
    await wake(t);
    await sleep(100);
    expect((await row(t, id))?.state).toBe('abandoned');
    expect(e.hs.requests).toHaveLength(0);
  });
});

describe('onbind and invite tokens', () => {
  const insertInvites = (t: TestServer) =>
    write(
      t,
      `INSERT INTO invite_tokens (medium, address, room_id, sender, token, received_ts, sent_ts) VALUES
         ('email', 'alice@example.com', '!a:hs.test', '@bob:hs.test', 'tok-a', 1, 2),
         ('email', 'alice@example.com', '!b:hs.test', '@bob:hs.test', 'tok-b', 1, 2),
         ('email', 'carol@example.com', '!a:hs.test', '@bob:hs.test', 'tok-c', 1, NULL)`,
    );
  const tokens = (t: TestServer) =>
    rows<{ token: string }>(t, 'SELECT token FROM invite_tokens ORDER BY token').map((r) => r.token);

  it('delete_tokens_on_bind = true deletes that 3PID’s invite tokens after the 200, and only then', async () => {
    let ok = false;
    const e = await env({ [ROUTE]: () => (ok ? { json: {} } : { status: 503, json: {} }) });
    const t = await server(e, { conf: { general: { delete_tokens_on_bind: 'true' } } });
    await insertInvites(t);
    const id = await enqueue(t, e.serverName, association(`@alice:${e.serverName}`));
    await inState(t, id, 'retrying');
    expect(tokens(t)).toEqual(['tok-a', 'tok-b', 'tok-c']);
    ok = true;
    await advancePastRetry(t, id);
    await inState(t, id, 'delivered');
    expect(tokens(t)).toEqual(['tok-c']);
  });

  it('delete_tokens_on_bind = false keeps them', async () => {
    const e = await env({ [ROUTE]: () => ({ json: {} }) });
    const t = await server(e, { conf: { general: { delete_tokens_on_bind: 'false' } } });
    await insertInvites(t);
    const id = await enqueue(t, e.serverName, association(`@alice:${e.serverName}`));
    await inState(t, id, 'delivered');
    expect(tokens(t)).toEqual(['tok-a', 'tok-b', 'tok-c']);
  });
});

describe('onbind: one dead homeserver does not hold up the others', () => {
  it('delivers to a live homeserver while another never answers', async () => {
    const e = await env({ [ROUTE]: () => ({ json: {} }) });
    const dead = await startHomeserver({
      tls: await makeCert(e.ca, { hostnames: ['hs.test'] }),
      // never answers
      routes: { [ROUTE]: () => new Promise(() => undefined) },
    });
    cleanups.push(() => dead.close());
    const deadName = `hs.test:${dead.port}`;
    const t = await server(e);

    // more callbacks to the dead homeserver than the worker has slots
    const deadIds: number[] = [];
    for (let i = 0; i < 12; i++)
      deadIds.push(await enqueue(t, deadName, association(`@u${i}:${deadName}`, `u${i}@example.com`)));
    await vi.waitFor(() => expect(dead.requests.length >= 1, 'the dead homeserver to be asked').toBe(true), WAIT);
    const liveIds = [
      await enqueue(t, e.serverName, association(`@alice:${e.serverName}`)),
      await enqueue(t, e.serverName, association(`@bob:${e.serverName}`, 'bob@example.com')),
    ];
    for (const id of liveIds) await inState(t, id, 'delivered');
    expect(onbinds(e.hs)).toHaveLength(2);
    // one request at a time to the dead homeserver, the others wait their turn
    expect(dead.requests).toHaveLength(1);
    const outbox = await t.server.ctx.facades.notifier.outbox({});
    expect(outbox.inFlight).toHaveLength(1);
    expect(outbox.counts.pending).toBe(11);

    // the dead homeserver's connection drops: that attempt fails and is retried later
    await dead.close();
    await vi.waitFor(
      async () =>
        expect(
          (await Promise.all(deadIds.map((id) => row(t, id)))).some((r) => r?.state === 'retrying'),
          'the dead attempt to fail',
        ).toBe(true),
      WAIT,
    );
  });
});

describe('onbind across restarts', () => {
  it('a callback still pending when sydent-ts stops is delivered after the restart, once', async () => {
    let up = false;
    const e = await env({ [ROUTE]: () => (up ? { json: {} } : { status: 502, json: {} }) });
    const t = await server(e);
    const clock = t.clock as ManualClock;
    const id = await enqueue(t, e.serverName, association(`@alice:${e.serverName}`));
    await inState(t, id, 'retrying');
    await t.server.close();

    up = true;
    clock.advance(HOUR);
    const t2 = await server(e, { dir: t.dir, clock });
    // the start-up round finds it: no WAKE needed
    const r = await inState(t2, id, 'delivered');
    expect(r.attempts).toBe(1);
    await wake(t2);
    await sleep(200);
    // the failed attempt before the restart, the 200 after it
    expect(onbinds(e.hs)).toHaveLength(2);
  });

  it('shutdown releases a delivery still under way; the restart delivers it', async () => {
    let hang = true;
    const e = await env({ [ROUTE]: () => (hang ? new Promise(() => undefined) : { json: {} }) });
    const t = await server(e);
    const clock = t.clock as ManualClock;
    const id = await enqueue(t, e.serverName, association(`@alice:${e.serverName}`));
    await vi.waitFor(() => expect(onbinds(e.hs).length === 1, 'the request to arrive').toBe(true), WAIT);
    expect((await row(t, id))?.state).toBe('delivering');
    const dir = t.dir;
    await t.server.close();

    const released = firstRow(
      `${dir}/sydent.db`,
      'SELECT state, attempts, claimed_until FROM callback_outbox WHERE id = ?',
      id,
    );
    expect(released).toEqual({ state: 'pending', attempts: 0, claimed_until: null });

    hang = false;
    const t2 = await server(e, { dir, clock });
    await inState(t2, id, 'delivered');
    expect(onbinds(e.hs)).toHaveLength(2);
  });

  it('a row a killed process left claimed is delivered once its claim has run out', async () => {
    const e = await env({ [ROUTE]: () => ({ json: {} }) });
    const t = await server(e);
    const clock = t.clock as ManualClock;
    const dir = t.dir;
    // stop the notifier from getting there first: record the row with the server stopped
    await t.server.close();
    const claimedUntil = clock.now() + 2 * 60 * SECOND;
    await write(
      t,
      `INSERT INTO callback_outbox (destination, path, body, medium, address, state, attempts, next_attempt_ts, claimed_until, created_ts)
       VALUES (?, ?, ?, 'email', 'alice@example.com', 'delivering', 0, ?, ?, ?)`,
      e.serverName,
      ONBIND,
      JSON.stringify(association(`@alice:${e.serverName}`)),
      clock.now(),
      claimedUntil,
      clock.now(),
    );
    const id = firstRow<{ id: number }>(t, 'SELECT max(id) AS id FROM callback_outbox')!.id;

    const t2 = await server(e, { dir, clock });
    await wake(t2);
    await sleep(200);
    // someone (the killed process) still holds it
    expect((await row(t2, id))?.state).toBe('delivering');
    expect(onbinds(e.hs)).toHaveLength(0);

    clock.set(claimedUntil + 1);
    await wake(t2);
    await inState(t2, id, 'delivered');
    expect(onbinds(e.hs)).toHaveLength(1);
  });
});
