import { Cancellation } from '../actors/request-context.js';
import type { WorkerMail } from './worker-transport.js';

/**
 * Sending one raw message over the (pooled) SMTP transport, with retries on temporary failures.
 *
 * Temporary (retried, with exponential backoff): the connection could not be made, was reset or timed out,
 * DNS failed, or the server answered 4xx (or 503, a bad command sequence that a new connection can fix).
 * Permanent (failed at once): a 5xx answer (recipient or message refused, authentication refused), a TLS
 * failure (a certificate that does not verify is a configuration problem) and anything else unexpected.
 */

export class MailSendError extends Error {
  constructor(
    message: string,
    /** true: retrying the same message will not help */
    readonly permanent: boolean,
    /** nodemailer's error code (ECONNECTION, ETIMEDOUT, EENVELOPE, …) */
    readonly code?: string,
    /** the SMTP reply code, when the server answered */
    readonly responseCode?: number,
    /** how many attempts were made */
    readonly attempts: number = 1,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'MailSendError';
  }
}

export interface SendMailRequest {
  /** the envelope recipient (RCPT TO), as given */
  to: string;
  /** the whole RFC 5322 message, CRLF line endings */
  raw: string;
}

export interface SendMailResult {
  /** the Message-ID header of `raw` (nodemailer's id when it has none) */
  messageId: string;
  /** the recipients the server accepted */
  accepted: string[];
}

/** What sends a message: the pooled transport on its worker thread (worker-transport.ts). */
export interface MailTransport {
  sendMail(mail: WorkerMail): Promise<{ messageId?: string; accepted?: unknown[]; rejected?: unknown[] }>;
}

export interface SendOptions {
  /** attempts in all, the first included; default 3 */
  attempts?: number;
  /** delay before the 2nd attempt, doubled for each further one; default 1000 ms */
  baseDelayMs?: number;
  /** how to wait; tests may pass a fake */
  sleep?: (ms: number) => Promise<void>;
  /** called before each retry */
  onRetry?: (error: MailSendError, attempt: number, delayMs: number) => void;
  /**
   * Wall-clock time (Date.now()) by which the caller needs an answer: no attempt starts after it, and one still
   * running then is aborted (its connection closed, so a message whose final dot was not sent is never delivered).
   */
  deadline?: number;
  /** the caller's cancellation (the mailer's request context): aborts the attempt under way as the deadline does */
  cancel?: Cancellation;
}

const TEMPORARY_CODES = new Set(['ECONNECTION', 'ESOCKET', 'ETIMEDOUT', 'EDNS']);
const TEMPORARY_ERRNOS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
]);

/** Node's certificate-verification and TLS protocol error codes, e.g. UNABLE_TO_VERIFY_LEAF_SIGNATURE,
 * CERT_HAS_EXPIRED, ERR_TLS_CERT_ALTNAME_INVALID, ERR_SSL_WRONG_VERSION_NUMBER */
const TLS_SETUP_FAILURE = /CERT|SIGNATURE|ALTNAME|HOSTNAME|INVALID_CA|^ERR_SSL_|^ERR_TLS_/;

interface SmtpErrorLike {
  message?: string;
  code?: string;
  responseCode?: number;
  originalCode?: string;
}

/** Whether a nodemailer error is worth retrying. */
export function isTemporaryFailure(error: unknown): boolean {
  const e = (error ?? {}) as SmtpErrorLike;
  if (typeof e.responseCode === 'number' && e.responseCode >= 400) {
    return e.responseCode < 500 || e.responseCode === 503;
  }
  // a certificate that does not verify, or TLS spoken to a server that does not (configuration, not luck)
  if ((e.originalCode && TLS_SETUP_FAILURE.test(e.originalCode)) || e.code === 'ETLS') return false;
  if (e.code && TEMPORARY_CODES.has(e.code)) return true;
  return (
    Boolean(e.code && TEMPORARY_ERRNOS.has(e.code)) || Boolean(e.originalCode && TEMPORARY_ERRNOS.has(e.originalCode))
  );
}

/**
 * SMTP servers echo the recipient in their refusals ("550 <alice@example.org>: no such user"); the message
 * reaches logs and the session's lastError on the debug endpoint, so addresses are taken out.
 */
