/**
 * The machine host against a real SQLite file: a small job machine with a nested state and an invoked `work`
 * actor, stored in a table shaped like `session_machines` through a store port written here, as a supervisor
 * would write one. Every test runs twice: with `work` run by a live actor, and by the host itself (`promises`).
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { assign, fromPromise, setup, type InspectionEvent } from 'xstate';
import {
  MachineHost,
  MachineStoppedError,
  MachineVersionError,
  SettleTimeoutError,
  type MachineStorePort,
  type MachineWrite,
  type RowExpectation,
  type StoredMachine,
  type Transition,
} from '../src/actors/machine-host.js';
import { tempDir } from './helpers/tmp.js';

interface JobContext {
  id: string;
  bumps: number;
  result: string | null;
}

type JobEvent = { type: 'GO' } | { type: 'BUMP' };

/** What `work` does in a test: by default it resolves at once. */
let work: (input: { id: string }) => Promise<string>;
/** The rows `work` found when it started: proof of what was recorded before the act. */
let seenByWork: (string | undefined)[];

const jobMachine = setup({
  types: { context: {} as JobContext, events: {} as JobEvent, input: {} as { id: string } },
  actors: {
    work: fromPromise<string, { id: string }>(({ input }) => work(input)),
  },
}).createMachine({
  id: 'job',
  context: ({ input }) => ({ id: input.id, bumps: 0, result: null }),
  initial: 'open',
  states: {
    open: {
      initial: 'idle',
      on: { BUMP: { actions: assign({ bumps: ({ context }) => context.bumps + 1 }) } },
      states: {
        idle: { on: { GO: 'working' } },
        working: {
          invoke: {
            id: 'work',
            src: 'work',
            input: ({ context }) => ({ id: context.id }),
            onDone: { target: 'done', actions: assign({ result: ({ event }) => event.output }) },
            onError: 'failed',
          },
        },
        done: {},
        failed: { on: { GO: 'working' } },
      },
    },
  },
});

class ConflictError extends Error {}

interface Row {
  state: string;
  context: string;
  machine_version: number;
  row_version: number;
  history: string;
}

/** The store port a supervisor would wire, on one SQLite file. */
function sqlitePort(db: Database.Database): MachineStorePort<string, JobContext> {
  const select = db.prepare<[string], Row>(
    'SELECT state, context, machine_version, row_version, history FROM jobs WHERE id = ?',
  );
  const insert = db.prepare(
    'INSERT INTO jobs (id, state, context, machine_version, row_version, history) VALUES (?, ?, ?, ?, 1, ?)',
  );
  const update = db.prepare(
    'UPDATE jobs SET state = ?, context = ?, machine_version = ?, history = ?, row_version = row_version + 1 WHERE id = ? AND row_version = ?',
  );
  return {
    async load(id): Promise<StoredMachine | undefined> {
      const row = select.get(id);
      if (!row) return undefined;
      return {
        state: row.state,
        context: JSON.parse(row.context) as unknown,
        machineVersion: row.machine_version,
        rowVersion: row.row_version,
        history: JSON.parse(row.history) as Transition[],
      };
    },
    async save(
      id,
      write: MachineWrite<JobContext>,
      expected: RowExpectation<unknown>,
    ): Promise<RowExpectation<unknown>> {
      const args = [
        write.state,
        JSON.stringify(write.context),
        write.machineVersion,
        JSON.stringify(write.history),
      ] as const;
      if (expected.rowVersion === null) {
        insert.run(id, ...args);
        return { rowVersion: 1, seen: undefined };
      }
      if (update.run(...args, id, expected.rowVersion).changes !== 1)
        throw new ConflictError(`job ${id} was saved by someone else`);
      return { rowVersion: expected.rowVersion + 1, seen: undefined };
    },
  };
}

/** `work` run by the host itself (its `promises`), not by a live actor */
let direct = false;

