import type { SystemDeps } from '../deps.js';
import { supervisor } from '../supervisor.js';

/** Owns the live 3PID validation session actors, restoring them from the store by sid. */
export const sessionsSupervisor = supervisor('sessions', {
  concurrency: 16,
  open: (deps: SystemDeps) => ({ deps }),
  handlers: {},
});
