/**
 * The mail worker: the SMTP connection pool (smtp-pool.ts) on a thread of its own, so that the SMTP exchanges (TLS
 * included) never run on the event loop's thread, which answers HTTP meanwhile. worker-transport.ts starts it and
 * speaks to it in batches, one message per turn of each side's loop. It runs as a script of its own
 * (src/util/worker-script.ts): built beside the bundle, compiled on first use when the server runs from its sources.
 */
import { createRequire } from 'node:module';
import { parentPort, workerData } from 'node:worker_threads';
import type SMTPConnection from 'nodemailer/lib/smtp-connection';
import { Cancellation } from '../actors/request-context.js';
import { SmtpPool, type SentInfo, type SmtpPoolOptions } from './smtp-pool.js';

export interface MailWorkerData {
  /** nodemailer's SMTPConnection module, by its resolved path (the server's working directory is the operator's) */
  smtpConnection: string;
  pool: Omit<SmtpPoolOptions, 'SmtpConnection'>;
}

/** To the worker: sends, aborts of sends, and the last message, close. */
export type ToWorker =
  | { id: number; envelope: { from: string; to: string[] }; raw: string; messageId?: string }
  | { abort: number }
  | { close: true };

/** nodemailer's error, as it crosses the thread: the fields that say what failed. */
export interface ErrorFields {
  name: string;
  message: string;
  code?: string;
  responseCode?: number;
  originalCode?: string;
  command?: string;
}

/** From the worker: each send's answer. */
export type FromWorker = { id: number; info: SentInfo } | { id: number; error: ErrorFields };

function fields(e: unknown): ErrorFields {
  const o = (e ?? {}) as Record<string, unknown>;
  const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
  return {
    name: str(o.name) ?? 'Error',
    message: str(o.message) ?? String(e),
    code: str(o.code),
    responseCode: typeof o.responseCode === 'number' ? o.responseCode : undefined,
    originalCode: str(o.originalCode),
    command: str(o.command),
  };
}

function run(port: NonNullable<typeof parentPort>, data: MailWorkerData): void {
  const load = createRequire(data.smtpConnection);
  const pool = new SmtpPool({ ...data.pool, SmtpConnection: load(data.smtpConnection) as typeof SMTPConnection });
  const running = new Map<number, Cancellation>();

  // Answers go back together at the end of the worker's turn: one message (and one wake-up of the event loop's
  // thread) for all the sends that ended in it.
  let answers: FromWorker[] = [];
  const flush = (): void => {
    const out = answers;
    answers = [];
    port.postMessage(out);
  };
  const answer = (a: FromWorker): void => {
    running.delete(a.id);
    if (answers.push(a) === 1) setImmediate(flush);
  };

  const take = (m: ToWorker): void => {
    if ('abort' in m) {
      running.get(m.abort)?.abort(new Error('the caller gave up'));
      return;
    }
    if ('close' in m) {
      pool.close();
      process.exit(0);
    }
    const cancel = new Cancellation();
    running.set(m.id, cancel);
    pool.sendMail({ envelope: m.envelope, raw: m.raw, messageId: m.messageId, cancel }).then(
      (info) => answer({ id: m.id, info }),
      (error: unknown) => answer({ id: m.id, error: fields(error) }),
    );
  };
  port.on('message', (batch: ToWorker[]) => {
    for (const m of batch) take(m);
  });
}

if (parentPort) run(parentPort, workerData as MailWorkerData);
