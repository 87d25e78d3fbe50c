import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { createActor, fromPromise, transition } from 'xstate';
import { getShortestPaths } from 'xstate/graph';
import { generateSeed } from '../src/crypto/index.js';
import {
  PEER_BACKOFF_CAP_MS,
  PEER_BACKOFF_JITTER,
  PEER_STATES,
  PUSH_BATCH_SIZE,
  peerBackoffMs,
  peerMachine,
  type PeerEvent,
  type PeerInput,
  type PushInput,
  type PushResult,
} from '../src/machines/peer.js';
import type { PushAnswer, PushBody } from '../src/replication/outbound.js';
import { PeerUrls, setPeerUrlInFile } from '../src/replication/peer-config.js';
import { ReplicationWorker, type PushTransport } from '../src/replication/worker.js';
import { openDatabase } from '../src/store/database.js';
import { PeerReads, PeerWrites } from '../src/store/peers.js';
import { tempDir } from './helpers/tmp.js';

const T0 = 1_000_000;
const DONE = 'xstate.done.actor.push';
const ERROR = 'xstate.error.actor.push';

// The push never settles by itself: tests deliver its done/error events, as the invoked actor would.
const machine = peerMachine.provide({
  actors: { push: fromPromise<PushResult, PushInput>(() => new Promise<PushResult>(() => undefined)) },
});

const input: PeerInput = { name: 'b.test', cursor: 10, lastSuccessAt: null };

type AnyEvent = PeerEvent | { type: string; output?: PushResult; error?: unknown };
const wake: PeerEvent = { type: 'WAKE' };
const retry: PeerEvent = { type: 'RETRY' };
const pushed = (sent: number, lastId: number, at = T0): AnyEvent => ({
  type: DONE,
  output: { sent, lastId, full: sent >= PUSH_BATCH_SIZE, at },
});
const failed = (message = 'connect ECONNREFUSED', at = T0, jitter = 0, status: number | null = null): AnyEvent => ({
  type: ERROR,
  error: { message, at, jitter, status },
});

function replay(events: AnyEvent[], from: PeerInput = input) {
  const actor = createActor(machine, { input: from });
  actor.start();
  for (const e of events) actor.send(e as PeerEvent);
  const snap = actor.getSnapshot();
  actor.stop();
  return snap;
}

describe('peer machine: every state by its shortest path', () => {
  const paths = getShortestPaths(machine, {
    input,
    events: [wake, retry, pushed(5, 15), pushed(PUSH_BATCH_SIZE, 110), pushed(0, 10), failed()] as PeerEvent[],
    serializeState: (s) => String(s.value),
  });

  it('reaches every state', () => {
    expect(new Set(paths.map((p) => String(p.state.value)))).toEqual(new Set(PEER_STATES));
  });

  for (const p of paths) {
    const events = p.steps.map((s) => s.event);
    it(`${String(p.state.value)} via ${events.map((e) => e.type).join(' → ') || '(start)'}`, () => {
      const snap = replay(events);
      expect(snap.value).toEqual(p.state.value);
      if (snap.value === 'backingOff') {
        expect(snap.context.failures).toBe(1);
        expect(snap.context.retryDelayMs).toBe(1000);
        expect(snap.context.nextRetryTs).toBe(T0 + 1000);
        expect(snap.context.lastError).toBe('connect ECONNREFUSED');
      }
      if (snap.value === 'idle') expect(snap.context.cursor).toBe(10);
    });
  }
});

