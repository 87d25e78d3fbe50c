import { createActor, fromCallback, setup, type Actor } from 'xstate';
import type { StoreReads } from '../store/reads.js';
import { actorOf, statusOf } from './actor-ref.js';
import { ask, DeadlineExceededError, type AskEvent } from './ask.js';
import type { SystemDeps } from './deps.js';
import { facade, provideEnvironment, type Facades } from './facade.js';
import { repliesOf } from './replies.js';
import {
  CONTROL,
  SupervisorClosedError,
  type ChildPage,
  type ChildSummary,
  type SupervisorStats,
} from './supervisor.js';
import { mailerHandlers, mailerSupervisor } from './supervisors/mailer.js';
import { notifierHandlers, notifierSupervisor } from './supervisors/notifier.js';
import { replicationHandlers, replicationSupervisor } from './supervisors/replication.js';
import { sessionsHandlers, sessionsSupervisor } from './supervisors/sessions.js';
import { smsHandlers, smsSupervisor } from './supervisors/sms.js';
import { storeHandlers, storeSupervisor } from './supervisors/store.js';

/** Start order. Shutdown walks it backwards, so the store, which everything else writes through, stops last. */
export const SUPERVISORS = ['store', 'mailer', 'sms', 'notifier', 'replication', 'sessions'] as const;

const placeholder = fromCallback<AskEvent, SystemDeps>(() => undefined);

/**
 * The root actor: it invokes every supervisor under its systemId. Supervisors' logic is provided by
 * `startSystem`, so the machine itself stays pure and exports cleanly.
 */
const rootMachine = setup({
  types: { input: {} as SystemDeps, context: {} as { deps: SystemDeps } },
  actors: {
    store: placeholder,
    mailer: placeholder,
    sms: placeholder,
    notifier: placeholder,
    replication: placeholder,
    sessions: placeholder,
  },
}).createMachine({
  id: 'root',
  context: ({ input }) => ({ deps: input }),
  invoke: [
    { src: 'store', id: 'store', systemId: 'store', input: ({ context }) => context.deps },
    { src: 'mailer', id: 'mailer', systemId: 'mailer', input: ({ context }) => context.deps },
    { src: 'sms', id: 'sms', systemId: 'sms', input: ({ context }) => context.deps },
    { src: 'notifier', id: 'notifier', systemId: 'notifier', input: ({ context }) => context.deps },
    { src: 'replication', id: 'replication', systemId: 'replication', input: ({ context }) => context.deps },
    { src: 'sessions', id: 'sessions', systemId: 'sessions', input: ({ context }) => context.deps },
  ],
});

interface ActorInfo {
  systemId: string;
  status: string;
  queueLength: number;
  running: number;
  handled: number;
  failed: number;
  /** the actors it runs below it, counted per state (a page of them: `children()`) */
  children: ChildSummary;
}

/** How long shutdown gives the supervisors to drain by default. */
const DRAIN_MS = 10_000;
/** Past the stop's deadline, how long the supervisors not yet drained have, together, to release their resources. */
export const CLOSE_GRACE_MS = 300;

/**
 * The actor system of a running server: the root actor, its supervisors, and their facades (the only way to them).
 */
export class ActorSystem {
  private constructor(
    private readonly root: Actor<typeof rootMachine>,
    /** every supervisor's typed facade, and the store's read facade */
    readonly facades: Facades,
    private readonly deps: SystemDeps,
  ) {}

  /**
   * Starts the supervisors in order, the store first (it opens and migrates the database). A supervisor that cannot
   * open its resource fails the start with its error, after the others were closed again.
   */
  static start(deps: SystemDeps): ActorSystem {
    const machine = rootMachine.provide({
      actors: {
        store: storeSupervisor,
        mailer: mailerSupervisor,
        sms: smsSupervisor,
        notifier: notifierSupervisor,
        replication: replicationSupervisor,
        sessions: sessionsSupervisor,
      },
    });
    const root = createActor(machine, {
      input: deps,
      systemId: 'root',
      ...(deps.inspect ? { inspect: deps.inspect } : {}),
    });
    let reads: StoreReads | null = null;
    const system = root.system;
    const facades: Facades = {
      stores: facade(system, 'store', storeHandlers),
      mailer: facade(system, 'mailer', mailerHandlers),
      sms: facade(system, 'sms', smsHandlers),
      notifier: facade(system, 'notifier', notifierHandlers),
      replication: facade(system, 'replication', replicationHandlers),
      sessions: facade(system, 'sessions', sessionsHandlers),
      get reads(): StoreReads {
        if (!reads) throw new Error('the store has not opened the database');
        return reads;
      },
    };
    provideEnvironment(system, {
      facades,
      provideReads: (r) => {
        reads = r;
      },
    });
    // A supervisor that failed is reported through the snapshot below, not as an unhandled error.
    root.subscribe({ error: () => undefined });
    root.start();
    const snapshot = root.getSnapshot();
    if (snapshot.status === 'error') throw snapshot.error;
    return new ActorSystem(root, facades, deps);
  }

