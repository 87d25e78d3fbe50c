/**
 * The pooled SMTP transport run on a worker thread of its own: nodemailer (composing the message's MIME tree,
 * the SMTP exchange, dot-stuffing, TLS) never runs on the event loop's thread, which answers HTTP meanwhile.
 *
 * It takes `sendMail` as nodemailer's transporter does for what sender.ts sends (an envelope, a raw message, its
 * Message-ID, a cancellation) and answers the same way: the accepted and rejected recipients, or nodemailer's error
 * with the fields sender.ts reads to classify it (code, responseCode, originalCode). An abort is passed on: the
 * worker aborts the exchange (its connection is closed, as in-process), and the send answers only once the worker
 * has, so a send that answered failure leaves no exchange running that could still deliver. A worker that dies
 * fails what it had in flight as a connection failure (temporary: sender.ts tries again) and the next send starts a
 * new one. The worker starts with the first mail and, while no send is in flight, keeps no reference on the event
 * loop.
 */
import { createRequire } from 'node:module';
import type { Worker } from 'node:worker_threads';

import type { Cancellation } from '../actors/request-context.js';
import { WorkerCalls } from '../util/worker-calls.js';

/** What a send gives the worker: a message as sender.ts hands it to nodemailer. */
export interface WorkerMail {
  envelope: { from: string; to: string[] };
  raw: string;
  messageId?: string;
  /** aborts the exchange (its connection closed, as nodemailer does on an abort) */
  cancel?: Cancellation;
}

/** nodemailer's answer to a send, as far as it crosses the thread. */
export interface WorkerSentInfo {
  messageId: string;
  accepted: string[];
  rejected: string[];
}

/** nodemailer's error, as it crosses the thread: the fields that say what failed. */
interface ErrorFields {
  name: string;
  message: string;
  code?: string;
  responseCode?: number;
  originalCode?: string;
  command?: string;
}

type Answer = { id: number; info: WorkerSentInfo } | { id: number; error: ErrorFields };

// Source text, not a module file (as lookup-pool.ts's): the worker starts the same way from the TypeScript sources
// and from the bundle. nodemailer is loaded by its resolved path, since the server's working directory is the
// operator's.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const nodemailer = require(workerData.nodemailer);
const transport = nodemailer.createTransport(workerData.options);
const running = new Map();
const fields = (e) => ({
  name: String((e && e.name) || 'Error'),
  message: String((e && e.message) || e),
  code: typeof (e && e.code) === 'string' ? e.code : undefined,
  responseCode: typeof (e && e.responseCode) === 'number' ? e.responseCode : undefined,
  originalCode: typeof (e && e.originalCode) === 'string' ? e.originalCode : undefined,
  command: typeof (e && e.command) === 'string' ? e.command : undefined,
});
// Answers go back together at the end of the worker's turn: one message (and one wake-up of the event loop's
// thread) for all the sends that ended in it.
let answers = [];
const flush = () => {
  const out = answers;
  answers = [];
  parentPort.postMessage(out);
};
const answer = (a) => {
  if (answers.push(a) === 1) setImmediate(flush);
};
const take = (m) => {
  if (m.abort !== undefined) {
    const controller = running.get(m.abort);
    if (controller) controller.abort();
    return;
  }
  if (m.close) {
    transport.close();
    process.exit(0);
  }
  const controller = new AbortController();
  running.set(m.id, controller);
  const mail = { envelope: m.envelope, raw: m.raw, signal: controller.signal };
  if (m.messageId) mail.messageId = m.messageId;
  transport.sendMail(mail).then(
    (info) => {
      running.delete(m.id);
      answer({
        id: m.id,
        info: {
          messageId: String(info.messageId || ''),
          accepted: (info.accepted || []).map(String),
          rejected: (info.rejected || []).map(String),
        },
      });
    },
    (error) => {
      running.delete(m.id);
      answer({ id: m.id, error: fields(error) });
    },
  );
};
parentPort.on('message', (batch) => {
  for (const m of batch) take(m);
});
`;

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
  private readonly calls: WorkerCalls<WorkerSentInfo>;
  /** when it was last busy (Date.now()): a send handed to it, or its last send in flight answered */
  lastUsed = Date.now();
  /** what goes to the worker at the end of this turn, in one message (the worker's answers come back so too) */
  private outbox: object[] = [];
  private readonly flush = (): void => {
    const out = this.outbox;
    this.outbox = [];
    if (out.length > 0 && !this.dead) this.worker.postMessage(out);
  };

  constructor(options: object, onDeath: (thread: MailThread) => void) {
    const workerData = { nodemailer: createRequire(import.meta.url).resolve('nodemailer'), options };
    this.calls = new WorkerCalls<WorkerSentInfo>(WORKER_SOURCE, {
      workerData,
      failure: (end) =>
        connectionLost(
          'error' in end
            ? `the mail worker failed: ${end.error.message}`
            : `the mail worker stopped (exit code ${end.exitCode})`,
        ),
      onDeath: () => onDeath(this),
    });
    this.worker.on('message', (answers: Answer[]) => {
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

  send(mail: WorkerMail): Promise<WorkerSentInfo> {
    const { cancel } = mail;
    // the abort listener comes off the caller's cancellation once the send is settled (never before this returns)
    const { id, answer } = this.calls.start(() => detach?.());
    const detach = cancel?.onAbort(() => this.post({ abort: id }));
    this.lastUsed = Date.now();
    this.post({ id, envelope: mail.envelope, raw: mail.raw, messageId: mail.messageId });
    if (cancel?.aborted) this.post({ abort: id });
    return answer;
  }

  private post(message: object): void {
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
   * `options`: nodemailer's SMTP transport options, plain data (they are copied to the worker); `idleMs`: how long the
   * worker may go without a mail before it is ended (MAIL_WORKER_IDLE_MS).
   */
  constructor(
    private readonly options: object,
    private readonly idleMs: number = MAIL_WORKER_IDLE_MS,
  ) {}

  sendMail(mail: WorkerMail): Promise<WorkerSentInfo> {
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