describe('peer machine: rules', () => {
  it('a partial batch moves the cursor and ends in idle', () => {
    const s = replay([wake, pushed(5, 15, T0 + 7)]);
    expect(s.value).toBe('idle');
    expect(s.context).toMatchObject({ cursor: 15, pushed: 5, batches: 1, lastSuccessAt: T0 + 7, failures: 0 });
  });

  it('a full batch is followed at once by the next one', () => {
    const s = replay([wake, pushed(PUSH_BATCH_SIZE, 110)]);
    expect(s.value).toBe('pushing');
    expect(s.context.cursor).toBe(110);
    const done = replay([wake, pushed(PUSH_BATCH_SIZE, 110), pushed(3, 113)]);
    expect(done.value).toBe('idle');
    expect(done.context).toMatchObject({ cursor: 113, pushed: 103, batches: 2 });
  });

  it('nothing to send: idle again, cursor and last success untouched', () => {
    const s = replay([wake, pushed(0, 10)], { ...input, lastSuccessAt: 42 });
    expect(s.value).toBe('idle');
    expect(s.context).toMatchObject({ cursor: 10, lastSuccessAt: 42, batches: 0 });
  });

  it('a wake-up during a push makes it look again afterwards', () => {
    const s = replay([wake, wake, pushed(2, 12)]);
    expect(s.value).toBe('pushing');
    expect(s.context.dirty).toBe(false); // cleared on entering the next push
    expect(replay([wake, wake, pushed(2, 12), pushed(0, 12)]).value).toBe('idle');
  });

  it('the cursor never goes back', () => {
    const s = replay([wake, pushed(1, 5)]);
    expect(s.context.cursor).toBe(10);
  });

  it('backing off ignores wake-ups; RETRY pushes again; a success resets the backoff', () => {
    const off = replay([wake, failed('HTTP 500: M_UNKNOWN', T0, 0, 500)]);
    expect(off.value).toBe('backingOff');
    expect(off.context.lastStatus).toBe(500);
    const [still] = transition(machine, off, wake);
    expect(still.value).toBe('backingOff');
    const [again] = transition(machine, off, retry);
    expect(again.value).toBe('pushing');
    const [ok] = transition(machine, again, pushed(4, 14) as PeerEvent);
    expect(ok.value).toBe('idle');
    expect(ok.context).toMatchObject({ failures: 0, retryDelayMs: null, nextRetryTs: null, cursor: 14 });
    // the last error stays visible for operators
    expect(ok.context.lastError).toBe('HTTP 500: M_UNKNOWN');
  });

  it('RETRY outside a backoff changes nothing', () => {
    expect(replay([retry]).value).toBe('idle');
    expect(replay([wake, retry]).value).toBe('pushing');
  });
});

describe('peer machine: backoff', () => {
  it('doubles from 1 s and stops at 5 min', () => {
    expect([0, 1, 2, 3, 4].map((f) => peerBackoffMs(f, 0))).toEqual([1000, 2000, 4000, 8000, 16000]);
    expect(peerBackoffMs(8, 0)).toBe(256_000);
    expect(peerBackoffMs(9, 0)).toBe(PEER_BACKOFF_CAP_MS);
    expect(peerBackoffMs(10_000, 0)).toBe(PEER_BACKOFF_CAP_MS);
  });

  it('jitter only shortens a delay, by at most half', () => {
    for (const failures of [0, 3, 9, 50]) {
      const nominal = peerBackoffMs(failures, 0);
      for (const jitter of [0, 0.3, 0.999]) {
        const d = peerBackoffMs(failures, jitter);
        expect(d).toBeLessThanOrEqual(nominal);
        expect(d).toBeGreaterThanOrEqual(Math.floor(nominal * (1 - PEER_BACKOFF_JITTER)));
      }
    }
    expect(peerBackoffMs(0, Number.NaN)).toBe(1000);
    expect(peerBackoffMs(0, 5)).toBe(500);
  });

  it('the machine grows the delay with each failure, from the jitter the failure carries', () => {
    let snap = replay([wake]);
    const delays: number[] = [];
    for (let i = 0; i < 12; i++) {
      [snap] = transition(machine, snap, failed('down', T0, 0) as PeerEvent);
      delays.push(snap.context.retryDelayMs!);
      expect(snap.context.nextRetryTs).toBe(T0 + snap.context.retryDelayMs!);
      [snap] = transition(machine, snap, retry);
    }
    expect(delays).toEqual([1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300].map((s) => s * 1000));
    [snap] = transition(machine, snap, failed('down', T0, 0.5) as PeerEvent);
    expect(snap.context.retryDelayMs).toBe(PEER_BACKOFF_CAP_MS * 0.75);
    expect(snap.context.failures).toBe(13);
  });
});

