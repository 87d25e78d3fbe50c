/**
 * The SMTP connection pool run on a worker thread of its own (mail-worker.ts): the SMTP exchanges (TLS included)
 * never run on the event loop's thread, which answers HTTP meanwhile.
 *
 * It takes `sendMail` for what sender.ts sends (an envelope, a raw message, its Message-ID, a cancellation) and
 * answers with the recipients the server accepted and refused, or nodemailer's error with the fields sender.ts reads
 * to classify it (code, responseCode, originalCode). An abort is passed on: the worker closes the connection under
 * the exchange, and the send answers only once the worker has, so a send that answered failure leaves no exchange
 * running that could still deliver. A worker that dies fails what it had in flight as a connection failure
 * (temporary: sender.ts tries again) and the next send starts a new one. The worker starts with the first mail and,
 * while no send is in flight, keeps no reference on the event loop.
 */
import { createRequire } from 'node:module';
import type { Worker } from 'node:worker_threads';

import { WorkerCalls } from '../util/worker-calls.js';
import { workerScript } from '../util/worker-script.js';
import type { FromWorker, MailWorkerData, ToWorker } from './mail-worker.js';
import type { OutgoingMail, SentInfo, SmtpPoolOptions } from './smtp-pool.js';

/** What a send gives the worker: a message as sender.ts hands it over (its cancellation stays on this side). */
export type WorkerMail = OutgoingMail;

/** The pool's settings, plain data (they are copied to the worker). */
export type MailPoolOptions = Omit<SmtpPoolOptions, 'SmtpConnection'>;

const mailWorkerScript = (): string =>
  workerScript(new URL('./mail-worker.ts', import.meta.url), new URL('./mail-worker.cjs', import.meta.url));

/** How long a closing worker may take to close its connections before it is stopped. */
const CLOSE_GRACE_MS = 1000;

/**
 * A worker with no mail to send for this long is ended, with its SMTP connections: an idle server holds neither the
 * thread's memory (its heap and nodemailer: 20 MB and more) nor connections the mail server would drop anyway. The
 * next mail starts a new one.
 */
export const MAIL_WORKER_IDLE_MS = 30_000;

/** A send's failure as nodemailer reports a lost connection: temporary, so sender.ts tries again. */
const connectionLost = (reason: string): Error => Object.assign(new Error(reason), { code: 'ECONNECTION' });

/** The thread and its sends in flight. */
class MailThread {
  private readonly calls: WorkerCalls<SentInfo>;
  /** when it was last busy (Date.now()): a send handed to it, or its last send in flight answered */
  lastUsed = Date.now();
  /** what goes to the worker at the end of this turn, in one message (the worker's answers come back so too) */
  private outbox: ToWorker[] = [];
  private readonly flush = (): void => {
    const out = this.outbox;
    this.outbox = [];
    if (out.length > 0 && !this.dead) this.worker.postMessage(out);
  };

  constructor(options: MailPoolOptions, onDeath: (thread: MailThread) => void) {
    const workerData: MailWorkerData = {
      smtpConnection: createRequire(import.meta.url).resolve('nodemailer/lib/smtp-connection'),
      pool: options,
    };
    this.calls = new WorkerCalls<SentInfo>(mailWorkerScript(), {
      workerData,
      failure: (end) =>
        connectionLost(
          'error' in end
            ? `the mail worker failed: ${end.error.message}`
            : `the mail worker stopped (exit code ${end.exitCode})`,
        ),
      onDeath: () => onDeath(this),
    });
    this.worker.on('message', (answers: FromWorker[]) => {
      for (const answer of answers) {
        if ('info' in answer) this.calls.resolve(answer.id, answer.info);
        else this.calls.reject(answer.id, Object.assign(new Error(answer.error.message), answer.error));
      }
      if (this.calls.size === 0) this.lastUsed = Date.now();
    });
  }

  get worker(): Worker {
    return this.calls.worker;
  }

  get dead(): boolean {
    return this.calls.dead;
  }

  /** Sends in flight. */
  get inFlight(): number {
    return this.calls.size;
  }

  send(mail: WorkerMail): Promise<SentInfo> {
    const { cancel } = mail;
    // the abort listener comes off the caller's cancellation once the send is settled (never before this returns)
    const { id, answer } = this.calls.start(() => detach?.());
    const detach = cancel?.onAbort(() => this.post({ abort: id }));
    this.lastUsed = Date.now();
    this.post({ id, envelope: mail.envelope, raw: mail.raw, messageId: mail.messageId });
    if (cancel?.aborted) this.post({ abort: id });
    return answer;
  }

  private post(message: ToWorker): void {
    if (this.outbox.push(message) === 1) setImmediate(this.flush);
  }

  /** Closes the worker's connections and ends it: what was not handed over yet never is. */
  close(): void {
    this.outbox = [];
    this.worker.postMessage([{ close: true }]);
  }

  /** Fails every send in flight as a lost connection: nothing of them is known to have been delivered. */
  failAll(reason: string): void {
    this.calls.failAll(() => connectionLost(reason));
  }
}

export class WorkerTransport {
  private thread: MailThread | undefined;
  private closed = false;
  private idleTimer: NodeJS.Timeout | undefined;

  /**
   * `options`: the pool's settings, plain data (they are copied to the worker); `idleMs`: how long the worker may go
   * without a mail before it is ended (MAIL_WORKER_IDLE_MS).
   */
  constructor(
    private readonly options: MailPoolOptions,
    private readonly idleMs: number = MAIL_WORKER_IDLE_MS,
  ) {}

  sendMail(mail: WorkerMail): Promise<SentInfo> {
    if (this.closed) return Promise.reject(connectionLost('the mail transport is closed'));
    if (!this.thread) {
      this.thread = new MailThread(this.options, (dead) => {
        if (this.thread === dead) this.thread = undefined;
      });
      this.watchIdle(this.thread);
    }
    return this.thread.send(mail);
  }

  /**
   * Ends `thread` once it has had nothing to do for `idleMs`: one timer for the thread's life, set again for what is
   * left of the time whenever it fires early, so a send pays nothing for it. A send made after the thread was let go
   * starts a new one at once, never waiting behind the old one's end.
   */
  private watchIdle(thread: MailThread): void {
    const check = (): void => {
      if (this.thread !== thread) return;
      // a send still in flight (a slow server) counts as use: looked at again a whole idle time later
      const left = thread.inFlight > 0 ? this.idleMs : thread.lastUsed + this.idleMs - Date.now();
      if (left > 0) {
        this.idleTimer = setTimeout(check, left).unref();
        return;
      }
      this.thread = undefined;
      if (!thread.dead) thread.close();
    };
    this.idleTimer = setTimeout(check, this.idleMs).unref();
  }

  /** The worker thread, while one runs (tests stop it to see a crash handled). */
  get worker(): Worker | undefined {
    return this.thread?.worker;
  }

  /** Closes the pool's connections and ends the worker; a send still in flight fails. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.idleTimer);
    const thread = this.thread;
    this.thread = undefined;
    if (!thread || thread.dead) return;
    thread.failAll('the mail transport is closed');
    const exited = new Promise<void>((resolve) => thread.worker.once('exit', () => resolve()));
    thread.close();
    const grace = setTimeout(() => void thread.worker.terminate(), CLOSE_GRACE_MS);
    await exited;
    clearTimeout(grace);
  }
}
