import type { AnyActorRef } from 'xstate';

import { PeerUrls } from '../../replication/peer-config.js';
import { loadReplicationTls } from '../../replication/tls.js';
import { ReplicationWorker } from '../../replication/worker.js';
import { PeerReads } from '../../store/peers.js';
import type { SystemDeps } from '../deps.js';
import { call, supervisor, type AnyActorSystem } from '../supervisor.js';
import { askStore } from './store.js';

interface ReplicationResource {
  worker: ReplicationWorker;
}

/** Requests to the replication supervisor; all answered at once (they only poke the peer actors). */
export const replicationHandlers = {
  /** a local bind or unbind was committed: every idle peer pushes what is new */
  WAKE: (_e: Record<string, never>, r: ReplicationResource) => {
    r.worker.wake();
  },
  /** end the backoff of one peer (or all): they push now. Answers the names retried. */
  RETRY: (e: { name?: string }, r: ReplicationResource) => r.worker.retry(e.name),
  /** every peer: state, cursor, backlog, last error, next retry (the debug endpoint) */
  VIEW: (_e: Record<string, never>, r: ReplicationResource) => r.worker.view(),
};

export const askReplication = call<typeof replicationHandlers>();

/**
 * Owns replication: one actor per peer (the peer machine), each with its TLS agent and cursor. Off, with a
 * warning, when `replication.https.certfile` is unset or unreadable (as Sydent).
 */
export const replicationSupervisor = supervisor('replication', {
  concurrency: 1,
  open: (deps: SystemDeps, system: AnyActorSystem): ReplicationResource => {
    const loaded = loadReplicationTls(deps.config);
    const store = () => system.get('store') as AnyActorRef;
    const worker = new ReplicationWorker({
      reads: new PeerReads(deps.db),
      store: { markSent: (name, lastId, now) => askStore(store(), 'PEER_SENT', { name, lastId, now }) },
      serverName: deps.identity.serverName,
      signingKey: deps.identity.key,
      tls: loaded.ok ? loaded.tls : null,
      ...(loaded.ok ? {} : { disabledReason: loaded.reason }),
      urls: new PeerUrls(deps.config, (message) => deps.log.warn(message)),
      now: () => deps.clock.now(),
      log: deps.log,
      onTransition: (from, to) => deps.metrics?.transitions.inc({ machine: 'peer', from, to }),
    });
    deps.metrics?.gauge(
      'sydent_replication_backlog',
      'Associations of our replication log a peer has not acknowledged yet, by peer',
      ['peer'],
      () => Object.fromEntries(worker.view().peers.map((p) => [p.name, p.backlog])),
    );
    // after the other supervisors have started: a push asks the store
    setImmediate(() => worker.start());
    return { worker };
  },
  close: ({ worker }) => worker.drain(),
  children: ({ worker }) => worker.view().peers.map((p) => ({ id: `peer:${p.name}`, state: p.state })),
  handlers: replicationHandlers,
  immediate: ['WAKE', 'RETRY', 'VIEW'],
});
