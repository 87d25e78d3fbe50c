import { InboundPushes, type InboundPush } from '../../replication/inbound.js';
import { PeerUrls } from '../../replication/peer-config.js';
import { loadReplicationTls } from '../../replication/tls.js';
import { ReplicationWorker } from '../../replication/worker.js';
import type { SystemDeps } from '../deps.js';
import type { SupervisorEnv } from '../facade.js';
import { supervisor, type RequestContext } from '../supervisor.js';

interface ReplicationResource {
  worker: ReplicationWorker;
  inbound: InboundPushes;
}

/** Requests to the replication supervisor. */
export const replicationHandlers = {
  /** a local bind or unbind was committed: every idle peer pushes what is new. Answers at once. */
  wake: (_e: Record<string, never>, r: ReplicationResource) => {
    r.worker.wake();
  },
  /** end the backoff of one peer (or all): they push now. Answers the names retried. */
  retry: (e: { name?: string }, r: ReplicationResource) => r.worker.retry(e.name),
  /** every peer: state, cursor, backlog, last error, next retry (the debug endpoint) */
  view: (_e: Record<string, never>, r: ReplicationResource) => r.worker.view(),
  /** a peer's push (replication listener): verified, then stored whole or refused whole */
  receivePush: (e: InboundPush, r: ReplicationResource, q: RequestContext) => r.inbound.apply(e, q),
};

/**
 * Owns replication: one actor per peer (the peer machine), each with its TLS agent and cursor, and the inbound
 * pushes. Outgoing pushes are off, with a warning, when `replication.https.certfile` is unset or unreadable (as
 * Sydent).
 */
export const replicationSupervisor = supervisor('replication', {
  concurrency: 4,
  open: (deps: SystemDeps, env: SupervisorEnv): ReplicationResource => {
    const { facades } = env;
    const loaded = deps.replicationTls ?? loadReplicationTls(deps.config);
    const worker = new ReplicationWorker({
      reads: facades.reads.peers,
      store: {
        markSent: (name, lastId, now) => facades.stores.markPeerSent({ name, lastId, now }),
        // One node on SQLite; on PostgreSQL the node holding the peer's lease pushes (src/store/pg/coordinator.ts).
        ...(deps.config.db.engine === 'postgresql'
          ? { lease: (name: string) => facades.stores.peerLease({ name }) }
          : {}),
      },
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
      async () => Object.fromEntries((await worker.view()).peers.map((p) => [p.name, p.backlog])),
    );
    // after the other supervisors have started: a push asks the store
    setImmediate(() => worker.start());
    return { worker, inbound: new InboundPushes(facades) };
  },
  close: async ({ worker, inbound }) => {
    try {
      await worker.drain();
    } finally {
      await inbound.close();
    }
  },
  children: async ({ worker }) => (await worker.view()).peers.map((p) => ({ id: `peer:${p.name}`, state: p.state })),
  handlers: replicationHandlers,
  immediate: ['wake', 'retry', 'view'],
});
