import type { SystemDeps } from '../deps.js';
import { supervisor } from '../supervisor.js';

/** Owns replication: one actor per peer, each with its TLS agent and cursor. */
export const replicationSupervisor = supervisor('replication', {
  concurrency: 1,
  open: (deps: SystemDeps) => ({ peers: deps.config.peers, deps }),
  handlers: {},
});