export function withoutAddresses(text: string): string {
  return text.replace(/[^\s<>"'(),;:]+@[^\s<>"'(),;]+/g, '[address]');
}

export function toMailSendError(error: unknown, attempts: number): MailSendError {
  if (error instanceof MailSendError) return error;
  const e = (error ?? {}) as SmtpErrorLike;
  const message = withoutAddresses(typeof e.message === 'string' ? e.message : String(error));
  return new MailSendError(message, !isTemporaryFailure(error), e.code, e.responseCode, attempts, { cause: error });
}

/**
 * The addr-spec of a From value, for the envelope sender (what Python's smtplib did with Sydent's
 * `email.from`): `Matrix <noreply@example.org>` → `noreply@example.org`; a bare address is kept.
 */
export function envelopeAddress(from: string): string {
  const angle = /<([^<>]*)>\s*$/.exec(from);
  return (angle?.[1] ?? from).trim();
}

const defaultSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Sends `raw` to `to` with envelope sender `from` (reduced to its addr-spec). Resolves once the server accepted
 * it; rejects with MailSendError after a permanent failure or after the last attempt of temporary ones.
 */
export async function sendRawMail(
  transport: MailTransport,
  from: string,
  request: SendMailRequest,
  opts: SendOptions = {},
): Promise<SendMailResult> {
  const attempts = Math.max(1, opts.attempts ?? 3);
  const baseDelayMs = opts.baseDelayMs ?? 1000;
  const sleep = opts.sleep ?? defaultSleep;
  const envelope = { from: envelopeAddress(from), to: [request.to] };

  const { cut, release } = cutOff(opts.cancel, opts.deadline);
  try {
    return await sendAttempts(transport, request, envelope, cut, {
      attempts,
      baseDelayMs,
      sleep,
      onRetry: opts.onRetry,
      deadline: opts.deadline,
    });
  } finally {
    release();
  }
}

/**
 * One cancellation for the caller's and the deadline: a timer and one listener on the caller's context, no
 * AbortSignal (the transport takes a Cancellation; AbortSignal.timeout and AbortSignal.any cost several times that per
 * mail, and keep their signals until the garbage collector runs).
 */
function cutOff(
  cancel: Cancellation | undefined,
  deadline: number | undefined,
): { cut: Cancellation | undefined; release: () => void } {
  if (deadline === undefined && !cancel) return { cut: undefined, release: () => undefined };
  const cut = new Cancellation();
  const abort = () => cut.abort(cancel?.reason ?? new Error('the deadline passed'));
  const timer = deadline === undefined ? undefined : setTimeout(abort, Math.max(0, deadline - Date.now()));
  let detach: (() => void) | undefined;
  if (cancel?.aborted) abort();
  else detach = cancel?.onAbort(abort);
  return {
    cut,
    release: () => {
      clearTimeout(timer);
      detach?.();
    },
  };
}

async function sendAttempts(
  transport: MailTransport,
  request: SendMailRequest,
  envelope: { from: string; to: string[] },
  cut: Cancellation | undefined,
  opts: Pick<SendOptions, 'onRetry' | 'deadline'> & {
    attempts: number;
    baseDelayMs: number;
    sleep: (ms: number) => Promise<void>;
  },
): Promise<SendMailResult> {
  const { attempts, baseDelayMs, sleep } = opts;
  // Given to nodemailer, which otherwise makes up one of its own (the raw message goes out as it is either way).
  const messageId = headerMessageId(request.raw);
  for (let attempt = 1; ; attempt++) {
    try {
      // a message that waited in the queue past its caller's deadline is not sent at all (its timer may not have
      // fired yet: the clock says so first)
      if (cut?.aborted || (opts.deadline !== undefined && Date.now() >= opts.deadline)) throw outOfTime(attempt);
      const mail: WorkerMail = { envelope, raw: request.raw };
      if (messageId) mail.messageId = messageId;
      if (cut) mail.cancel = cut;
      const info = await transport.sendMail(mail);
      const accepted = (info.accepted ?? []).map(String);
      if (accepted.length === 0) {
        // nodemailer rejects when every recipient is refused; this is only a safety net
        throw Object.assign(new Error('the server accepted no recipient'), { code: 'EENVELOPE' });
      }
      return { messageId: messageId ?? info.messageId ?? '', accepted };
    } catch (error) {
      // Aborted (the deadline, or the caller gave up): the connection was closed under the exchange.
      const failure = cut?.aborted ? outOfTime(attempt, error) : toMailSendError(error, attempt);
      const delay = baseDelayMs * 2 ** (attempt - 1);
      const noTimeLeft = cut?.aborted === true || (opts.deadline !== undefined && Date.now() + delay >= opts.deadline);
      if (failure.permanent || attempt >= attempts || noTimeLeft) {
        throw new MailSendError(failure.message, failure.permanent, failure.code, failure.responseCode, attempt, {
          cause: error,
        });
      }
      opts.onRetry?.(failure, attempt, delay);
      await sleep(delay);
    }
  }
}

/** A temporary failure: the time was up before the mail server accepted the message. */
function outOfTime(attempts: number, cause?: unknown): MailSendError {
  return new MailSendError('the mail server did not answer in time', false, 'ETIMEDOUT', undefined, attempts, {
    cause,
  });
}

/** The Message-ID header of a raw message (first header block only, unfolded). */
export function headerMessageId(raw: string): string | null {
  const end = raw.search(/\r?\n\r?\n/);
  const head = (end === -1 ? raw : raw.slice(0, end)).replace(/\r?\n[ \t]+/g, ' ');
  const m = /^message-id:[ \t]*(.*?)[ \t]*$/im.exec(head);
  return m?.[1] || null;
}
