/**
 * Typed facades: how anything reaches a supervisor. Each supervisor exports its handler table; its facade has one
 * method per handler, named as the handler, taking the handler's payload and answering what the handler answers:
 * `facades.stores.bind({...})`, `facades.mailer.send({...})`. A wrong supervisor, method or payload does not
 * compile, and the message that goes out is plain data (src/actors/ask.ts).
 */
import type { StoreReads } from '../store/reads.js';
import { actorOf } from './actor-ref.js';
import { ask, type CallOptions } from './ask.js';
import type { AnyActorSystem } from './replies.js';
import type { Handlers } from './supervisor.js';
import type { mailerHandlers } from './supervisors/mailer.js';
import type { notifierHandlers } from './supervisors/notifier.js';
import type { replicationHandlers } from './supervisors/replication.js';
import type { sessionsHandlers } from './supervisors/sessions.js';
import type { smsHandlers } from './supervisors/sms.js';
import type { storeHandlers } from './supervisors/store.js';

type PayloadOf<H> = H extends (payload: infer P, ...rest: never[]) => unknown ? P : never;
type ResultOf<H> = H extends (...args: never[]) => infer R ? Awaited<R> : never;

/** One method per handler of `THandlers`. */
type Facade<THandlers extends Handlers<never>> = {
  readonly [K in keyof THandlers & string]: (
    payload: PayloadOf<THandlers[K]>,
    opts?: CallOptions,
  ) => Promise<ResultOf<THandlers[K]>>;
};

/** The facade of the supervisor running under `systemId`, with the methods of `handlers`. */
export function facade<THandlers extends Handlers<never>>(
  system: AnyActorSystem,
  systemId: string,
  handlers: THandlers,
): Facade<THandlers> {
  const methods: Record<string, (payload: unknown, opts?: CallOptions) => Promise<unknown>> = {};
  for (const type of Object.keys(handlers)) {
    methods[type] = (payload, opts) => ask(actorOf(system, systemId), type, payload, opts);
  }
  return methods as Facade<THandlers>;
}

/** Every supervisor's facade, built once when the system starts, and the store's read facade. */
export interface Facades {
  stores: Facade<typeof storeHandlers>;
  mailer: Facade<typeof mailerHandlers>;
  sms: Facade<typeof smsHandlers>;
  notifier: Facade<typeof notifierHandlers>;
  replication: Facade<typeof replicationHandlers>;
  sessions: Facade<typeof sessionsHandlers>;
  /** the store's typed read facade (async), handed out by the store supervisor once it has opened the database */
  readonly reads: StoreReads;
}

/** What a supervisor gets when it opens: the other supervisors, and (for the store) a way to hand out its reads. */
export interface SupervisorEnv {
  readonly facades: Facades;
  provideReads(reads: StoreReads): void;
}

const environments = new WeakMap<AnyActorSystem, SupervisorEnv>();

/** Set by ActorSystem.start before the supervisors open. */
export function provideEnvironment(system: AnyActorSystem, env: SupervisorEnv): void {
  environments.set(system, env);
}

/** A supervisor started on its own (a test) has no other supervisors to reach. */
const ALONE: SupervisorEnv = {
  get facades(): Facades {
    throw new Error('this supervisor runs outside an actor system: it has no facades');
  },
  provideReads: () => undefined,
};

export function environmentOf(system: AnyActorSystem): SupervisorEnv {
  return environments.get(system) ?? ALONE;
}