/** The job machine with `work` done by `fn`, and the host options that run it as the mode says. */
function working(fn: (input: { id: string }, signal: AbortSignal) => Promise<string>) {
  return {
    machine: jobMachine.provide({
      actors: { work: fromPromise<string, { id: string }>(({ input, signal }) => fn(input, signal)) },
    }),
    ...(direct
      ? {
          promises: {
            work: ({ input, signal }: { input: unknown; signal: AbortSignal }) => fn(input as { id: string }, signal),
          },
        }
      : {}),
  };
}

let tmp: ReturnType<typeof tempDir>;
let db: Database.Database;
let transitions: string[];
let inspected: InspectionEvent[];

function host(
  opts: {
    settleTimeoutMs?: number;
    store?: MachineStorePort<string, JobContext>;
    isConflict?: boolean;
    inspect?: boolean;
  } = {},
) {
  return new MachineHost<typeof jobMachine, string>({
    name: 'job',
    ...working((input) => work(input)),
    version: 3,
    migrations: {
      // 1 → 2: the states had no parent
      1: ({ value, context }) => ({ value: typeof value === 'string' ? { open: value } : value, context }),
      // 2 → 3: `bumps` was called `count`
      2: ({ value, context }) => {
        const { count, ...rest } = context;
        return { value, context: { ...rest, bumps: count ?? 0 } };
      },
    },
    store: opts.store ?? sqlitePort(db),
    now: () => 1000,
    settleTimeoutMs: opts.settleTimeoutMs,
    ...(opts.isConflict ? { isConflict: (error: unknown) => error instanceof ConflictError } : {}),
    onTransition: (from, to, event) => transitions.push(`${from} -${event}-> ${to}`),
    // an inspector watches a live actor: by default only where the mode runs one
    ...((opts.inspect ?? !direct) ? { inspect: (ev: InspectionEvent) => inspected.push(ev) } : {}),
  });
}

const row = (id: string) => db.prepare<[string], Row>('SELECT * FROM jobs WHERE id = ?').get(id);

beforeEach(() => {
  tmp = tempDir();
  db = new Database(path.join(tmp.dir, 'jobs.db'));
  db.pragma('journal_mode = WAL');
  db.exec(
    'CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, context TEXT NOT NULL, machine_version INTEGER NOT NULL, row_version INTEGER NOT NULL, history TEXT NOT NULL)',
  );
  transitions = [];
  inspected = [];
  seenByWork = [];
  work = async ({ id }) => {
    seenByWork.push(row(id)?.state);
    return `worked on ${id}`;
  };
});

afterEach(() => {
  db.close();
  tmp.cleanup();
});