describe('docs/machines/peer.stately.ts', () => {
  it('is a machine with the same states and transitions', async () => {
    const mod = (await import('../docs/machines/peer.stately.js')) as unknown as { peerMachine: typeof peerMachine };
    const imported = mod.peerMachine;
    expect(Object.keys(imported.states).sort()).toEqual(Object.keys(peerMachine.states).sort());
    for (const [name, node] of Object.entries(peerMachine.states)) {
      const events = (n: typeof node) => [...n.ownEvents].filter((e) => !e.startsWith('xstate.')).sort();
      expect(events(imported.states[name]!), name).toEqual(events(node));
    }
  });
});

describe('replication worker: one actor per peer', () => {
  /** a database with `n` local bindings and two peers, and a worker whose transports the test controls */
  function setup(n: number, transports: Record<string, (body: PushBody) => Promise<PushAnswer>>) {
    const db = openDatabase(':memory:');
    db.prepare("INSERT INTO hashing_metadata (id, lookup_pepper) VALUES (0, 'pepper')").run();
    const insert = db.prepare(
      "INSERT INTO local_threepid_associations (medium, address, mxid, ts, notBefore, notAfter) VALUES ('email', ?, ?, 1, 1, 2)",
    );
    for (let i = 1; i <= n; i++) insert.run(`u${i}@x.test`, `@u${i}:x.test`);
    const writes = new PeerWrites(db);
    for (const name of Object.keys(transports)) writes.upsert({ name, key: 'A'.repeat(43), port: null });
    const reads = new PeerReads(db);
    /** what a test does inside the worker's calls: after a cursor is stored; before the peers are read */
    const hooks: { afterMarkSent?: (lastId: number) => void; peersRead?: Promise<void> } = {};
    const worker = new ReplicationWorker({
      reads: {
        active: () => {
          const gate = hooks.peersRead;
          return gate ? gate.then(() => reads.active()) : reads.active();
        },
        all: () => reads.all(),
        localAfter: (afterId, limit, signedAs) => reads.localAfter(afterId, limit, signedAs),
        lastLocalId: () => reads.lastLocalId(),
      },
      store: {
        markSent: async (name, lastId, now) => {
          const moved = writes.markSent(name, lastId, now);
          hooks.afterMarkSent?.(lastId);
          return moved;
        },
      },
      serverName: 'a.test',
      signingKey: { version: '0', seed: generateSeed() },
      tls: null,
      urls: { get: () => undefined, refresh: () => undefined },
      // only the wake-ups push: the tests see what they do alone
      tickMs: 3_600_000,
      now: () => T0,
      random: () => 0,
      log: pino({ level: 'silent' }),
      transport: (peer): PushTransport => ({
        post: (_url, body) => transports[peer.name]!(JSON.parse(body) as PushBody),
        close: async () => undefined,
        destroy: async () => undefined,
      }),
    });
    return { db, worker, hooks };
  }

  it('a dead peer backs off while the others receive everything', async () => {
    const seen: string[] = [];
    let hang!: () => void;
    const { db, worker } = setup(250, {
      'dead.test': () => Promise.reject(new Error('connect ECONNREFUSED')),
      'slow.test': () => new Promise<PushAnswer>((resolve) => (hang = () => resolve({ status: 200, body: '{}' }))),
      'ok.test': async (body) => {
        seen.push(...Object.keys(body.sgAssocs));
        return { status: 200, body: '{"success":true}' };
      },
    });
    worker.start();
    const byName = async () => Object.fromEntries((await worker.view()).peers.map((p) => [p.name, p]));
    for (let i = 0; i < 100 && (await byName())['ok.test']?.backlog !== 0; i++)
      await new Promise((r) => setTimeout(r, 10));
    const peers = await byName();
    expect(peers['ok.test']).toMatchObject({ state: 'idle', cursor: 250, backlog: 0, pushed: 250 });
    expect(seen).toHaveLength(250);
    expect(new Set(seen).size).toBe(250);
    expect(peers['dead.test']).toMatchObject({
      state: 'backingOff',
      cursor: 0,
      backlog: 250,
      lastError: 'connect ECONNREFUSED',
    });
    expect(peers['dead.test']!.nextRetryTs).toBe(T0 + 1000);
    expect(peers['slow.test']).toMatchObject({ state: 'pushing', cursor: 0 });
    // durable cursors: only what was acknowledged
    const cursors = db.prepare('SELECT name, lastSentVersion FROM peers ORDER BY name').all();
    expect(cursors).toEqual([
      { name: 'dead.test', lastSentVersion: null },
      { name: 'ok.test', lastSentVersion: 250 },
      { name: 'slow.test', lastSentVersion: null },
    ]);
    hang();
    await worker.drain();
    db.close();
  });

  it('a wake-up that comes while a push ends is not lost: the row it was for goes out without waiting for the tick', async () => {
    const seen = new Set<string>();
    const { db, worker, hooks } = setup(0, {
      'ok.test': async (body) => {
        for (const id of Object.keys(body.sgAssocs)) seen.add(id);
        return { status: 200, body: '{}' };
      },
    });
    const insert = db.prepare(
      "INSERT INTO local_threepid_associations (medium, address, mxid, ts, notBefore, notAfter) VALUES ('email', ?, ?, 1, 1, 2)",
    );
    worker.start();
    // A row is pushed; as its push stores the cursor, another row is bound and its wake-up reads the peers, and that
    // read ends k microtasks later: the wake-up reaches the peer in every phase of the push's end, for one k or
    // another. The tick is an hour away, so only the wake-ups can send the rows.
    for (let k = 0; k < 60; k++) {
      const first = Number(insert.run(`a${k}@x.test`, `@a${k}:x.test`).lastInsertRowid);
      let second = -1;
      hooks.afterMarkSent = (lastId) => {
        if (lastId !== first) return;
        hooks.afterMarkSent = undefined;
        second = Number(insert.run(`b${k}@x.test`, `@b${k}:x.test`).lastInsertRowid);
        let release!: () => void;
        hooks.peersRead = new Promise<void>((resolve) => (release = resolve));
        worker.wake();
        hooks.peersRead = undefined;
        let later = Promise.resolve();
        for (let i = 0; i < k; i++) later = later.then(() => undefined);
        void later.then(release);
      };
      worker.wake();
      for (let i = 0; i < 200 && !(second > 0 && seen.has(String(second))); i++)
        await new Promise((r) => setTimeout(r, 5));
      expect([seen.has(String(first)), second > 0 && seen.has(String(second))], `k = ${k}`).toEqual([true, true]);
    }
    await worker.drain();
    db.close();
  });

  it('the next batch is signed while the peer works on the last one; rows replaced meanwhile still arrive', async () => {
    const batches: string[][] = [];
    let replaced = false;
    const { db, worker } = setup(250, {
      'ok.test': async (body) => {
        batches.push(Object.keys(body.sgAssocs));
        await new Promise((r) => setImmediate(r)); // the request is on its way
        if (!replaced) {
          replaced = true;
          // an unbind of u150 while the first batch is on its way (the second is already signed): a new log row
          db.prepare(
            "INSERT OR REPLACE INTO local_threepid_associations (medium, address, mxid, ts) VALUES ('email', 'u150@x.test', NULL, 9)",
          ).run();
        }
        return { status: 200, body: '{}' };
      },
    });
    worker.start();
    for (let i = 0; i < 100 && (await worker.view()).peers[0]?.backlog !== 0; i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(batches.map((b) => b.length)).toEqual([100, 100, 51]);
    // the second batch was signed before the unbind: it still holds row 150; the tombstone (251) follows
    expect(batches[1]).toContain('150');
    expect(batches[2]!.slice(-1)).toEqual(['251']);
    expect((await worker.view()).peers[0]).toMatchObject({ cursor: 251, backlog: 0 });
    await worker.drain();
    db.close();
  });

  it('a peer added while the peers are being read is pushed to the URL written before its row', async () => {
    const { dir, cleanup } = tempDir('sydent-ts-peer-urls-');
    const configPath = path.join(dir, 'sydent.conf');
    fs.writeFileSync(configPath, '[general]\nserver.name = a.test\n');
    const db = openDatabase(':memory:');
    db.prepare("INSERT INTO hashing_metadata (id, lookup_pepper) VALUES (0, 'pepper')").run();
    db.prepare(
      "INSERT INTO local_threepid_associations (medium, address, mxid, ts, notBefore, notAfter) VALUES ('email', 'u@x.test', '@u:x.test', 1, 1, 2)",
    ).run();
    const reads = new PeerReads(db);
    const writes = new PeerWrites(db);
    let adding = true;
    const posted: string[] = [];
    const worker = new ReplicationWorker({
      reads: {
        lastLocalId: () => reads.lastLocalId(),
        all: () => reads.all(),
        localAfter: (after, limit, signedAs) => reads.localAfter(after, limit, signedAs),
        // `peers add --url` runs while the read is on its way: the URL, then the row, which the read sees
        active: async () => {
          if (adding) {
            adding = false;
            setPeerUrlInFile(configPath, 'b.test', 'https://b-internal.test:4434');
            writes.upsert({ name: 'b.test', key: 'A'.repeat(43), port: null });
          }
          return reads.active();
        },
      },
      store: { markSent: async (name, lastId, now) => writes.markSent(name, lastId, now) },
      serverName: 'a.test',
      signingKey: { version: '0', seed: generateSeed() },
      tls: null,
      urls: new PeerUrls({ peers: {}, configPath }),
      now: () => T0,
      random: () => 0,
      log: pino({ level: 'silent' }),
      transport: (): PushTransport => ({
        post: async (url) => {
          posted.push(url);
          return { status: 200, body: '{}' };
        },
        close: async () => undefined,
        destroy: async () => undefined,
      }),
    });
    try {
      worker.start();
      for (let i = 0; i < 100 && (await worker.view()).peers[0]?.backlog !== 0; i++)
        await new Promise((r) => setTimeout(r, 10));
      expect(posted).toEqual(['https://b-internal.test:4434/_matrix/identity/replicate/v1/push']);
      expect((await worker.view()).peers[0]).toMatchObject({ name: 'b.test', cursor: 1, failures: 0, lastError: null });
    } finally {
      await worker.drain();
      db.close();
      cleanup();
    }
  });

  it('the view lists inactive peers and peers without a key, and a disabled worker says why', async () => {
    const db = openDatabase(':memory:');
    db.prepare("INSERT INTO peers (name, active) VALUES ('off.test', 0), ('nokey.test', 1)").run();
    const worker = new ReplicationWorker({
      reads: new PeerReads(db),
      store: { markSent: async () => true },
      serverName: 'a.test',
      signingKey: { version: '0', seed: generateSeed() },
      tls: null,
      disabledReason: 'replication.https.certfile is not set',
      urls: { get: () => undefined, refresh: () => undefined },
      now: () => T0,
      log: pino({ level: 'silent' }),
    });
    worker.start();
    const view = await worker.view();
    expect(view).toMatchObject({ enabled: false, reason: 'replication.https.certfile is not set' });
    expect(view.peers.map((p) => [p.name, p.state, p.url])).toEqual([
      ['nokey.test', 'disabled', 'https://nokey.test:1001/_matrix/identity/replicate/v1/push'],
      ['off.test', 'disabled', 'https://off.test:1001/_matrix/identity/replicate/v1/push'],
    ]);
    db.close();
  });
});
