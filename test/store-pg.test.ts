/**
 * What only the PostgreSQL engine has to show: start-up refused in one line when the database cannot be reached or
 * logged into; a database lost while running answers 503 M_UNKNOWN JSON and the server recovers by itself when it is
 * back; and two stores (two nodes) on one database: a session saved from one row version by both is saved once,
 * and a callback row is claimed by one of them only; the `peers` command on the database of db.url.
 */
import net from 'node:net';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';

import type { StoreEngine, WriteRequest } from '../src/store/engine.js';
import type { PgStore as PgStoreT } from '../src/store/pg/store.js';
import { loadPgEngine } from '../src/store/pg/load.js';
import { rotatePgPepper } from '../src/store/pg/hashing.js';
import { BindConflictError } from '../src/store/associations.js';
import { lookupHash } from '../src/crypto/index.js';
import { SessionConflictError, type SessionWrite } from '../src/store/sessions.js';
import { StartupError } from '../src/startup-error.js';
import { StoreUnavailableError } from '../src/store/unavailable.js';
import { call, emailConf, portForwarder } from './helpers/email.js';
import { V1 } from './helpers/flows.js';
import { connect, testDatabase } from './helpers/postgres.js';
import { startTestServer } from './helpers/server.js';
import { startSmtpServer } from './helpers/smtp.js';

const log = pino({ level: 'silent' });
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const req = (): WriteRequest => ({ deadline: Date.now() + 10_000 });

/** A session's write as the machine host makes it, a token sent; `over` says what differs. */
const sessionWrite = (over: Partial<SessionWrite> & { sid: number }): SessionWrite => ({
  state: 'tokenSent',
  context: '{}',
  machineVersion: 1,
  address: 'x@example.org',
  validated: false,
  mtime: 1_000,
  token: 'T',
  sendAttempt: 1,
  history: [],
  now: 1_000,
  expectedSydent: null,
  ...over,
});

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as net.AddressInfo;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

const withPort = (url: string, port: number, password?: string): string => {
  const u = new URL(url);
  u.port = String(port);
  if (password !== undefined) u.password = password;
  return u.href;
};

describe('start-up on PostgreSQL', () => {
  it('a wrong password, or no server on the port, stops start-up with one line that names neither the password', async () => {
    const db = await testDatabase();
    cleanups.push(db.drop);
    const port = Number(new URL(db.url).port);
    const attempt = (url: string) =>
      startTestServer({ engine: 'postgresql', adjust: (c) => void (c.db.url = url) }).then((t) => t.close());

    const wrong = await attempt(withPort(db.url, port, 'not-the-password')).catch((e: unknown) => e);
    expect(wrong).toBeInstanceOf(StartupError);
    expect((wrong as Error).message).toBe(
      `PostgreSQL at 127.0.0.1:${port}/${db.name} refused the password of user "postgres"`,
    );

    const closed = await freePort();
    const refused = await attempt(withPort(db.url, closed)).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(StartupError);
    expect((refused as Error).message).toBe(
      `cannot connect to PostgreSQL at 127.0.0.1:${closed}/${db.name}: connection refused (is it running, on that port?)`,
    );
    expect((refused as Error).message).not.toContain(new URL(db.url).password);
  });
});

describe('the database lost while running', () => {
  it('reads and writes answer 503 M_UNKNOWN with Retry-After, /ready says not ready; all works again once it is back', async () => {
    const db = await testDatabase();
    cleanups.push(db.drop);
    const smtp = await startSmtpServer();
    cleanups.push(() => smtp.close());
    const dbPort = Number(new URL(db.url).port);
    const proxy = await portForwarder(await freePort(), () => dbPort);
    await proxy.up();
    cleanups.push(() => proxy.down());
    const t = await startTestServer({
      engine: 'postgresql',
      conf: { email: emailConf(smtp.port) },
      adjust: (c) => void (c.db.url = withPort(db.url, proxy.port)),
    });
    cleanups.push(() => t.close());
    const lookup = () => call(t.url(`${V1}/lookup?medium=email&address=lost%40example.org`));
    const requestToken = (attempt: number) =>
      call(t.url(`${V1}/validate/email/requestToken`), {
        body: { email: 'lost@example.org', client_secret: 'lost-secret', send_attempt: attempt },
      });
    expect((await lookup()).status).toBe(200);

    await proxy.down();
    const read = await lookup();
    expect([read.status, read.json]).toEqual([
      503,
      { errcode: 'M_UNKNOWN', error: 'The database server cannot be reached' },
    ]);
    expect(read.headers.get('retry-after')).toBe('5');
    const write = await requestToken(1);
    expect([write.status, write.json['errcode']]).toEqual([503, 'M_UNKNOWN']);
    const ready = await call(t.url('/ready'));
    expect(ready.status).toBe(503);
    expect(smtp.messages).toHaveLength(0);

    await proxy.up();
    expect((await lookup()).status).toBe(200);
    const again = await requestToken(1);
    expect(again.status, again.text).toBe(200);
    await smtp.waitForMessage();
    expect((await call(t.url('/ready'))).status).toBe(200);
  });
});