describe.each([
  ['a live actor', false],
  ['the host itself', true],
])('machine host, invoked work run by %s', (_mode, runsItself) => {
  beforeEach(() => {
    direct = runsItself;
  });

  // Without an inspector the actor starts from the recorded snapshot (the event is not taken twice); with one it takes
  // the event, so the inspector shows it: the rows, the outcome and what ran are the same.
  it.each([
    ['with an inspector', true],
    ['without one', false],
  ])(
    'records the state an event leads to before what it starts runs, then every later change; nested values as JSON (%s)',
    async (_label, inspect) => {
      const h = host({ inspect });
      const out = await h.create('a', { id: 'a' }, { type: 'GO' });
      // `work` ran after the row said `working`, and the host waited for it.
      expect(seenByWork).toEqual(['{"open":"working"}']);
      expect(out.state).toBe('done');
      expect(out.snapshot.context.result).toBe('worked on a');
      expect(row('a')).toMatchObject({ state: '{"open":"done"}', machine_version: 3, row_version: 2 });
      expect(JSON.parse(row('a')!.context)).toEqual({ id: 'a', bumps: 0, result: 'worked on a' });
      // States by the names the diagrams use; the invoked actor's end as `done: work`.
      expect(JSON.parse(row('a')!.history)).toEqual([
        { at: 1000, event: 'GO', from: 'idle', to: 'working' },
        { at: 1000, event: 'done: work', from: 'working', to: 'done' },
      ]);
      expect(transitions).toEqual(['idle -GO-> working', 'working -done: work-> done']);
      // The inspection hook saw the actor take the event.
      expect(inspected.some((e) => e.type === '@xstate.event' && e.event.type === 'GO')).toBe(inspect);
    },
  );

  it('a save that fails starts nothing and leaves nothing behind: no actor, no row, the store error', async () => {
    db.exec("CREATE TRIGGER full BEFORE INSERT ON jobs BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END");
    const h = host();
    await expect(h.create('b', { id: 'b' }, { type: 'GO' })).rejects.toThrow('database or disk is full');
    expect(seenByWork).toEqual([]);
    expect(row('b')).toBeUndefined();
    expect([...h.inFlight()]).toEqual([]);
    expect(inspected).toEqual([]);

    // The same on an update, with the database read-only under the host.
    db.exec('DROP TRIGGER full');
    await h.create('c', { id: 'c' }, { type: 'BUMP' });
    const readOnly = new Database(path.join(tmp.dir, 'jobs.db'), { readonly: true });
    try {
      const h2 = host({ store: sqlitePort(readOnly) });
      await expect(h2.send('c', { type: 'GO' })).rejects.toThrow(/readonly/i);
      expect(seenByWork).toEqual([]);
      expect(row('c')).toMatchObject({ state: '{"open":"idle"}', row_version: 1 });
    } finally {
      readOnly.close();
    }
  });

  it('a row someone else saved since it was loaded is a conflict: nothing saved over it, nothing started', async () => {
    const h = host();
    await h.create('d', { id: 'd' }, { type: 'BUMP' });
    const port = sqlitePort(db);
    const racing = host({
      store: {
        load: async (id) => {
          const loaded = await port.load(id);
          db.prepare('UPDATE jobs SET row_version = row_version + 1 WHERE id = ?').run(id);
          return loaded;
        },
        save: (id, write, expected) => port.save(id, write, expected),
      },
    });
    await expect(racing.send('d', { type: 'GO' })).rejects.toThrow(ConflictError);
    expect(seenByWork).toEqual([]);
    expect(row('d')).toMatchObject({ state: '{"open":"idle"}', row_version: 2 });
  });

  it('an end of work whose save meets a row changed meanwhile (another node) is applied to the row as it is now, not refused', async () => {
    let finish = (): void => undefined;
    work = ({ id }) =>
      new Promise((resolve) => {
        finish = () => resolve(`worked on ${id}`);
      });
    const a = host({ isConflict: true });
    const b = host({ isConflict: true });
    const answer = a.create('g', { id: 'g' }, { type: 'GO' });
    await vi.waitFor(() => expect(row('g')?.state).toBe('{"open":"working"}'));
    // the other node takes an event of the machine while the work runs
    await b.send('g', { type: 'BUMP' });
    expect(row('g')).toMatchObject({ row_version: 2 });
    finish();
    const out = await answer;
    expect(out.state).toBe('done');
    expect(out.snapshot.context).toEqual({ id: 'g', bumps: 1, result: 'worked on g' });
    expect(row('g')).toMatchObject({ state: '{"open":"done"}', row_version: 3 });
    expect(JSON.parse(row('g')!.context)).toEqual({ id: 'g', bumps: 1, result: 'worked on g' });
    expect(JSON.parse(row('g')!.history)).toEqual([
      { at: 1000, event: 'GO', from: 'idle', to: 'working' },
      { at: 1000, event: 'done: work', from: 'working', to: 'done' },
    ]);
  });

  it('restores rows of older versions through the migrations, plain state names included; refuses a newer one', async () => {
    const insert = db.prepare(
      'INSERT INTO jobs (id, state, context, machine_version, row_version, history) VALUES (?, ?, ?, ?, ?, ?)',
    );
    insert.run('v1', 'failed', JSON.stringify({ id: 'v1', count: 4, result: null }), 1, 7, '[]');
    insert.run('v2', '{"open":"idle"}', JSON.stringify({ id: 'v2', count: 2, result: null }), 2, 3, '[]');
    insert.run('v9', '{"open":"idle"}', JSON.stringify({ id: 'v9', bumps: 0, result: null }), 9, 1, '[]');
    const h = host();

    expect(await h.peek('v1')).toMatchObject({
      state: 'failed',
      snapshot: { value: { open: 'failed' }, context: { bumps: 4 } },
    });
    const out = await h.send('v1', { type: 'GO' });
    expect(out).toMatchObject({ state: 'done', snapshot: { context: { id: 'v1', bumps: 4, result: 'worked on v1' } } });
    expect(row('v1')).toMatchObject({ state: '{"open":"done"}', machine_version: 3, row_version: 9 });
    expect(JSON.parse(row('v1')!.context)).toEqual({ id: 'v1', bumps: 4, result: 'worked on v1' });

    expect(await h.send('v2', { type: 'BUMP' })).toMatchObject({ state: 'idle', snapshot: { context: { bumps: 3 } } });
    expect(row('v2')).toMatchObject({ state: '{"open":"idle"}', machine_version: 3, row_version: 4 });

    await expect(h.send('v9', { type: 'BUMP' })).rejects.toThrow(MachineVersionError);
    expect(row('v9')).toMatchObject({ machine_version: 9, row_version: 1 });
    expect(await h.send('nobody', { type: 'BUMP' })).toBeUndefined();
  });

  it('one event at a time per machine, any number of machines at once', async () => {
    const h = host();
    await h.create('e', { id: 'e' }, { type: 'BUMP' });
    await h.create('f', { id: 'f' }, { type: 'BUMP' });
    let finish!: () => void;
    const gate = new Promise<void>((resolve) => (finish = resolve));
    work = async ({ id }) => {
      seenByWork.push(row(id)?.state);
      if (id === 'e') await gate;
      return id;
    };
    const slow = h.send('e', { type: 'GO' });
    await new Promise((r) => setTimeout(r, 20));
    // `e` waits for its work; a BUMP for `e` waits behind it, while `f` goes on.
    const bump = h.send('e', { type: 'BUMP' });
    expect(await h.send('f', { type: 'GO' })).toMatchObject({ state: 'done' });
    expect([...h.inFlight()]).toEqual([{ key: 'e', state: 'working' }]);
    expect(row('e')).toMatchObject({ state: '{"open":"working"}' });
    finish();
    expect(await slow).toMatchObject({ state: 'done', snapshot: { context: { bumps: 1 } } });
    expect(await bump).toMatchObject({ state: 'done', snapshot: { context: { bumps: 2 } } });
    expect(JSON.parse(row('e')!.context)).toMatchObject({ bumps: 2 });
  });

  it('keeps nothing in memory once an event is answered; the row is the truth', async () => {
    const h = host();
    await h.create('g', { id: 'g' }, { type: 'BUMP' });
    expect([...h.inFlight()]).toEqual([]);
    expect(h.busy).toBe(0);
    // Changed under the host (another node, an operator): the next event starts from the row.
    db.prepare("UPDATE jobs SET context = json_set(context, '$.bumps', 40) WHERE id = 'g'").run();
    expect(await h.send('g', { type: 'BUMP' })).toMatchObject({ snapshot: { context: { bumps: 41 } } });
  });

  it('an event that changes nothing writes nothing', async () => {
    const h = host();
    await h.create('h', { id: 'h' }, { type: 'GO' });
    expect(row('h')).toMatchObject({ state: '{"open":"done"}', row_version: 2 });
    expect(await h.send('h', { type: 'GO' })).toMatchObject({ state: 'done' });
    expect(row('h')).toMatchObject({ row_version: 2 });
  });

  it('an event handed to a machine while its work runs is taken and recorded; once the work has ended it waits for its turn', async () => {
    const h = host();
    await h.create('j', { id: 'j' }, { type: 'BUMP' });
    let fail!: (error: Error) => void;
    work = ({ id }) => {
      seenByWork.push(row(id)?.state);
      return new Promise<string>((_resolve, reject) => (fail = reject));
    };
    // The save of the work's end waits until the test lets it go.
    const port = sqlitePort(db);
    let saving!: () => void;
    const savingFailed = new Promise<void>((resolve) => (saving = resolve));
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const slowSave = host({
      store: {
        load: (id) => port.load(id),
        save: async (id, write, expected) => {
          if (write.stateName === 'failed') {
            saving();
            await released;
          }
          return port.save(id, write, expected);
        },
      },
    });
    const going = slowSave.send('j', { type: 'GO' });
    await vi.waitFor(() => expect(seenByWork).toHaveLength(1));
    // While `work` runs, the machine takes the event at once.
    expect(slowSave.interrupt('j', { type: 'BUMP' })).toBe(true);
    fail(new Error('no luck'));
    await savingFailed;
    // `work` has ended, its end is being recorded: an event now would start `work` again only for it to be stopped
    // with the actor, so the caller is told to queue it.
    expect(slowSave.interrupt('j', { type: 'GO' })).toBe(false);
    release();
    expect(await going).toMatchObject({ state: 'failed', snapshot: { context: { bumps: 2 } } });
    expect(seenByWork).toHaveLength(1);
    expect(row('j')).toMatchObject({ state: '{"open":"failed"}' });
    expect(JSON.parse(row('j')!.context)).toMatchObject({ bumps: 2 });
  });

  it('what an event starts and does not end in time is stopped: the row keeps the state it was recorded in', async () => {
    let aborted = false;
    const stopped = (input: { id: string }, signal: AbortSignal) =>
      new Promise<string>((_resolve, reject) => {
        seenByWork.push(row(input.id)?.state);
        signal.addEventListener('abort', () => {
          aborted = true;
          reject(new Error('aborted'));
        });
      });
    const slowHost = new MachineHost<typeof jobMachine, string>({
      name: 'job',
      ...working(stopped),
      version: 3,
      store: sqlitePort(db),
      now: () => 1000,
      settleTimeoutMs: 50,
    });
    await expect(slowHost.create('i', { id: 'i' }, { type: 'GO' })).rejects.toThrow(SettleTimeoutError);
    expect(seenByWork).toEqual(['{"open":"working"}']);
    expect(aborted).toBe(true);
    expect(row('i')).toMatchObject({ state: '{"open":"working"}', row_version: 1 });
    expect([...slowHost.inFlight()]).toEqual([]);
  });

  it('the live actors counted by state stay what walking them says, as actors start, move, stop and are let go', async () => {
    type Counts = { total: number; byState: Record<string, number> };
    const walked = (h: MachineHost<typeof jobMachine, string>): Counts => {
      const byState: Record<string, number> = {};
      let total = 0;
      for (const { state } of h.inFlight()) {
        byState[state] = (byState[state] ?? 0) + 1;
        total++;
      }
      return { total, byState };
    };
    // Read at every change of state, while the actor that moved is still live.
    const atTransitions: [Counts, Counts][] = [];
    const gates = new Map<string, { release: () => void; fail: () => void }>();
    const gated = (input: { id: string }, signal: AbortSignal) =>
      new Promise<string>((resolve, reject) => {
        gates.set(input.id, { release: () => resolve(input.id), fail: () => reject(new Error('failed')) });
        signal.addEventListener('abort', () => reject(new Error('aborted')));
      });
    const h: MachineHost<typeof jobMachine, string> = new MachineHost<typeof jobMachine, string>({
      name: 'job',
      ...working(gated),
      version: 3,
      store: sqlitePort(db),
      now: () => 1000,
      settleTimeoutMs: 2_000,
      onTransition: () => atTransitions.push([h.liveCounts(), walked(h)]),
    });
    const until = async (ids: string[]) => {
      for (let i = 0; i < 200 && !ids.every((id) => gates.has(id)); i++) await new Promise((r) => setTimeout(r, 5));
    };

    // Created and answered at once: nothing stays live.
    for (const id of ['a', 'b', 'c', 'd']) await h.create(id, { id }, { type: 'BUMP' });
    expect(h.liveCounts()).toEqual({ total: 0, byState: {} });

    // Three at work.
    const a = h.send('a', { type: 'GO' });
    const b = h.send('b', { type: 'GO' });
    const c = h.send('c', { type: 'GO' });
    await until(['a', 'b', 'c']);
    expect(h.liveCounts()).toEqual({ total: 3, byState: { working: 3 } });
    expect(h.liveCounts()).toEqual(walked(h));

    // An event taken by a live actor that does not move it.
    expect(h.interrupt('a', { type: 'BUMP' })).toBe(true);
    expect(h.liveCounts()).toEqual({ total: 3, byState: { working: 3 } });

    // One done, one failed, one stopped: each let go, whatever the way out.
    gates.get('a')!.release();
    expect(await a).toMatchObject({ state: 'done' });
    expect(h.liveCounts()).toEqual({ total: 2, byState: { working: 2 } });
    gates.get('b')!.fail();
    expect(await b).toMatchObject({ state: 'failed' });
    h.stop('c');
    await expect(c).rejects.toThrow(MachineStoppedError);
    expect(h.liveCounts()).toEqual({ total: 0, byState: {} });
    expect(h.liveCounts()).toEqual(walked(h));

    // Out of time: stopped by the host, counted out too.
    const slow = new MachineHost<typeof jobMachine, string>({
      name: 'job',
      ...working(gated),
      version: 3,
      store: sqlitePort(db),
      now: () => 1000,
      settleTimeoutMs: 30,
    });
    await expect(slow.send('d', { type: 'GO' })).rejects.toThrow(SettleTimeoutError);
    expect(slow.liveCounts()).toEqual({ total: 0, byState: {} });

    // Every change of state was counted as it happened: the actor that moved, under its new state.
    expect(atTransitions.length).toBeGreaterThan(0);
    for (const [kept, walk] of atTransitions) expect(kept).toEqual(walk);
    expect(atTransitions.some(([kept]) => (kept.byState['done'] ?? 0) === 1)).toBe(true);
    expect(atTransitions.some(([kept]) => (kept.byState['failed'] ?? 0) === 1)).toBe(true);
  });
});

