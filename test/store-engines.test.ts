/**
 * The store's contract, on both engines: the same writes through the engine's operations and the same reads
 * through its read facade give the same answers on SQLite (a file in a temp dir) and on PostgreSQL (a database of
 * its own on the test run's server). Handlers and machines see only this interface, so what holds here holds for
 * them on either engine.
 */
import path from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';

import { lookupHash } from '../src/crypto/index.js';
import { BindConflictError, type BindRecord } from '../src/store/associations.js';
import type { StoreEngine, WriteRequest } from '../src/store/engine.js';
import type { NewInvite } from '../src/store/invites.js';
import { loadPgEngine } from '../src/store/pg/load.js';
import { newSid, SessionConflictError, SidTakenError } from '../src/store/sessions.js';
import { SqliteStore } from '../src/store/sqlite-store.js';
import { cleanupsAfterEach } from './helpers/cleanups.js';
import { connect, testDatabase } from './helpers/postgres.js';
import { sessionWrite as session } from './helpers/session-writes.js';
import { tempDir } from './helpers/tmp.js';

const log = pino({ level: 'silent' });
const cleanups = cleanupsAfterEach();

const req = (): WriteRequest => ({ deadline: Date.now() + 10_000 });

interface Opened {
  store: StoreEngine;
  /** runs SQL on the database behind the store (as an operator's tool would) */
  exec: (sql: string) => Promise<void>;
  /** the first column of the first row of a query on that database */
  scalar: (sql: string) => Promise<unknown>;
}

async function openSqlite(): Promise<Opened> {
  const tmp = tempDir('sydent-ts-engines-');
  const store = SqliteStore.open(path.join(tmp.dir, 'sydent.db'), { log });
  cleanups.push(tmp.cleanup, () => store.close());
  const Database = (await import('better-sqlite3')).default;
  return {
    store,
    exec: async (sql) => {
      const db = new Database(path.join(tmp.dir, 'sydent.db'));
      try {
        // as Sydent's and the sqlite3 shell's connections: Sydent's schema names a table that never existed
        db.pragma('foreign_keys = OFF');
        db.exec(sql);
      } finally {
        db.close();
      }
    },
    scalar: async (sql) => {
      const db = new Database(path.join(tmp.dir, 'sydent.db'), { readonly: true });
      try {
        return db.prepare(sql).pluck().get();
      } finally {
        db.close();
      }
    },
  };
}

async function openPg(url?: string): Promise<Opened & { url: string }> {
  let dbUrl = url;
  if (!dbUrl) {
    const db = await testDatabase();
    cleanups.push(db.drop);
    dbUrl = db.url;
  }
  const { preparePgDatabase, PgStore } = await loadPgEngine();
  await preparePgDatabase(dbUrl);
  const store = PgStore.open({ url: dbUrl, poolSize: 4, log, nodeName: 'contract' });
  cleanups.push(() => store.close());
  const target = dbUrl;
  return {
    url: target,
    store,
    exec: async (sql) => {
      const client = await connect(target);
      try {
        await client.query(sql);
      } finally {
        await client.end();
      }
    },
    scalar: async (sql) => {
      const client = await connect(target);
      try {
        const { rows } = await client.query<Record<string, unknown>>(sql);
        return rows[0] && Object.values(rows[0])[0];
      } finally {
        await client.end();
      }
    },
  };
}

const ENGINES: [string, () => Promise<Opened>][] = [
  ['sqlite', openSqlite],
  ['postgresql', () => openPg()],
];

/** An invite to alice@example.org from @s:hs, token `itok`, ephemeral key `epk`. */
const pendingInvite = (): NewInvite => ({
  medium: 'email',
  address: 'alice@example.org',
  roomId: '!r:hs',
  sender: '@s:hs',
  token: 'itok',
  ephemeralPublicKey: 'epk',
  now: 3_000_000,
});

async function bindRecord(store: StoreEngine, over: Partial<BindRecord> = {}): Promise<BindRecord> {
  const pepper = await store.reads.associations.storedPepper();
  const address = over.address ?? 'alice@example.org';
  return {
    medium: 'email',
    address,
    mxid: '@alice:hs.example',
    ts: 5_000,
    notAfter: 10 ** 13,
    lookupHash: lookupHash(address, 'email', pepper),
    pepperSeen: pepper,
    originServer: 'is.example',
    sgAssoc: JSON.stringify({ address, mxid: over.mxid ?? '@alice:hs.example' }),
    inviteIds: [],
    callback: null,
    ...over,
  };
}