  /** Each supervisor's actor status (`active` while it runs), for readiness. */
  supervisorStatuses(): Record<string, string> {
    return Object.fromEntries(this.supervisorStates().map((s) => [s.id, s.state]));
  }

  /** The root actor's status (`active` until the system stopped). */
  get status(): string {
    return this.root.getSnapshot().status;
  }

  /** The live actors, for the debug endpoint: one entry per supervisor, their children only counted. */
  async describe(): Promise<ActorInfo[]> {
    const supervisors = this.supervisorStates();
    const byState: Record<string, number> = {};
    for (const s of supervisors) byState[s.state] = (byState[s.state] ?? 0) + 1;
    const out: ActorInfo[] = [
      {
        systemId: 'root',
        status: this.root.getSnapshot().status,
        queueLength: 0,
        running: 0,
        handled: 0,
        failed: 0,
        children: { total: supervisors.length, byState },
      },
    ];
    for (const id of SUPERVISORS) {
      const ref = actorOf(this.root.system, id);
      const status: string = statusOf(ref);
      const stats =
        status === 'active'
          ? await ask<SupervisorStats>(ref, CONTROL.stats, {}, { timeoutMs: 1000 }).catch(() => null)
          : null;
      out.push({
        systemId: id,
        status,
        queueLength: stats?.queued ?? 0,
        running: stats?.running ?? 0,
        handled: stats?.handled ?? 0,
        failed: stats?.failed ?? 0,
        children: stats?.children ?? { total: 0, byState: {} },
      });
    }
    return out;
  }

  /** A page of the actors below `id` (`root` or a supervisor); undefined when there is no such actor. */
  async children(id: string, offset: number, limit: number): Promise<ChildPage | undefined> {
    if (id === 'root') {
      const all = this.supervisorStates();
      return { total: all.length, children: all.slice(offset, offset + limit) };
    }
    if (!(SUPERVISORS as readonly string[]).includes(id)) return undefined;
    const ref = actorOf(this.root.system, id);
    if (statusOf(ref) !== 'active') return { total: 0, children: [] };
    return ask<ChildPage>(ref, CONTROL.children, { offset, limit }, { timeoutMs: 1000 });
  }

  private supervisorStates(): { id: string; state: string }[] {
    return SUPERVISORS.map((id) => ({ id, state: statusOf(actorOf(this.root.system, id)) }));
  }

  /**
   * Gives up on every request still awaited by its caller (a shutdown's deadline has passed): each caller is answered
   * SupervisorClosedError (an HTTP request waiting on one is answered 503 by its route), and the work each started is
   * aborted (a mail being sent is cut off, not delivered late).
   */
  abandon(): void {
    const replies = repliesOf(this.root.system);
    if (replies.size > 0)
      this.deps.log.warn(
        { requests: replies.size },
        'stopping: the deadline passed; work still under way was abandoned',
      );
    replies.abortAll(new SupervisorClosedError('the server'));
  }

  /**
   * Ordered shutdown: each supervisor finishes its queue and releases its resource, the store last, until `until`
   * (Date.now() time; default in 10 s), one deadline for them all. At the deadline what is still under way is
   * abandoned; the supervisors not yet drained get CLOSE_GRACE_MS more, together, to release their resources, and are
   * then stopped all the same (their resources released): the database is always closed. Never rejects.
   */
  async stop(opts: { until?: number } = {}): Promise<void> {
    const until = opts.until ?? Date.now() + DRAIN_MS;
    try {
      for (const id of [...SUPERVISORS].reverse()) {
        const ref = actorOf(this.root.system, id);
        if (statusOf(ref) !== 'active') continue;
        try {
          await ask(ref, CONTROL.drain, {}, { deadline: Date.now() < until ? until : until + CLOSE_GRACE_MS });
        } catch (error) {
          if (error instanceof DeadlineExceededError) {
            this.deps.log.warn(
              { supervisor: id, until: new Date(until).toISOString() },
              'shutdown: a supervisor did not drain in time; its work is cut off',
            );
            // What is left would hold up the supervisors after this one, which it may be waiting on: cut off now.
            this.abandon();
          } else {
            this.deps.log.error({ supervisor: id, err: error }, 'shutdown: a supervisor failed to drain');
          }
        }
      }
    } finally {
      // What is still under way is aborted, and every supervisor not yet closed (one that did not drain in time)
      // releases its resource now: the database included.
      this.abandon();
      this.root.stop();
    }
  }
}
