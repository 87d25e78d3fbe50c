import type { SystemDeps } from '../deps.js';
import { supervisor } from '../supervisor.js';

/** Owns the SMS provider client and the per-number and per-country rate limits. */
export const smsSupervisor = supervisor('sms', {
  concurrency: 8,
  open: (deps: SystemDeps) => ({ config: deps.config.sms, deps }),
  handlers: {},
});
