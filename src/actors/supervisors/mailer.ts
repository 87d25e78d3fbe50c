import type { Logger } from '../../log.js';
import {
  MailSendError,
  sendRawMail,
  type SendMailRequest,
  type SendMailResult,
  type SendOptions,
} from '../../mail/sender.js';
import type { Metrics } from '../../metrics/metrics.js';
import { createSmtpTransport, SMTP_CONNECTIONS, type SmtpTransportOptions } from '../../mail/transport.js';
import type { WorkerTransport } from '../../mail/worker-transport.js';
import type { SystemDeps } from '../deps.js';
import { supervisor, type RequestContext } from '../supervisor.js';

interface MailerResource {
  /** the pooled transport, made on first use */
  transport: () => WorkerTransport;
  /** the transport if it was made */
  opened: () => WorkerTransport | undefined;
  /** email.from: its addr-spec is the envelope sender */
  from: string;
  /** the mailer's own; each request brings its deadline and cancellation */
  send: Omit<SendOptions, 'deadline' | 'cancel'>;
  log: Logger;
  metrics: Metrics | undefined;
}

/**
 * `send({ to, raw })` → `{ messageId, accepted }` once the SMTP server accepted the message, or a MailSendError
 * (`permanent` says whether a retry could help). At the request's deadline (or when its caller gives up) the exchange
 * is aborted: no mail arrives later for a request answered as failed. The logic lives in src/mail/sender.ts.
 * (The email sender rate limit is the sessions supervisor's: both flows that mail run there.)
 */
export const mailerHandlers = {
  send: async (e: SendMailRequest, r: MailerResource, request: RequestContext): Promise<SendMailResult> => {
    try {
      const result = await sendRawMail(
        r.transport(),
        r.from,
        { to: e.to, raw: e.raw },
        // the mailer's options onto the request's (not a spread copy: see bench/README.md)
        Object.assign({ deadline: request.deadline, cancel: request }, r.send),
      );
      r.metrics?.emailsSent.inc();
      return result;
    } catch (err) {
      // Expected (a refusing or unreachable mail server): one warning line, no stack; the message has no address.
      const failure = err instanceof MailSendError ? err : null;
      r.log.warn(
        {
          err: failure?.message ?? String(err),
          code: failure?.code,
          responseCode: failure?.responseCode,
          attempts: failure?.attempts,
        },
        'mail: not sent',
      );
      r.metrics?.emailsFailed.inc();
      throw err;
    }
  },
};

interface MailerOptions {
  /** retry settings for sendRawMail (tests shorten the backoff) */
  send?: Omit<SendOptions, 'onRetry' | 'deadline' | 'cancel'>;
  /** transport extras (tests trust their own CA) */
  transport?: SmtpTransportOptions;
}

/** Owns the pooled SMTP transport: nothing else talks to the mail server. */
export function createMailerSupervisor(options: MailerOptions = {}) {
  return supervisor('mailer', {
    // One send per pooled connection: fewer would leave connections idle while mails wait here.
    concurrency: SMTP_CONNECTIONS,
    open: (deps: SystemDeps): MailerResource => {
      // Made with the first mail: a server that never sends one never loads nodemailer.
      let transport: WorkerTransport | undefined;
      return {
        transport: () => (transport ??= createSmtpTransport(deps.config.email, options.transport)),
        opened: () => transport,
        from: deps.config.email.from,
        log: deps.log,
        metrics: deps.metrics,
        send: {
          ...options.send,
          onRetry: (error, attempt, delayMs) =>
            deps.log.warn(
              { err: error.message, code: error.code, attempt, delayMs },
              'mail: temporary failure, retrying',
            ),
        },
      };
    },
    close: ({ opened }) => opened()?.close(),
    handlers: mailerHandlers,
  });
}

export const mailerSupervisor = createMailerSupervisor();
