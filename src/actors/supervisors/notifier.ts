import type { SystemDeps } from '../deps.js';
import { supervisor } from '../supervisor.js';

/** Owns homeserver callbacks: the outbox of onbind notifications and their retries. */
export const notifierSupervisor = supervisor('notifier', {
  concurrency: 8,
  open: (deps: SystemDeps) => ({ deps }),
  handlers: {},
});