describe('machine host, invoked promises it runs itself', () => {
  it('runs them without a live actor unless an inspector watches: the machine’s own actor runs only then', async () => {
    const ran: string[] = [];
    const options = (inspect: boolean) =>
      new MachineHost<typeof jobMachine, string>({
        name: 'job',
        machine: jobMachine.provide({
          actors: {
            work: fromPromise<string, { id: string }>(async ({ input }) => {
              ran.push(`actor ${input.id}`);
              return 'by the actor';
            }),
          },
        }),
        promises: {
          work: async ({ input }) => {
            ran.push(`host ${(input as { id: string }).id}`);
            return 'by the host';
          },
        },
        version: 3,
        store: sqlitePort(db),
        now: () => 1000,
        ...(inspect ? { inspect: (ev: InspectionEvent) => inspected.push(ev) } : {}),
      });
    expect(await options(false).create('p', { id: 'p' }, { type: 'GO' })).toMatchObject({
      state: 'done',
      snapshot: { context: { result: 'by the host' } },
    });
    expect(await options(true).create('q', { id: 'q' }, { type: 'GO' })).toMatchObject({
      state: 'done',
      snapshot: { context: { result: 'by the actor' } },
    });
    expect(ran).toEqual(['host p', 'actor q']);
    expect(JSON.parse(row('p')!.history)).toEqual(JSON.parse(row('q')!.history));
  });

  it('an end that leads to an action only a live actor can run is the event’s error; the row keeps what was recorded', async () => {
    const noisy = setup({
      types: { context: {} as { n: number } },
      actors: { work: fromPromise<string>(async () => 'x') },
      actions: { shout: () => undefined },
    }).createMachine({
      id: 'noisy',
      context: { n: 0 },
      initial: 'idle',
      states: {
        idle: { on: { GO: 'working' } },
        working: { invoke: { src: 'work', onDone: { target: 'done', actions: 'shout' } } },
        done: {},
      },
    });
    const h = new MachineHost<typeof noisy, string>({
      name: 'noisy',
      machine: noisy,
      promises: { work: async () => 'x' },
      version: 1,
      store: sqlitePort(db) as unknown as MachineStorePort<string, { n: number }>,
      now: () => 1000,
    });
    await expect(h.create('r', undefined as never, { type: 'GO' })).rejects.toThrow(
      'noisy: xstate.done.actor.0.noisy.working leads to shout, which needs a live actor',
    );
    expect(row('r')).toMatchObject({ state: 'working', row_version: 1 });
    expect([...h.inFlight()]).toEqual([]);
  });
});
