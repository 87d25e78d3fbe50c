import { createSmtpTransport } from '../../mail/transport.js';
import type { SystemDeps } from '../deps.js';
import { supervisor } from '../supervisor.js';

/** Owns the SMTP transport: nothing else talks to the mail server. */
export const mailerSupervisor = supervisor('mailer', {
  concurrency: 8,
  open: (deps: SystemDeps) => ({ transport: createSmtpTransport(deps.config.email), deps }),
  close: ({ transport }) => transport.close(),
  handlers: {},
});
