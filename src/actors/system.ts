import { createActor, fromCallback, setup, type Actor, type AnyActorRef } from 'xstate';
import { ask } from './ask.js';
import type { SystemDeps } from './deps.js';
import type { ChildActor, SupervisorStats } from './supervisor.js';
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

export interface ActorInfo {
  systemId: string;
  status: string;
  queueLength: number;
  running: number;
  handled: number;
  failed: number;
  /** the actors a supervisor runs below it: the tree's leaves */
  children: ChildActor[];
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

  /** The live actors, for the debug endpoint. */
  async describe(): Promise<ActorInfo[]> {
    const out: ActorInfo[] = [
      {
        systemId: 'root',
        status: this.root.getSnapshot().status,
        queueLength: 0,
        running: 0,
        handled: 0,
        failed: 0,
        children: SUPERVISORS.map((id) => ({ id, state: this.root.system.get(id)?.getSnapshot().status ?? 'stopped' })),
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
        children: stats?.children ?? [],
      });
    }
    return out;
  }

  /** Ordered shutdown: each supervisor finishes its queue and releases its resource, the store last. */
  async stop(timeoutMs = 10_000): Promise<void> {
    for (const id of [...SUPERVISORS].reverse()) {
      const ref = this.root.system.get(id) as AnyActorRef | undefined;
      if (ref?.getSnapshot().status === 'active') await ask(ref, { type: 'DRAIN' }, timeoutMs);
    }
    this.root.stop();
  }
}