describe('a connection cut under a transaction', () => {
  it('fails that write with StoreUnavailableError (unreachable), nothing else: the process goes on, the next write works', async () => {
    const db = await testDatabase();
    cleanups.push(db.drop);
    const dbPort = Number(new URL(db.url).port);
    const proxy = await portForwarder(await freePort(), () => dbPort);
    await proxy.up();
    cleanups.push(() => proxy.down());
    const { createPgPool, inTransaction } = await import('../src/store/pg/pool.js');
    const pool = createPgPool(withPort(db.url, proxy.port), 2);
    cleanups.push(() => pool.end());
    const uncaught: unknown[] = [];
    const onUncaught = (e: unknown) => uncaught.push(e);
    process.on('uncaughtException', onUncaught);
    cleanups.push(() => process.off('uncaughtException', onUncaught));

    const cut = inTransaction(pool, async (sql) => {
      await sql.query('SELECT 1');
      await proxy.down();
      // The server's side is gone while this connection is checked out and idle between two statements.
      await new Promise((resolve) => setTimeout(resolve, 200));
      await sql.query('SELECT 1');
    });
    const error = await cut.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as StoreUnavailableError).reason).toBe('unreachable');
    expect(uncaught).toEqual([]);
    await proxy.up();
    expect(await inTransaction(pool, async (sql) => (await sql.query<{ n: number }>('SELECT 2 AS n')).rows[0]!.n)).toBe(
      2,
    );
  });
});

describe('two stores (two nodes) on one database', () => {
  async function twoStores(): Promise<[StoreEngine, StoreEngine]> {
    const db = await testDatabase();
    cleanups.push(db.drop);
    const { preparePgDatabase, PgStore } = await loadPgEngine();
    await preparePgDatabase(db.url);
    const a = PgStore.open({ url: db.url, poolSize: 4, log, nodeName: 'a' });
    const b = PgStore.open({ url: db.url, poolSize: 4, log, nodeName: 'b' });
    cleanups.push(
      () => a.close(),
      () => b.close(),
    );
    return [a, b];
  }

  const session = (over: Partial<SessionWrite>): SessionWrite => sessionWrite({ sid: 9, ...over });

  it('saves of one session from the same row version, on both at once: one wins, the other hears of the conflict', async () => {
    const [a, b] = await twoStores();
    await a.writes.createSession({ medium: 'email', clientSecret: 'cs', write: session({}) }, req());
    for (let round = 1; round <= 10; round++) {
      const results = await Promise.allSettled([
        a.writes.saveSession(
          { write: session({ mtime: 1_000 + round, context: '{"by":"a"}' }), expectedVersion: round },
          req(),
        ),
        b.writes.saveSession(
          { write: session({ mtime: 1_000 + round, context: '{"by":"b"}' }), expectedVersion: round },
          req(),
        ),
      ]);
      expect(results.filter((r) => r.status === 'fulfilled').map((r) => r.value)).toEqual([round + 1]);
      const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect(lost.reason).toBeInstanceOf(SessionConflictError);
    }
    expect((await b.reads.sessions.load(9))?.machine?.row_version).toBe(11);
  });

  it('claims from both at once take each callback row once', async () => {
    const [a, b] = await twoStores();
    for (let i = 0; i < 40; i++) {
      await a.writes.enqueueCallback(
        { destination: `hs${i}.example`, path: '/p', body: {}, medium: 'email', address: `${i}@x`, now: 1_000 },
        req(),
      );
    }
    const claims = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        (i % 2 ? a : b).writes.claimCallbacks(
          { now: 2_000, claimedUntil: 60_000, limit: 10, excludeDestinations: [] },
          req(),
        ),
      ),
    );
    const ids = claims.flat().map((c) => c.id);
    expect(ids).toHaveLength(40);
    expect(new Set(ids).size).toBe(40);
  });
});