describe.each(ENGINES)('store contract on %s', (engine, open) => {
  it('accounts: a registered token finds its account until logout; terms consent once every document has a URL', async () => {
    const { store } = await open();
    await store.writes.registerAccount({ userId: '@u:hs', token: 'tok1', now: 42 }, req());
    expect(await store.reads.accounts.accountByToken('tok1')).toEqual({
      userId: '@u:hs',
      createdTs: 42,
      consentVersion: null,
    });
    expect(await store.reads.accounts.accountByToken('nope')).toBeUndefined();
    const docs = [['https://t/en', 'https://t/fr'], ['https://p/en']];
    expect(
      await store.writes.acceptTerms(
        { userId: '@u:hs', urls: ['https://t/fr'], masterVersion: 'v1', documents: docs },
        req(),
      ),
    ).toEqual({ consented: false });
    expect(
      await store.writes.acceptTerms(
        { userId: '@u:hs', urls: ['https://p/en'], masterVersion: 'v1', documents: docs },
        req(),
      ),
    ).toEqual({ consented: true });
    expect((await store.reads.accounts.acceptedUrls('@u:hs')).sort()).toEqual(['https://p/en', 'https://t/fr']);
    expect((await store.reads.accounts.accountByToken('tok1'))?.consentVersion).toBe('v1');
    expect(await store.writes.logout({ token: 'tok1' }, req())).toBe(true);
    expect(await store.writes.logout({ token: 'tok1' }, req())).toBe(false);
    expect(await store.reads.accounts.accountByToken('tok1')).toBeUndefined();
  });

  it('sessions: created, found, saved by row version (a stale version refused, nothing written), counted, swept', async () => {
    const { store } = await open();
    const sid = newSid(Date.now());
    expect(
      await store.writes.createSession({ medium: 'email', clientSecret: 'cs', write: session({ sid }) }, req()),
    ).toBe(1);
    // A create under a sid in use is refused and writes nothing: the first session stays as it was.
    await expect(
      store.writes.createSession(
        { medium: 'email', clientSecret: 'cs2', write: session({ sid, address: 'bob@example.org' }) },
        req(),
      ),
    ).rejects.toBeInstanceOf(SidTakenError);
    expect(await store.reads.sessions.findSid('email', 'bob@example.org', 'cs2')).toBeUndefined();
    expect(await store.reads.sessions.findSid('email', 'alice@example.org', 'cs')).toBe(sid);
    expect(await store.reads.sessions.findSid('email', 'alice@example.org', 'other')).toBeUndefined();
    const loaded = await store.reads.sessions.load(sid);
    expect(loaded?.sydent).toEqual({
      id: sid,
      medium: 'email',
      address: 'alice@example.org',
      clientSecret: 'cs',
      validated: 0,
      mtime: 1_000,
      token: 'OurToken',
      sendAttemptNumber: 1,
    });
    expect(loaded?.machine).toMatchObject({ state: 'tokenSent', machine_version: 1, row_version: 1 });
    // the repeat path's one read: the same, for the newest session of the address and secret
    expect(await store.reads.sessions.findLatest('email', 'alice@example.org', 'cs')).toEqual(loaded);
    expect(await store.reads.sessions.findLatest('email', 'alice@example.org', 'other')).toBeUndefined();
    const newer = newSid(Date.now());
    await store.writes.createSession(
      { medium: 'email', clientSecret: 'cs', write: session({ sid: newer, mtime: 1_500, token: 'NewerToken' }) },
      req(),
    );
    expect((await store.reads.sessions.findLatest('email', 'alice@example.org', 'cs'))?.sydent).toMatchObject({
      id: newer,
      token: 'NewerToken',
    });
    await store.writes.deleteOldSessions({ cutoffMs: 1_501, limit: 100 }, req());
    expect(await store.reads.sessions.findLatest('email', 'alice@example.org', 'cs')).toBeUndefined();
    await store.writes.createSession({ medium: 'email', clientSecret: 'cs', write: session({ sid }) }, req());
    const seen = { validated: 0, mtime: 1_000, token: 'OurToken', sendAttemptNumber: 1 };
    const next = session({ sid, state: 'validated', validated: true, mtime: 2_000, expectedSydent: seen });
    expect(await store.writes.saveSession({ write: next, expectedVersion: 1 }, req())).toBe(2);
    await expect(
      store.writes.saveSession({ write: { ...next, mtime: 3_000 }, expectedVersion: 1 }, req()),
    ).rejects.toBeInstanceOf(SessionConflictError);
    expect((await store.reads.sessions.load(sid))?.sydent).toMatchObject({ validated: 1, mtime: 2_000 });
    expect(await store.reads.sessions.countByState()).toEqual({ validated: 1 });
    expect(await store.writes.deleteOldSessions({ cutoffMs: 2_001, limit: 100 }, req())).toBe(1);
    expect(await store.reads.sessions.load(sid)).toBeUndefined();
    expect(await store.reads.sessions.countByState()).toEqual({});
  });

  it('sessions: the newest session (and its sid) of many keys read at once, keys repeated and missing: each what it is alone', async () => {
    const { store } = await open();
    const sids: number[] = [];
    for (let i = 0; i < 12; i++) {
      const sid = newSid(Date.now()) + i;
      sids.push(sid);
      // alice's secret cs0 has two sessions (the second newer); bob's secrets one each
      const who = i < 2 ? 'alice@example.org' : 'bob@example.org';
      const write = session({ sid, address: who, mtime: 1_000 + i, token: `T${i}` });
      await store.writes.createSession({ medium: 'email', clientSecret: i < 2 ? 'cs0' : `cs${i}`, write }, req());
    }
    const keys: [string, string, string][] = [];
    for (let i = 0; i < 60; i++) {
      const n = i % 14;
      keys.push(
        n < 2
          ? ['email', 'alice@example.org', 'cs0']
          : n < 12
            ? ['email', 'bob@example.org', `cs${n}`]
            : n === 12
              ? ['email', 'alice@example.org', 'cs5']
              : ['msisdn', 'bob@example.org', 'cs3'],
      );
    }
    const reads = store.reads.sessions;
    const atOnce = await Promise.all(keys.map((k) => reads.findLatest(...k)));
    for (let i = 0; i < keys.length; i++) expect(atOnce[i]).toEqual(await reads.findLatest(...keys[i]!));
    expect(atOnce[0]).toEqual(await reads.load(sids[1]!));
    expect(atOnce[0]?.sydent.token).toBe('T1');
    expect(atOnce[7]?.sydent).toMatchObject({ id: sids[7], token: 'T7', clientSecret: 'cs7' });
    expect(atOnce[12]).toBeUndefined();
    expect(atOnce[13]).toBeUndefined();
    // the sid a new requestToken checks for, read at once with the others: the newest session's
    const sidsAtOnce = await Promise.all(keys.map((k) => reads.findSid(...k)));
    expect(sidsAtOnce).toEqual(atOnce.map((row) => row?.sydent.id));
    expect(sidsAtOnce[0]).toBe(sids[1]);
  });

  it("sessions: a save that leaves Sydent's columns as they are writes only the machine row; one that changes them writes theirs", async () => {
    const { store, exec, scalar } = await open();
    // Every UPDATE of Sydent's two session tables counted, by a trigger of the database itself.
    await exec(
      engine === 'sqlite'
        ? `CREATE TABLE updates_seen (n INTEGER NOT NULL); INSERT INTO updates_seen VALUES (0);
           CREATE TRIGGER count_sessions AFTER UPDATE ON threepid_validation_sessions BEGIN UPDATE updates_seen SET n = n + 1; END;
           CREATE TRIGGER count_tokens AFTER UPDATE ON threepid_token_auths BEGIN UPDATE updates_seen SET n = n + 1; END;`
        : `CREATE TABLE updates_seen (n INTEGER NOT NULL); INSERT INTO updates_seen VALUES (0);
           CREATE FUNCTION count_update() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN UPDATE updates_seen SET n = n + 1; RETURN NULL; END $$;
           CREATE TRIGGER count_sessions AFTER UPDATE ON threepid_validation_sessions FOR EACH ROW EXECUTE FUNCTION count_update();
           CREATE TRIGGER count_tokens AFTER UPDATE ON threepid_token_auths FOR EACH ROW EXECUTE FUNCTION count_update();`,
    );
    const updates = async () => Number(await scalar('SELECT n FROM updates_seen'));
    const sid = newSid(Date.now());
    await store.writes.createSession({ medium: 'email', clientSecret: 'cs', write: session({ sid }) }, req());
    const seen = { validated: 0, mtime: 1_000, token: 'OurToken', sendAttemptNumber: 1 };
    // The end of a send: the machine moves on, Sydent's columns stay.
    const sent = session({ sid, state: 'sendingToken', expectedSydent: seen });
    expect(await store.writes.saveSession({ write: sent, expectedVersion: 1 }, req())).toBe(2);
    expect(await updates()).toBe(0);
    const after = await store.reads.sessions.load(sid);
    expect(after?.machine).toMatchObject({ state: 'sendingToken', row_version: 2 });
    expect(after?.sydent).toMatchObject(seen);
    // Validated: both of Sydent's rows written, once each.
    const validated = session({ sid, state: 'validated', validated: true, mtime: 2_000, expectedSydent: seen });
    expect(await store.writes.saveSession({ write: validated, expectedVersion: 2 }, req())).toBe(3);
    expect(await updates()).toBe(2);
    expect((await store.reads.sessions.load(sid))?.sydent).toMatchObject({
      validated: 1,
      mtime: 2_000,
      token: 'OurToken',
    });
  });

  it("sessions: a save at a known version is refused when Sydent's columns changed behind it or the session is gone; nothing written, counts kept", async () => {
    const { store, exec } = await open();
    const sid = newSid(Date.now());
    await store.writes.createSession({ medium: 'email', clientSecret: 'cs', write: session({ sid }) }, req());
    const seen = { validated: 0, mtime: 1_000, token: 'OurToken', sendAttemptNumber: 1 };
    // Sydent (after a switch back) sent a new token: the writer's view of the row is stale.
    await exec(
      `UPDATE threepid_token_auths SET token = 'SydentTok', sendAttemptNumber = 2 WHERE validationSession = ${sid}`,
    );
    const stale = session({ sid, state: 'validated', validated: true, mtime: 2_000, expectedSydent: seen });
    await expect(store.writes.saveSession({ write: stale, expectedVersion: 1 }, req())).rejects.toBeInstanceOf(
      SessionConflictError,
    );
    const kept = await store.reads.sessions.load(sid);
    expect(kept?.machine).toMatchObject({ state: 'tokenSent', row_version: 1 });
    expect(kept?.sydent).toMatchObject({ validated: 0, mtime: 1_000, token: 'SydentTok', sendAttemptNumber: 2 });
    expect(await store.reads.sessions.countByState()).toEqual({ tokenSent: 1 });
    // Read again, the save goes through; in the same state, the counts stay as they are.
    const fresh = { ...seen, token: 'SydentTok', sendAttemptNumber: 2 };
    const resent = session({ sid, state: 'tokenSent', token: 'SydentTok', sendAttempt: 2, expectedSydent: fresh });
    expect(await store.writes.saveSession({ write: resent, expectedVersion: 1 }, req())).toBe(2);
    expect(await store.reads.sessions.countByState()).toEqual({ tokenSent: 1 });
    // Swept between the read and the save: refused, and nothing comes back.
    expect(await store.writes.deleteOldSessions({ cutoffMs: 1_001, limit: 100 }, req())).toBe(1);
    const late = session({
      sid,
      state: 'validated',
      validated: true,
      mtime: 2_000,
      token: 'SydentTok',
      sendAttempt: 2,
      expectedSydent: fresh,
    });
    await expect(store.writes.saveSession({ write: late, expectedVersion: 2 }, req())).rejects.toBeInstanceOf(
      SessionConflictError,
    );
    expect(await store.reads.sessions.load(sid)).toBeUndefined();
    expect(await store.reads.sessions.countByState()).toEqual({});
  });

  it('sessions: a first save of a session the sweep deleted meanwhile is refused and leaves no machine row behind', async () => {
    const { store, exec } = await open();
    // A session as Sydent stores it: no machine row yet, so its first save inserts one.
    const sid = 4242;
    await exec(
      `INSERT INTO threepid_validation_sessions (id, medium, address, clientSecret, validated, mtime)
         VALUES (${sid}, 'email', 'old@example.org', 'cs', 0, 1000);
       INSERT INTO threepid_token_auths (validationSession, token, sendAttemptNumber) VALUES (${sid}, 'SydentTok', 1);
       ${
         // PostgreSQL's counts are kept by the store's writes, not by triggers: a row written behind its back is
         // counted as migrate-db counts what it copies
         engine === 'postgresql' ? 'UPDATE sydent_ts_sydent_session_counts SET n = n + 1 WHERE validated = 0;' : ''
       }`,
    );
    // one read of the repeat path finds what findSid and load find: Sydent's rows, no machine row
    expect(await store.reads.sessions.findLatest('email', 'old@example.org', 'cs')).toEqual(
      await store.reads.sessions.load(sid),
    );
    expect((await store.reads.sessions.findLatest('email', 'old@example.org', 'cs'))?.machine).toBeNull();
    const counted = await store.reads.sessions.countByState();
    const seen = { validated: 0, mtime: 1_000, token: 'SydentTok', sendAttemptNumber: 1 };
    const write = session({ sid, address: 'old@example.org', token: 'SydentTok', expectedSydent: seen });
    // The actor read the session; the sweep takes it before the save.
    expect(Object.values(counted)).toEqual([1]);
    expect(await store.writes.deleteOldSessions({ cutoffMs: 1_001, limit: 100 }, req())).toBe(1);
    await expect(store.writes.saveSession({ write, expectedVersion: null }, req())).rejects.toBeInstanceOf(
      SessionConflictError,
    );
    expect(await store.reads.sessions.load(sid)).toBeUndefined();
    // counted by state: a machine row left without its session would be counted here
    expect(await store.reads.sessions.countByState()).toEqual({});
  });

  it('associations: a bind is looked up by address and by hash (few and many), logged for peers; unbind removes it', async () => {
    const { store } = await open();
    await store.writes.bind(await bindRecord(store), req());
    await store.writes.bind(await bindRecord(store, { mxid: '@newer:hs.example', ts: 6_000 }), req());
    expect(await store.reads.associations.lookup('email', 'alice@example.org', 7_000)).toMatchObject({
      mxid: '@newer:hs.example',
      ts: 6_000,
    });
    expect(await store.reads.associations.lookup('email', 'alice@example.org', 4_000)).toBeUndefined();
    const pepper = await store.reads.associations.pepper();
    const hash = lookupHash('alice@example.org', 'email', pepper);
    expect([...(await store.reads.associations.lookupHashes([hash, 'x'], 7_000))]).toEqual([
      [hash, '@newer:hs.example'],
    ]);
    // Past one statement's slice on PostgreSQL: the hit is in the third slice.
    const many = Array.from({ length: 6_000 }, (_, i) => (i === 5_000 ? hash : `h${i}`));
    expect([...(await store.reads.associations.lookupHashes(many, 7_000))]).toEqual([[hash, '@newer:hs.example']]);
    // The replication log holds the 3PID once, under a new id each time it changed.
    const log1 = await store.reads.peers.localAfter(0, 10);
    expect(log1).toHaveLength(1);
    expect(log1[0]).toMatchObject({
      medium: 'email',
      address: 'alice@example.org',
      mxid: '@newer:hs.example',
      ts: 6_000,
      notBefore: 6_000,
    });
    expect(await store.reads.peers.lastLocalId()).toBe(log1[0]!.id);
    expect(
      await store.writes.unbind(
        { medium: 'email', address: 'alice@example.org', mxid: '@other:hs', now: 8_000 },
        req(),
      ),
    ).toBe(false);
    expect(
      await store.writes.unbind(
        { medium: 'email', address: 'alice@example.org', mxid: '@newer:hs.example', now: 8_000 },
        req(),
      ),
    ).toBe(true);
    expect(await store.reads.associations.lookup('email', 'alice@example.org', 9_000)).toBeUndefined();
    const log2 = await store.reads.peers.localAfter(log1[0]!.id, 10);
    expect(log2).toEqual([
      {
        id: log2[0]!.id,
        medium: 'email',
        address: 'alice@example.org',
        mxid: null,
        ts: 8_000,
        notBefore: null,
        notAfter: null,
      },
    ]);
    expect(await store.reads.peers.localAfter(0, 10)).toHaveLength(1);
  });

  it('hash lookups at once, each at its own time, with hashes shared between them: each gets what it gets alone', async () => {
    const { store } = await open();
    await store.writes.bind(await bindRecord(store), req());
    await store.writes.bind(await bindRecord(store, { mxid: '@newer:hs.example', ts: 6_000 }), req());
    await store.writes.bind(await bindRecord(store, { address: 'bob@example.org', mxid: '@bob:hs.example' }), req());
    const pepper = await store.reads.associations.pepper();
    const alice = lookupHash('alice@example.org', 'email', pepper);
    const bob = lookupHash('bob@example.org', 'email', pepper);
    const asks: [string[], number][] = [];
    for (let i = 0; i < 40; i++) {
      const now = [4_000, 5_500, 7_000][i % 3]!;
      asks.push([[[alice], [bob, alice], ['x'], [alice, 'x', bob, alice]][i % 4]!, now]);
    }
    const lookups = store.reads.associations;
    const atOnce = await Promise.all(asks.map(([hashes, now]) => lookups.lookupHashes(hashes, now)));
    for (let i = 0; i < asks.length; i++) {
      const alone = await lookups.lookupHashes(...asks[i]!);
      expect([...atOnce[i]!].sort()).toEqual([...alone].sort());
    }
    // alice's newest binding at each time; bob's from 5,000
    const whole = (i: number): [string, string][] => [...atOnce[i]!].sort();
    expect(whole(3)).toEqual([]);
    expect(whole(1)).toEqual(
      [
        [alice, '@alice:hs.example'],
        [bob, '@bob:hs.example'],
      ].sort(),
    );
    expect(whole(2)).toEqual([]);
    expect(whole(8)).toEqual([[alice, '@newer:hs.example']]);
    expect(whole(11)).toEqual(
      [
        [alice, '@newer:hs.example'],
        [bob, '@bob:hs.example'],
      ].sort(),
    );
  });

  it('a bind made with a stale pepper or stale invites is refused and writes nothing', async () => {
    const { store } = await open();
    await expect(store.writes.bind(await bindRecord(store, { pepperSeen: 'stale' }), req())).rejects.toBeInstanceOf(
      BindConflictError,
    );
    await store.writes.storeInvite(pendingInvite(), req());
    await expect(store.writes.bind(await bindRecord(store), req())).rejects.toBeInstanceOf(BindConflictError);
    expect(await store.reads.peers.lastLocalId()).toBe(0);
    expect(await store.reads.associations.lookup('email', 'alice@example.org', 7_000)).toBeUndefined();
  });

  it('invites: stored with their key, pending until a bind sends them, checked and discarded', async () => {
    const { store } = await open();
    await store.writes.storeInvite(pendingInvite(), req());
    const pending = await store.reads.invites.pending('email', 'alice@example.org');
    expect(pending).toEqual([
      {
        id: pending[0]!.id,
        medium: 'email',
        address: 'alice@example.org',
        room_id: '!r:hs',
        sender: '@s:hs',
        token: 'itok',
      },
    ]);
    expect(await store.reads.invites.senderOfToken('itok')).toBe('@s:hs');
    expect(await store.writes.checkEphemeralKey({ publicKey: 'epk' }, req())).toBe(true);
    expect(await store.writes.checkEphemeralKey({ publicKey: 'other' }, req())).toBe(false);
    await store.writes.bind(await bindRecord(store, { inviteIds: [pending[0]!.id] }), req());
    expect(await store.reads.invites.pending('email', 'alice@example.org')).toEqual([]);
    await store.writes.discardInvite({ token: 'itok', ephemeralPublicKey: 'epk' }, req());
    expect(await store.reads.invites.senderOfToken('itok')).toBeUndefined();
    expect(await store.writes.checkEphemeralKey({ publicKey: 'epk' }, req())).toBe(false);
  });

  it('callbacks: a bind queues one; claims take one row per destination, once; retry, release, delivery, purge', async () => {
    const { store } = await open();
    const cb = (destination: string) => ({
      destination,
      path: '/_matrix/federation/v1/3pid/onbind',
      body: { d: destination },
    });
    await store.writes.bind(await bindRecord(store, { callback: cb('a.example') }), req());
    await store.writes.enqueueCallback({ ...cb('a.example'), medium: 'email', address: 'b@x', now: 5_001 }, req());
    await store.writes.enqueueCallback({ ...cb('b.example'), medium: 'email', address: 'c@x', now: 5_002 }, req());
    expect(await store.reads.callbacks.counts()).toMatchObject({ pending: 3 });
    const claimed = await store.writes.claimCallbacks(
      { now: 6_000, claimedUntil: 66_000, limit: 10, excludeDestinations: [] },
      req(),
    );
    expect(claimed.map((c) => [c.destination, c.nextAttemptTs, c.claimedUntil, JSON.parse(c.body)])).toEqual([
      ['a.example', 5_000, 66_000, { d: 'a.example' }],
      ['b.example', 5_002, 66_000, { d: 'b.example' }],
    ]);
    expect(
      await store.writes.claimCallbacks(
        { now: 6_000, claimedUntil: 66_000, limit: 10, excludeDestinations: ['a.example'] },
        req(),
      ),
    ).toEqual([]);
    expect(await store.reads.callbacks.nextDue(['a.example'])).toBe(66_000);
    const [a, b] = claimed;
    expect(
      await store.writes.retryCallback({ id: a!.id, claimedUntil: 1, nextAttemptTs: 9_000, lastError: 'x' }, req()),
    ).toBe(false);
    expect(
      await store.writes.retryCallback(
        { id: a!.id, claimedUntil: 66_000, nextAttemptTs: 9_000, lastError: 'HTTP 500' },
        req(),
      ),
    ).toBe(true);
    expect(await store.reads.callbacks.byId(a!.id)).toMatchObject({
      state: 'retrying',
      attempts: 1,
      nextAttemptTs: 9_000,
      lastError: 'HTTP 500',
      claimedUntil: null,
    });
    expect(await store.writes.releaseCallback({ id: b!.id, claimedUntil: 66_000 }, req())).toBe(true);
    // an invite to b's 3PID, whose token goes once the homeserver has the callback
    await store.writes.storeInvite(
      { ...pendingInvite(), address: 'c@x', token: 'ctok', ephemeralPublicKey: 'cepk' },
      req(),
    );
    expect(await store.writes.callbackDelivered({ id: b!.id, now: 7_000, deleteInviteTokens: true }, req())).toEqual({
      updated: true,
      tokensDeleted: 1,
    });
    expect(await store.reads.invites.senderOfToken('ctok')).toBeUndefined();
    expect(await store.writes.callbackDelivered({ id: b!.id, now: 7_000, deleteInviteTokens: true }, req())).toEqual({
      updated: false,
      tokensDeleted: 0,
    });
    expect(await store.reads.callbacks.counts()).toEqual({
      pending: 1,
      delivering: 0,
      retrying: 1,
      delivered: 1,
      abandoned: 0,
    });
    expect(await store.reads.callbacks.pendingCount()).toBe(2);
    expect((await store.reads.callbacks.list(10)).map((r) => r.state)).toEqual(['retrying', 'pending', 'delivered']);
    // A lease that ran out is claimable again.
    const again = await store.writes.claimCallbacks(
      { now: 10_000, claimedUntil: 70_000, limit: 1, excludeDestinations: [] },
      req(),
    );
    expect(again.map((c) => c.destination)).toEqual(['a.example']);
    expect(
      await store.writes.abandonCallback({ id: again[0]!.id, claimedUntil: 70_000, lastError: 'gone' }, req()),
    ).toBe(true);
    expect(await store.writes.purgeCallbacks({ now: 7_000 + 25 * 3600_000 }, req())).toBe(1);
  });

  it('peers: active peers with keys, the cursor only moves forward, pushes are idempotent and tombstones remove older rows', async () => {
    const { store, exec } = await open();
    await exec(
      "INSERT INTO peers (name, port, active) VALUES ('peer.example', 1001, 1), ('off.example', NULL, 0);" +
        "INSERT INTO peer_pubkeys (peername, alg, key) VALUES ('peer.example', 'ed25519', 'KEY'), ('off.example', 'ed25519', 'K2');",
    );
    expect(await store.reads.peers.active()).toEqual([
      { name: 'peer.example', port: 1001, lastSentVersion: null, lastPokeSucceededAt: null, key: 'KEY' },
    ]);
    expect(await store.reads.peers.activeByName('off.example')).toBeUndefined();
    expect((await store.reads.peers.all()).map((p) => [p.name, p.active, p.keys])).toEqual([
      ['off.example', false, { ed25519: 'K2' }],
      ['peer.example', true, { ed25519: 'KEY' }],
    ]);
    expect(await store.writes.markPeerSent({ name: 'peer.example', lastId: 5, now: 100 }, req())).toBe(true);
    expect(await store.writes.markPeerSent({ name: 'peer.example', lastId: 3, now: 200 }, req())).toBe(false);
    expect(await store.reads.peers.activeByName('peer.example')).toMatchObject({
      lastSentVersion: 5,
      lastPokeSucceededAt: 100,
    });
    const pepper = await store.reads.associations.storedPepper();
    const assoc = (originId: number, mxid: string | null, ts: number) => ({
      originId,
      medium: 'email',
      address: 'bob@example.org',
      mxid,
      ts,
      notBefore: null,
      notAfter: null,
      sgAssoc: '{}',
      lookupHash: lookupHash('bob@example.org', 'email', pepper),
    });
    const push = {
      originServer: 'peer.example',
      pepperSeen: pepper,
      associations: [assoc(2, '@bob:hs', 2_000), assoc(1, '@old:hs', 1_000)],
    };
    expect(await store.writes.applyPush(push, req())).toEqual({
      inserted: 2,
      duplicates: 0,
      tombstones: 0,
      deleted: 0,
    });
    expect(await store.writes.applyPush(push, req())).toEqual({
      inserted: 0,
      duplicates: 2,
      tombstones: 0,
      deleted: 0,
    });
    expect((await store.reads.associations.lookup('email', 'bob@example.org', 3_000))?.mxid).toBe('@bob:hs');
    expect(await store.writes.applyPush({ ...push, associations: [assoc(3, null, 1_500)] }, req())).toEqual({
      inserted: 0,
      duplicates: 0,
      tombstones: 1,
      deleted: 1,
    });
    expect((await store.reads.associations.lookup('email', 'bob@example.org', 3_000))?.mxid).toBe('@bob:hs');
    await expect(store.writes.applyPush({ ...push, pepperSeen: 'stale' }, req())).rejects.toBeInstanceOf(
      BindConflictError,
    );
  });

  it('rate buckets: a burst, then refusals saying how long to wait; refills with time; a refund gives one back; keys and limits apart', async () => {
    const { store } = await open();
    const take = (key: string, now: number, bucket = 'email.sender') =>
      store.writes.takeRateToken({ bucket, key, burst: 2, rateHz: 1 / 10, now }, req());
    expect(await take('a', 1_000)).toEqual({ ok: true });
    expect(await take('a', 1_000)).toEqual({ ok: true });
    expect(await take('a', 1_000)).toEqual({ ok: false, retryAfterMs: 10_000 });
    expect(await take('a', 5_000)).toEqual({ ok: false, retryAfterMs: 6_000 });
    expect(await take('b', 5_000)).toEqual({ ok: true });
    expect(await take('a', 5_000, 'sms.msisdn')).toEqual({ ok: true });
    expect(await take('a', 11_000)).toEqual({ ok: true });
    expect(await take('a', 11_000)).toEqual({ ok: false, retryAfterMs: 10_000 });
    await store.writes.refundRateToken({ bucket: 'email.sender', key: 'a', burst: 2 }, req());
    expect(await take('a', 11_000)).toEqual({ ok: true });
  });

  it('one node holds the push to every peer it asks for', async () => {
    const { store } = await open();
    const first = await store.writes.peerLease({ name: 'peer.example' }, req());
    expect(['held', 'acquired']).toContain(first);
    expect(await store.writes.peerLease({ name: 'peer.example' }, req())).toBe('held');
  });

  it('says the database is ok', async () => {
    const { store } = await open();
    expect(await store.reads.state()).toBe('ok');
  });
});
