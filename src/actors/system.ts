import { createActor, fromCallback, setup, type Actor, type AnyActorRef } from 'xstate';
import { ask } from './ask.js';
import type { SystemDeps } from './deps.js';
import { CLOSE_GRACE_MS, type ChildPage, type ChildSummary, type DrainReport, type SupervisorStats } from './supervisor.js';
import { mailerSupervisor } from './supervisors/mailer.js';
import { notifierSupervisor } from './supervisors/notifier.js';
import { replicationSupervisor } from './supervisors/replication.js';
import { sessionsSupervisor } from './supervisors/sessions.js';
import { smsSupervisor } from './supervisors/sms.js';
import { storeSupervisor } from './supervisors/store.js';

/** Start order. Shutdown walks it backwards, so the store, which everything else writes through, stops last. */
export const SUPERVISORS = ['store', 'mailer', 'sms', 'notifier', 'replication', 'sessions'] as const;
export type SupervisorId = (typeof SUPERVISORS)[number];

const placeholder = fromCallback<{ type: string }, SystemDeps>(() => undefined);

/**
 * The root actor: it invokes every supervisor under its systemId. Supervisors' logic is provided by
 * `startSystem`, so the machine itself stays pure and exports cleanly.
 */
export const rootMachine = setup({
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

/** A supervisor that did not stop cleanly, and how. */
export interface StopReport extends DrainReport {
  id: SupervisorId;
}

export interface ActorInfo {
  systemId: string;
  status: string;
  queueLength: number;
  running: number;
  handled: number;
  failed: number;
  /** the actors it runs below it, counted per state (a page of them: `children()`) */
  children: ChildSummary;
}

export class ActorSystem {
  private constructor(readonly root: Actor<typeof rootMachine>) {}

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
    const root = createActor(machine, { input: deps, systemId: 'root', ...(deps.inspect ? { inspect: deps.inspect } : {}) });
    root.start();
    return new ActorSystem(root);
  }

  get(id: SupervisorId): AnyActorRef {
    const ref = this.root.system.get(id) as AnyActorRef | undefined;
    if (!ref) throw new Error(`no supervisor ${id}`);
    return ref;
  }

  /** Each supervisor's actor status (`active` while it runs), for readiness. */
  supervisorStatuses(): Record<string, string> {
    return Object.fromEntries(this.supervisorStates().map((s) => [s.id, s.state]));
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
      const ref = this.root.system.get(id) as AnyActorRef | undefined;
      const status = ref?.getSnapshot().status ?? 'stopped';
      const stats =
        status === 'active' ? await ask<SupervisorStats>(ref, { type: 'STATS' }, 1000).catch(() => null) : null;
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
    const ref = this.root.system.get(id) as AnyActorRef | undefined;
    if (ref?.getSnapshot().status !== 'active') return { total: 0, children: [] };
    return ask<ChildPage>(ref, { type: 'CHILDREN', offset, limit }, 1000);
  }

  private supervisorStates(): { id: string; state: string }[] {
    return SUPERVISORS.map((id) => ({ id, state: this.root.system.get(id)?.getSnapshot().status ?? 'stopped' }));
  }

  /**
   * Every supervisor gives up on what it has queued or running, and takes no more: for a shutdown whose deadline has
   * passed, so that requests waiting on them are answered (503) before the listeners close.
   */
  abandon(): void {
    for (const id of SUPERVISORS) {
      const ref = this.root.system.get(id) as AnyActorRef | undefined;
      if (ref?.getSnapshot().status === 'active') ref.send({ type: 'ABANDON' });
    }
  }

  /**
   * Ordered shutdown: each supervisor finishes its queue and releases its resource, the store last, until `until`
   * (epoch ms; default in 10 s). What a supervisor still holds then is abandoned and its resource closed all the
   * same, so the stop ends shortly after `until` whatever hangs (a mail server that never answers). Resolves with
   * what each supervisor left undone; never rejects.
   */
  async stop(opts: { until?: number } = {}): Promise<StopReport[]> {
    const until = opts.until ?? Date.now() + 10_000;
    const reports: StopReport[] = [];
    for (const id of [...SUPERVISORS].reverse()) {
      const ref = this.root.system.get(id) as AnyActorRef | undefined;
      if (ref?.getSnapshot().status !== 'active') continue;
      // The supervisor answers by `until` plus the close grace; the ask's own limit only guards against one that does
      // not answer at all.
      const limit = Math.max(0, until + CLOSE_GRACE_MS - Date.now()) + 50;
      const report = await ask<DrainReport>(ref, { type: 'DRAIN', until }, limit).catch(
        (error: unknown): DrainReport => ({ abandoned: 0, closed: false, closeError: error }),
      );
      if (report.abandoned > 0 || !report.closed || report.closeError !== undefined) reports.push({ id, ...report });
    }
    this.root.stop();
    return reports;
  }
}