describe('the callback claim over a refusing homeserver’s backlog', () => {
  /** Rows of callback_outbox a plan read, from EXPLAIN ANALYZE: kept and filtered out, over all loops. */
  function outboxRowsRead(plan: unknown): number {
    let n = 0;
    const walk = (node: Record<string, unknown>): void => {
      if (node['Relation Name'] === 'callback_outbox') {
        const loops = Number(node['Actual Loops'] ?? 1);
        n += (Number(node['Actual Rows'] ?? 0) + Number(node['Rows Removed by Filter'] ?? 0)) * loops;
      }
      for (const child of (node['Plans'] as Record<string, unknown>[] | undefined) ?? []) walk(child);
    };
    walk((plan as { Plan: Record<string, unknown> }[])[0]!.Plan);
    return n;
  }

  it('the claim and the next-due read each visit a few rows of the outbox, not the thousands one destination has waiting', async () => {
    const db = await testDatabase();
    cleanups.push(db.drop);
    const { preparePgDatabase, PgStore } = await loadPgEngine();
    await preparePgDatabase(db.url);
    const store = PgStore.open({ url: db.url, poolSize: 2, log, nodeName: 'a' });
    cleanups.push(() => store.close());
    const admin = await connect(db.url);
    cleanups.push(() => admin.end());
    // dead.test refuses every callback: 3,000 rows wait for it, all due, one in flight at this node; 1,000 more were
    // given up on. a.test has one row due; b.test one backing off.
    await admin.query(`INSERT INTO callback_outbox (destination, path, body, medium, address, state, attempts, next_attempt_ts, claimed_until, created_ts)
      SELECT 'dead.test', '/p', '{}', 'email', 'x@y', CASE WHEN i % 2 = 0 THEN 'pending' ELSE 'retrying' END, i % 2, i, NULL, 0
      FROM generate_series(1, 3000) AS i`);
    await admin.query(`INSERT INTO callback_outbox (destination, path, body, medium, address, state, attempts, next_attempt_ts, created_ts)
      SELECT 'dead.test', '/p', '{}', 'email', 'x@y', 'abandoned', 20, i, 0 FROM generate_series(1, 1000) AS i`);
    await admin.query(`INSERT INTO callback_outbox (destination, path, body, medium, address, state, attempts, next_attempt_ts, claimed_until, created_ts)
      VALUES ('dead.test', '/p', '{}', 'email', 'x@y', 'delivering', 3, 0, 1000000000, 0),
             ('a.test', '/p', '{}', 'email', 'x@y', 'pending', 0, 500, NULL, 0),
             ('b.test', '/p', '{}', 'email', 'x@y', 'retrying', 2, 10000000, NULL, 0)`);
    await admin.query('ANALYZE callback_outbox');

    const { CLAIM_CALLBACKS_SQL } = await import('../src/store/pg/writes.js');
    const { NEXT_DUE_SQL } = await import('../src/store/pg/reads.js');
    const explain = async (sql: string, values: unknown[]): Promise<number> => {
      await admin.query('BEGIN');
      try {
        const res = await admin.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (ANALYZE, FORMAT JSON) ${sql}`, values);
        return outboxRowsRead(res.rows[0]!['QUERY PLAN']);
      } finally {
        await admin.query('ROLLBACK');
      }
    };
    const claimRead = await explain(CLAIM_CALLBACKS_SQL, [10_000, 70_000, ['dead.test'], 8]);
    const dueRead = await explain(NEXT_DUE_SQL, [['dead.test']]);
    expect(claimRead).toBeLessThan(30);
    expect(dueRead).toBeLessThan(30);

    // And they answer as before: a.test's row, then b.test's due time; dead.test's first row once it is not busy.
    expect(await store.reads.callbacks.nextDue(['dead.test'])).toBe(500);
    const claimed = await store.writes.claimCallbacks(
      { now: 10_000, claimedUntil: 70_000, limit: 8, excludeDestinations: ['dead.test'] },
      req(),
    );
    expect(claimed.map((c) => [c.destination, c.nextAttemptTs])).toEqual([['a.test', 500]]);
    expect(await store.reads.callbacks.nextDue(['dead.test', 'a.test'])).toBe(10_000_000);
    expect(await store.reads.callbacks.nextDue(['dead.test'])).toBe(70_000);
    const next = await store.writes.claimCallbacks(
      { now: 10_000, claimedUntil: 70_000, limit: 8, excludeDestinations: ['a.test'] },
      req(),
    );
    expect(next.map((c) => [c.destination, c.nextAttemptTs])).toEqual([['dead.test', 1]]);
  });
});

describe('several nodes on one database: shared limits, claims that expire, leases, signals', () => {
  async function nodes(): Promise<{ url: string; a: PgStoreT; b: PgStoreT }> {
    const db = await testDatabase();
    cleanups.push(db.drop);
    const { preparePgDatabase, PgStore } = await loadPgEngine();
    await preparePgDatabase(db.url);
    const a = PgStore.open({ url: db.url, poolSize: 4, log, nodeName: 'node-a' });
    const b = PgStore.open({ url: db.url, poolSize: 4, log, nodeName: 'node-b' });
    cleanups.push(
      () => a.close(),
      () => b.close(),
    );
    return { url: db.url, a, b };
  }

  const until = async <T>(probe: () => Promise<T>, done: (v: T) => boolean, ms = 5_000): Promise<T> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = await probe();
      if (done(v) || Date.now() > deadline) return v;
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  it('a rate limit holds across both: 40 takes at once, spread over the two, admit exactly the burst; a refund on one is seen by the other', async () => {
    const { url, a, b } = await nodes();
    const take = (s: PgStoreT) =>
      s.writes.takeRateToken(
        { bucket: 'email.sender', key: '@alice:hs.example', burst: 5, rateHz: 1 / 3600, now: 1_000 },
        req(),
      );
    const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => take(i % 2 ? a : b)));
    expect(answers.filter((x) => x.ok)).toHaveLength(5);
    expect(answers.filter((x) => !x.ok).every((x) => !x.ok && x.retryAfterMs > 3_000_000)).toBe(true);
    await a.writes.refundRateToken({ bucket: 'email.sender', key: '@alice:hs.example', burst: 5 }, req());
    expect(await take(b)).toEqual({ ok: true });
    expect((await take(a)).ok).toBe(false);
    // The key is stored hashed: the table never holds the address.
    const client = await connect(url);
    try {
      const keys = (await client.query<{ key: string }>('SELECT key FROM sydent_ts_rate_buckets')).rows.map(
        (r) => r.key,
      );
      expect(keys).toHaveLength(1);
      expect(keys[0]).not.toContain('alice');
    } finally {
      await client.end();
    }
  });

  it('a callback claimed by a node that never finishes is taken by the other once the claim has expired, and the first can no longer record it', async () => {
    const { a, b } = await nodes();
    const id = await a.writes.enqueueCallback(
      { destination: 'hs.example', path: '/p', body: {}, medium: 'email', address: 'x@y', now: 1_000 },
      req(),
    );
    const byA = await a.writes.claimCallbacks(
      { now: 2_000, claimedUntil: 12_000, limit: 10, excludeDestinations: [] },
      req(),
    );
    expect(byA.map((c) => c.id)).toEqual([id]);
    // A is gone (killed): until its claim ends nobody else delivers the row.
    expect(
      await b.writes.claimCallbacks({ now: 11_999, claimedUntil: 71_999, limit: 10, excludeDestinations: [] }, req()),
    ).toEqual([]);
    const byB = await b.writes.claimCallbacks(
      { now: 12_001, claimedUntil: 72_001, limit: 10, excludeDestinations: [] },
      req(),
    );
    expect(byB.map((c) => [c.id, c.claimedUntil])).toEqual([[id, 72_001]]);
    expect(
      await a.writes.retryCallback({ id, claimedUntil: 12_000, nextAttemptTs: 20_000, lastError: 'late' }, req()),
    ).toBe(false);
    expect(await a.writes.releaseCallback({ id, claimedUntil: 12_000 }, req())).toBe(false);
    expect(await b.writes.callbackDelivered({ id, now: 13_000, deleteInviteTokens: false }, req())).toEqual({
      updated: true,
      tokensDeleted: 0,
    });
    expect(await b.writes.callbackDelivered({ id, now: 13_001, deleteInviteTokens: false }, req())).toEqual({
      updated: false,
      tokensDeleted: 0,
    });
  });

  it('one node at a time holds a peer: the other takes it when the holder closes, or when the holder loses its connection', async () => {
    const { url, a, b } = await nodes();
    const lease = (s: PgStoreT, name: string) => s.writes.peerLease({ name }, req());
    expect(await lease(a, 'p1.example')).toBe('acquired');
    expect(await lease(a, 'p1.example')).toBe('held');
    expect(await lease(b, 'p1.example')).toBe('elsewhere');
    expect(await lease(b, 'p2.example')).toBe('acquired');
    expect(await lease(a, 'p2.example')).toBe('elsewhere');
    expect(a.leases()).toEqual(['p1.example']);
    // B's line to the database is cut (as a network failure would): its leases are gone, and A can take them.
    const client = await connect(url);
    try {
      await client.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'sydent-ts node-b'`,
      );
    } finally {
      await client.end();
    }
    expect(
      await until(
        () => lease(a, 'p2.example'),
        (v) => v === 'acquired',
      ),
    ).toBe('acquired');
    expect(await lease(b, 'p2.example')).toBe('elsewhere');
    expect(b.leases()).toEqual([]);
    // A closes (a node stopped or killed): B takes its peers.
    await a.close();
    expect(
      await until(
        () => lease(b, 'p1.example'),
        (v) => v === 'acquired',
      ),
    ).toBe('acquired');
  });

  it('a new pepper (NOTIFY pepper, as its writer sends) is seen at once by a node that had the old one cached', async () => {
    const { url, b } = await nodes();
    const before = await b.reads.associations.pepper();
    const cachedAt = Date.now();
    const client = await connect(url);
    try {
      await client.query('BEGIN');
      await client.query("UPDATE hashing_metadata SET lookup_pepper = 'rotatedpepper'");
      await client.query(`NOTIFY sydent_ts, 'pepper'`);
      await client.query('COMMIT');
    } finally {
      await client.end();
    }
    expect(before).not.toBe('rotatedpepper');
    // The cache keeps a pepper 1 s: the new one is there well before.
    expect(
      await until(
        () => b.reads.associations.pepper(),
        (p) => p === 'rotatedpepper',
        600,
      ),
    ).toBe('rotatedpepper');
    expect(Date.now() - cachedAt).toBeLessThan(1_000);
  });

  it('a pepper rotated while both nodes bind: every stored hash is made with the new pepper; a bind that saw the old one is refused, not stored stale', async () => {
    const { url, a, b } = await nodes();
    const old = await a.reads.associations.storedPepper();
    const bind = (s: PgStoreT, i: number) => {
      const address = `r${i}@example.org`;
      return s.writes.bind(
        {
          medium: 'email',
          address,
          mxid: `@r${i}:hs.example`,
          ts: 5_000 + i,
          notAfter: 10 ** 13,
          lookupHash: lookupHash(address, 'email', old),
          pepperSeen: old,
          originServer: 'is.example',
          sgAssoc: JSON.stringify({ address }),
          inviteIds: [],
          callback: null,
        },
        req(),
      );
    };
    const client = await connect(url);
    try {
      // settled from the start: a bind refused while the rotation runs is an outcome, not an unhandled rejection
      const binds = Promise.allSettled(Array.from({ length: 80 }, (_, i) => bind(i % 2 ? a : b, i)));
      await new Promise((r) => setTimeout(r, 30));
      const rehashed = await rotatePgPepper(client, lookupHash);
      const outcomes = await binds;
      const refused = outcomes.filter((o) => o.status === 'rejected');
      expect(refused.every((o) => o.reason instanceof BindConflictError)).toBe(true);
      const fresh = (await client.query<{ p: string }>('SELECT lookup_pepper AS p FROM hashing_metadata')).rows[0]!.p;
      expect(fresh).not.toBe(old);
      for (const table of ['global_threepid_associations', 'local_threepid_associations']) {
        const { rows } = await client.query<{ address: string; lookup_hash: string }>(
          `SELECT address, lookup_hash FROM ${table}`,
        );
        expect(rows).toHaveLength(outcomes.length - refused.length);
        expect(rows.filter((r) => r.lookup_hash !== lookupHash(r.address, 'email', fresh))).toEqual([]);
      }
      expect(rehashed).toBeLessThanOrEqual(outcomes.length - refused.length);
    } finally {
      await client.end();
    }
  });

  it('one push from a peer landing on both at once is stored once: the other finds every association there', async () => {
    const { a, b } = await nodes();
    const pepper = await a.reads.associations.storedPepper();
    const associations = Array.from({ length: 50 }, (_, i) => ({
      originId: i + 1,
      medium: 'email',
      address: `p${i}@example.org`,
      mxid: `@p${i}:hs.example`,
      ts: 1_000 + i,
      notBefore: null,
      notAfter: null,
      sgAssoc: '{}',
      lookupHash: `h${i}`,
    }));
    const push = { originServer: 'peer.example', pepperSeen: pepper, associations };
    const [x, y] = await Promise.all([a.writes.applyPush(push, req()), b.writes.applyPush(push, req())]);
    expect(x.inserted + y.inserted).toBe(50);
    expect(x.duplicates + y.duplicates).toBe(50);
    expect((await b.reads.associations.lookup('email', 'p49@example.org', 5_000))?.mxid).toBe('@p49:hs.example');
  });

  it('what one node commits, the other hears: the log grew, a callback was queued; a logout and a new consent drop its cached accounts', async () => {
    const { url, a, b } = await nodes();
    const heard: string[] = [];
    // each signal heard, with the destination a callback's carries
    b.onSignal((s, destination) => heard.push(destination === undefined ? s : `${s} ${destination}`));
    /** A queues a callback to `destination`; what B has heard once it heard that (copied). */
    const queueAndHear = async (destination: string): Promise<string[]> => {
      await a.writes.enqueueCallback(
        { destination, path: '/p', body: {}, medium: 'email', address: 'x@y', now: 1_000 },
        req(),
      );
      return until(
        async () => [...heard],
        (h) => h.includes(`callbacks ${destination}`),
      );
    };
    // B listens once its own line is up (it hears every signal then, as after a reconnection).
    await until(
      async () => heard.length,
      (n) => n >= 2,
    );
    heard.length = 0;
    const pepper = await a.reads.associations.storedPepper();
    // a bind that queues its homeserver's callback: both told, at its commit
    await a.writes.bind(
      {
        medium: 'email',
        address: 'x@y',
        mxid: '@x:hs.example',
        ts: 5_000,
        notAfter: 10 ** 13,
        lookupHash: 'h',
        pepperSeen: pepper,
        originServer: 'is.example',
        sgAssoc: '{}',
        inviteIds: [],
        callback: { destination: 'hs.example', path: '/onbind', body: {} },
      },
      req(),
    );
    expect(
      await until(
        async () => [...heard].sort(),
        (h) => h.includes('log') && h.includes('callbacks hs.example'),
      ),
    ).toEqual(['callbacks hs.example', 'log']);
    // a callback queued on its own
    heard.length = 0;
    expect(await queueAndHear('other.example')).toEqual(['callbacks other.example']);

    await a.writes.registerAccount({ userId: '@u:hs.example', token: 'tok', now: 1_000 }, req());
    expect(await b.reads.accounts.accountByToken('tok')).toMatchObject({
      userId: '@u:hs.example',
      consentVersion: null,
    });
    // B caches the account for 2 s; the logout on A is seen at once.
    await a.writes.logout({ token: 'tok' }, req());
    expect(
      await until(
        () => b.reads.accounts.accountByToken('tok'),
        (v) => v === undefined,
        1_000,
      ),
    ).toBeUndefined();

    await a.writes.registerAccount({ userId: '@u:hs.example', token: 'tok2', now: 1_000 }, req());
    expect(await b.reads.accounts.accountByToken('tok2')).toMatchObject({ consentVersion: null });
    await a.writes.acceptTerms(
      { userId: '@u:hs.example', urls: ['https://t/1'], masterVersion: 'v2', documents: [['https://t/1']] },
      req(),
    );
    expect(
      await until(
        () => b.reads.accounts.accountByToken('tok2'),
        (v) => v?.consentVersion === 'v2',
        1_000,
      ),
    ).toMatchObject({ consentVersion: 'v2' });

    // B's line is cut: it reconnects by itself and hears again.
    const admin = await connect(url);
    try {
      await admin.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'sydent-ts node-b'`,
      );
    } finally {
      await admin.end();
    }
    heard.length = 0;
    await until(
      async () => heard.length,
      (n) => n >= 2,
    );
    heard.length = 0;
    expect(await queueAndHear('hs2.example')).toContain('callbacks hs2.example');
  });
});

describe('the command-line tools on PostgreSQL', () => {
  async function cliDir(url: string) {
    const { tempDir } = await import('./helpers/tmp.js');
    const fs = await import('node:fs');
    const tmp = tempDir('sydent-ts-pg-cli-');
    cleanups.push(tmp.cleanup);
    fs.writeFileSync(
      `${tmp.dir}/sydent.conf`,
      `[general]\nserver.name = is.example\n[db]\ndb.engine = postgresql\ndb.url = ${url}\n`,
    );
    let stdout = '';
    let stderr = '';
    const io = {
      stdout: (t: string) => void (stdout += t),
      stderr: (t: string) => void (stderr += t),
      env: {},
      cwd: tmp.dir,
    };
    const output = () => {
      const out = { stdout, stderr };
      stdout = '';
      stderr = '';
      return out;
    };
    return { dir: tmp.dir, io, output, sqliteFileMade: () => fs.existsSync(`${tmp.dir}/sydent.db`) };
  }

  it('peers adds, lists and removes a peer in the PostgreSQL database (migrated first), and makes no sydent.db', async () => {
    const { peersMain } = await import('../src/replication/cli.js');
    const { encodeBase64, generateSeed, publicKeyFromSeed } = await import('../src/crypto/index.js');
    const db = await testDatabase();
    cleanups.push(db.drop);
    const cli = await cliDir(db.url);
    const key = encodeBase64(publicKeyFromSeed(generateSeed()));

    expect(await peersMain(['peers', 'add', 'b.test', '--pubkey', key, '--port', '9000'], cli.io)).toBe(0);
    expect(cli.output()).toEqual({
      stdout: 'added peer b.test: pushes go to https://b.test:9000/_matrix/identity/replicate/v1/push\n',
      stderr: '',
    });
    const client = await connect(db.url);
    cleanups.push(() => client.end());
    const peerRows = async () => ({
      peers: (await client.query('SELECT name, port::int AS port, active FROM peers ORDER BY name')).rows,
      keys: (await client.query('SELECT peername, alg, key FROM peer_pubkeys ORDER BY peername')).rows,
    });
    expect(await peerRows()).toEqual({
      peers: [{ name: 'b.test', port: 9000, active: 1 }],
      keys: [{ peername: 'b.test', alg: 'ed25519', key }],
    });
    // again: the port and key updated, the peer made active again, its cursor kept
    await client.query("UPDATE peers SET active = 0, lastSentVersion = 7 WHERE name = 'b.test'");
    const key2 = encodeBase64(publicKeyFromSeed(generateSeed()));
    expect(await peersMain(['peers', 'add', 'b.test', '--pubkey', key2], cli.io)).toBe(0);
    expect(cli.output().stdout).toBe(
      'updated peer b.test: pushes go to https://b.test:1001/_matrix/identity/replicate/v1/push\n',
    );
    expect(await peersMain(['peers', 'list', '--json'], cli.io)).toBe(0);
    expect(JSON.parse(cli.output().stdout)).toEqual([
      {
        name: 'b.test',
        active: true,
        port: null,
        url: 'https://b.test:1001/_matrix/identity/replicate/v1/push',
        pubkey: key2,
        lastSentVersion: 7,
        lastPokeSucceededAt: null,
      },
    ]);

    expect(await peersMain(['peers', 'remove', 'b.test'], cli.io)).toBe(0);
    expect(cli.output().stdout).toBe('removed peer b.test\n');
    expect(await peerRows()).toEqual({ peers: [], keys: [] });
    expect(await peersMain(['peers', 'remove', 'b.test'], cli.io)).toBe(1);
    expect(cli.output().stderr).toBe('sydent-ts: no peer b.test\n');
    expect(cli.sqliteFileMade()).toBe(false);
  });

  it('peers and rotate-pepper say in one line that the database cannot be reached; no sydent.db', async () => {
    const { peersMain } = await import('../src/replication/cli.js');
    const { rotatePepperMain } = await import('../src/store/rotate-pepper.js');
    const cli = await cliDir(`postgresql://u:secret-pw@127.0.0.1:${await freePort()}/x`);
    expect(await peersMain(['peers', 'list'], cli.io)).toBe(1);
    expect(await rotatePepperMain(['rotate-pepper'], cli.io)).toBe(1);
    const { stderr } = cli.output();
    expect(stderr).toMatch(
      /^(sydent-ts: cannot connect to PostgreSQL at 127\.0\.0\.1:\d+\/x: connection refused[^\n]*\n){2}$/,
    );
    expect(stderr).not.toContain('secret-pw');
    expect(cli.sqliteFileMade()).toBe(false);
  });
});

describe('two nodes writing at once: the replication log in commit order, the state counts kept', () => {
  async function nodes(poolSize = 4): Promise<{ url: string; a: StoreEngine; b: StoreEngine }> {
    const db = await testDatabase();
    cleanups.push(db.drop);
    const { preparePgDatabase, PgStore } = await loadPgEngine();
    await preparePgDatabase(db.url);
    const a = PgStore.open({ url: db.url, poolSize, log, nodeName: 'a' });
    const b = PgStore.open({ url: db.url, poolSize, log, nodeName: 'b' });
    cleanups.push(
      () => a.close(),
      () => b.close(),
    );
    return { url: db.url, a, b };
  }

  const bindOf = (pepper: string, address: string, mxid: string, ts: number, callback = false) => ({
    medium: 'email',
    address,
    mxid,
    ts,
    notAfter: 10 ** 13,
    lookupHash: lookupHash(address, 'email', pepper),
    pepperSeen: pepper,
    originServer: 'is.example',
    sgAssoc: JSON.stringify({ address, mxid }),
    inviteIds: [],
    callback: callback ? { destination: 'hs.example', path: '/_matrix/federation/v1/3pid/onbind', body: {} } : null,
  });

  it('a reader following the log by id > cursor, as a pusher does, sees every row of it while binds and unbinds from both nodes commit', async () => {
    const { url, a, b } = await nodes(8);
    const pepper = await a.reads.associations.storedPepper();
    const reader = await connect(url);
    cleanups.push(() => reader.end());
    const seen = new Set<number>();
    let cursor = 0;
    let writing = true;
    const follow = (async () => {
      for (;;) {
        const last = !writing;
        const { rows } = await reader.query<{ id: string }>(
          'SELECT id FROM local_threepid_associations WHERE id > $1 ORDER BY id LIMIT 1000',
          [cursor],
        );
        for (const r of rows) seen.add(Number(r.id));
        if (rows.length) cursor = Number(rows[rows.length - 1]!.id);
        if (last && rows.length === 0) return;
      }
    })();
    // 40 addresses, each bound, unbound and bound again several times, 16 writes in flight over the two nodes.
    const ops = Array.from({ length: 480 }, (_, i) => i);
    let next = 0;
    const worker = async (node: StoreEngine) => {
      while (next < ops.length) {
        const i = ops[next++]!;
        const address = `log${i % 40}@example.org`;
        if (i % 3 === 2)
          await node.writes.unbind({ medium: 'email', address, mxid: `@u${i % 40}:hs.example`, now: 9_000 + i }, req());
        else await node.writes.bind(bindOf(pepper, address, `@u${i % 40}:hs.example`, 5_000 + i), req());
      }
    };
    await Promise.all(Array.from({ length: 16 }, (_, w) => worker(w % 2 ? a : b)));
    writing = false;
    await follow;
    const { rows } = await reader.query<{ id: string }>('SELECT id FROM local_threepid_associations ORDER BY id');
    expect(rows).toHaveLength(40);
    expect(rows.map((r) => Number(r.id)).filter((id) => !seen.has(id))).toEqual([]);
    // Each 3PID bound at the end has the global row of its last bind, named by that bind's id in the log.
    const unnamed = await reader.query(
      `SELECT l.id FROM local_threepid_associations l WHERE l.mxid IS NOT NULL AND NOT EXISTS (
         SELECT 1 FROM global_threepid_associations g WHERE g.originId = l.id AND g.mxid = l.mxid)`,
    );
    expect(unnamed.rows).toEqual([]);
  });

  it('the values a bind writes into its last statement as literals (sent with its COMMIT) come back exactly: quotes, backslashes, $1, non-ASCII', async () => {
    const { a, b } = await nodes();
    const pepper = await a.reads.associations.storedPepper();
    const address = "o'brien\\\\'; DROP TABLE peers; --$1 $2 ü@example.org";
    const mxid = "@o'b\\\\n$3:hs.example";
    await a.writes.bind(bindOf(pepper, address, mxid, 5_000, true), req());
    const found = await b.reads.associations.lookup('email', address, 6_000);
    expect(found).toMatchObject({ mxid, ts: 5_000 });
    expect(JSON.parse(found!.sgAssoc)).toEqual({ address, mxid });
    expect(await b.reads.peers.localAfter(0, 10)).toMatchObject([{ address, mxid }]);
    expect(await b.writes.unbind({ medium: 'email', address, mxid, now: 7_000 }, req())).toBe(true);
    expect(await a.reads.associations.lookup('email', address, 8_000)).toBeUndefined();
    expect(await a.reads.peers.all()).toEqual([]);
  });

  it('values written in as literals keep their meaning in any text: a negative number after a minus, a string with $1', async () => {
    const { url } = await nodes(1);
    const { withLiterals } = await import('../src/store/pg/pool.js');
    const client = await connect(url);
    cleanups.push(() => client.end());
    const text = withLiterals('SELECT 0 -$1::bigint AS v, $2::text AS s, ARRAY[$1]::bigint[] AS a', [-5, "it's $1"]);
    const { rows } = await client.query<{ v: string; s: string; a: string[] }>(text);
    expect(rows).toEqual([{ v: '5', s: "it's $1", a: ['-5'] }]);
  });

  it('the debug counts of sessions and callbacks match a count of the rows after sessions, binds, unbinds, claims and sweeps from both nodes, and are read without walking those tables', async () => {
    const { url, a, b } = await nodes();
    const pepper = await a.reads.associations.storedPepper();
    const admin = await connect(url);
    cleanups.push(() => admin.end());
    const { sessionStateName, SESSION_MACHINE_VERSION } = await import('../src/machines/validation-session.js');
    // The counts as the engine read them before it kept them: walking the rows.
    const counted = async () => {
      const sessions: Record<string, number> = {};
      const machines = await admin.query<{ state: string; n: string }>(
        'SELECT state, count(*) AS n FROM session_machines GROUP BY state',
      );
      for (const { state, n } of machines.rows) {
        const name = sessionStateName(state, state.startsWith('{') ? SESSION_MACHINE_VERSION : 1);
        sessions[name] = (sessions[name] ?? 0) + Number(n);
      }
      const legacy = await admin.query<{ validated: number; n: string }>(
        `SELECT s.validated, count(*) AS n FROM threepid_validation_sessions s
         WHERE NOT EXISTS (SELECT 1 FROM session_machines m WHERE m.sid = s.id) GROUP BY s.validated`,
      );
      for (const { validated, n } of legacy.rows) {
        const name = validated ? 'validated' : 'tokenSent';
        sessions[name] = (sessions[name] ?? 0) + Number(n);
      }
      const callbacks = { pending: 0, delivering: 0, retrying: 0, delivered: 0, abandoned: 0 };
      const rows = await admin.query<{ state: keyof typeof callbacks; n: string }>(
        'SELECT state, count(*) AS n FROM callback_outbox GROUP BY state',
      );
      for (const { state, n } of rows.rows) callbacks[state] = Number(n);
      return { sessions, callbacks };
    };
    const shown = async (s: StoreEngine) => ({
      sessions: await s.reads.sessions.countByState(),
      callbacks: await s.reads.callbacks.counts(),
    });
    const write = (sid: number, over: Partial<SessionWrite> = {}): SessionWrite =>
      sessionWrite({ sid, address: `s${sid}@example.org`, ...over });
    const node = (i: number) => (i % 2 ? a : b);

    // Sydent's sessions (no machine row), as migrate-db copies them; the counts seeded as its last step does.
    await admin.query(`INSERT INTO threepid_validation_sessions (id, medium, address, clientSecret, validated, mtime) VALUES
      (9001, 'email', 'old1@x', 's', 0, 1), (9002, 'email', 'old2@x', 's', 1, 1), (9003, 'email', 'old3@x', 's', 1, 50000)`);
    await admin.query(`UPDATE sydent_ts_sydent_session_counts SET n = CASE validated WHEN 0 THEN 1 ELSE 2 END`);

    await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        node(i).writes.createSession(
          { medium: 'email', clientSecret: `cs${i}`, write: write(i + 1, { mtime: i < 10 ? 1_000 : 60_000 }) },
          req(),
        ),
      ),
    );
    // Half of them validated, then bound (each queueing a callback); one of Sydent's given a machine row.
    await Promise.all(
      Array.from({ length: 15 }, (_, i) =>
        node(i).writes.saveSession(
          { write: write(i + 1, { state: 'validated', validated: true }), expectedVersion: 1 },
          req(),
        ),
      ),
    );
    await a.writes.saveSession(
      { write: write(9003, { state: 'validated', validated: true, mtime: 60_000 }), expectedVersion: null },
      req(),
    );
    await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        node(i).writes.bindSession(
          {
            session: { write: write(i + 1, { state: 'bound', validated: true }), expectedVersion: 2 },
            bind: bindOf(pepper, `s${i + 1}@example.org`, `@s${i + 1}:hs.example`, 5_000 + i, true),
          },
          req(),
        ),
      ),
    );
    await Promise.all([
      a.writes.bind(bindOf(pepper, 'plain@example.org', '@p:hs.example', 6_000, true), req()),
      b.writes.unbind({ medium: 'email', address: 's1@example.org', mxid: '@s1:hs.example', now: 7_000 }, req()),
    ]);
    expect(await shown(a)).toEqual(await counted());

    // Callbacks: claimed from both, then delivered, retried, abandoned and released; delivered ones purged.
    const claims = (
      await Promise.all(
        [a, b].map((s) =>
          s.writes.claimCallbacks({ now: 10_000, claimedUntil: 70_000, limit: 20, excludeDestinations: [] }, req()),
        ),
      )
    ).flat();
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        node(i).writes.enqueueCallback(
          { destination: `hs${i}.example`, path: '/p', body: {}, medium: 'email', address: `q${i}@x`, now: 1_000 },
          req(),
        ),
      ),
    );
    const more = (
      await Promise.all(
        [a, b].map((s) =>
          s.writes.claimCallbacks({ now: 10_000, claimedUntil: 70_000, limit: 8, excludeDestinations: [] }, req()),
        ),
      )
    ).flat();
    const claimed = [...claims, ...more];
    expect(claimed.length).toBeGreaterThanOrEqual(10);
    await Promise.all(
      claimed.map((c, i) => {
        const s = node(i);
        const e = { id: c.id, claimedUntil: c.claimedUntil };
        if (i % 4 === 0) return s.writes.callbackDelivered({ id: c.id, now: 11_000, deleteInviteTokens: false }, req());
        if (i % 4 === 1) return s.writes.retryCallback({ ...e, nextAttemptTs: 20_000, lastError: 'x' }, req());
        if (i % 4 === 2) return s.writes.abandonCallback({ ...e, lastError: 'x' }, req());
        return s.writes.releaseCallback(e, req());
      }),
    );
    expect(await shown(b)).toEqual(await counted());
    expect(await b.writes.purgeCallbacks({ now: 11_000 + 10 ** 10 }, req())).toBeGreaterThan(0);
    // The sweep, in slices from both nodes: our sessions and Sydent's.
    await Promise.all([a, b].map((s) => s.writes.deleteOldSessions({ cutoffMs: 2_000, limit: 4 }, req())));
    await a.writes.deleteOldSessions({ cutoffMs: 2_000, limit: 100 }, req());
    const after = await counted();
    expect(await shown(a)).toEqual(after);
    expect(Object.values(after.callbacks).every((n) => n >= 0)).toBe(true);
    expect(Object.values(after.sessions).reduce((x, y) => x + y, 0)).toBe(16);

    // Each count read touches its count table alone: no plan node reads sessions, machines or the outbox.
    const { MACHINE_COUNTS_SQL, SYDENT_COUNTS_SQL, CALLBACK_COUNTS_SQL } = await import('../src/store/pg/reads.js');
    for (const [sql, table] of [
      [MACHINE_COUNTS_SQL, 'sydent_ts_machine_counts'],
      [SYDENT_COUNTS_SQL, 'sydent_ts_sydent_session_counts'],
      [CALLBACK_COUNTS_SQL, 'sydent_ts_callback_counts'],
    ] as const) {
      const plan = (await admin.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) ${sql}`)).rows[0]![
        'QUERY PLAN'
      ];
      const relations = [...JSON.stringify(plan).matchAll(/"Relation Name":"([^"]+)"/g)].map((m) => m[1]);
      expect({ sql, relations }).toEqual({ sql, relations: [table] });
    }
  });
});
