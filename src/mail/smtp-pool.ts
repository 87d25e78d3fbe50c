/**
 * SMTP connections kept open to the mail server, each carrying one message at a time, on nodemailer's
 * SMTPConnection (the SMTP exchange, STARTTLS, AUTH, dot-stuffing, its timeouts and error codes). nodemailer's
 * Mailer and pool are not used: for every message they build a MIME tree and a stream pipeline, which a message
 * that is already raw needs neither of, and which cost twice the SMTP exchange itself.
 *
 * What the pool promises:
 * - a send answers once: the server accepted the message, or an error with nodemailer's fields (code,
 *   responseCode, originalCode, command) saying what failed;
 * - a cancelled send answers at once; if its exchange had started, the connection is closed under it first, so a
 *   send that answered failure leaves nothing running that could still deliver it; a connection still opening that
 *   no waiting send needs any more is closed too, so a server that never greets holds up no later send;
 * - a message whose first byte never left (the server had closed a connection it had been idle on) goes out once
 *   more on a new connection instead of failing;
 * - a connection idle for `idleMs` is closed (QUIT), and one the server refused a message on is reset (RSET) and
 *   kept; any other failure closes it.
 */
import { Readable } from 'node:stream';
import type SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { SMTPConnectionOptions } from 'nodemailer/lib/smtp-connection';

/** What a send's caller may cancel it with (the mail worker's own, one per send it runs). */
export interface SendCancel {
  readonly aborted: boolean;
  readonly reason: Error | undefined;
  /** calls `listener` on abort; returns what detaches it */
  onAbort(listener: (reason: Error) => void): () => void;
}

/** A message as sender.ts hands it over: an envelope and the whole RFC 5322 text. */
export interface OutgoingMail {
  envelope: { from: string; to: string[] };
  raw: string;
  /** the message's Message-ID, given back in the answer */
  messageId?: string;
  /** aborts the send (its connection closed if the exchange had started) */
  cancel?: SendCancel;
}

/** The server's answer to a message that went through. */
export interface SentInfo {
  messageId: string;
  accepted: string[];
  rejected: string[];
}

export interface SmtpPoolOptions {
  /** nodemailer's SMTPConnection class (the mail worker loads nodemailer by its resolved path) */
  SmtpConnection: typeof SMTPConnection;
  /** SMTPConnection's options: host, port, TLS, EHLO name, timeouts */
  connection: SMTPConnectionOptions;
  /** logged in with when the server offers AUTH */
  auth?: { user: string; pass: string };
  /** connections open at once, so messages in flight at once */
  maxConnections: number;
  /** a connection with no message for this long is closed */
  idleMs: number;
}

/** nodemailer's error, as far as the pool reads it */
interface SmtpError extends Error {
  code?: string;
  responseCode?: number;
}

/** A failure nodemailer reports for a lost connection: temporary, so sender.ts tries again. */
const connectionLost = (reason: string): SmtpError => Object.assign(new Error(reason), { code: 'ECONNECTION' });

/** The connection, not the message, failed (nodemailer's `isTransientError`). */
const transient = (e: SmtpError): boolean =>
  e.responseCode === 421 || e.code === 'ECONNECTION' || e.code === 'ESOCKET' || e.code === 'ETIMEDOUT';

/** How long the pool keeps to fewer connections after the server refused one more. */
const LIMIT_HOLD_MS = 60_000;

interface Send {
  readonly mail: OutgoingMail;
  readonly resolve: (info: SentInfo) => void;
  readonly reject: (error: Error) => void;
  detach?: () => void;
  /** the message's first byte was handed to the connection */
  started: boolean;
  /** tried again once already, its first connection having been lost before the message went */
  requeued: boolean;
  settled: boolean;
}

interface Connection {
  readonly smtp: SMTPConnection;
  state: 'opening' | 'idle' | 'busy' | 'gone';
  /** messages it carried (a reused connection may have been dropped by the server meanwhile) */
  sent: number;
  /** the send whose exchange runs on it */
  current?: Send;
  idleTimer?: NodeJS.Timeout;
}

export class SmtpPool {
  /** sends waiting for a connection, oldest first */
  private queue: Send[] = [];
  private readonly connections = new Set<Connection>();
  /** ready connections, the most recently used last (so the others can reach their idle time) */
  private readonly idle: Connection[] = [];
  private opening = 0;
  private closed = false;
  /**
   * Connections it may open: maxConnections, or fewer for a while after the server refused one more than it had
   * (servers bound the connections of a client; each refused attempt would otherwise fail a message).
   */
  private limit: number;
  private limitTimer?: NodeJS.Timeout;

  constructor(private readonly opts: SmtpPoolOptions) {
    this.limit = opts.maxConnections;
  }

  /** Connections open or opening (tests watch them come and go). */
  get size(): number {
    return this.connections.size;
  }

  sendMail(mail: OutgoingMail): Promise<SentInfo> {
    if (this.closed) return Promise.reject(connectionLost('the mail transport is closed'));
    return new Promise<SentInfo>((resolve, reject) => {
      const send: Send = { mail, resolve, reject, started: false, requeued: false, settled: false };
      const { cancel } = mail;
      if (cancel?.aborted) return reject(cancelled(cancel));
      if (cancel) send.detach = cancel.onAbort(() => this.abort(send, cancel));
      this.queue.push(send);
      this.pump();
    });
  }

  /** Fails what waits and what is in flight, and closes every connection; later sends fail. */
  close(): void {
    this.closed = true;
    clearTimeout(this.limitTimer);
    const waiting = this.queue;
    this.queue = [];
    for (const send of waiting) settle(send, connectionLost('the mail transport is closed'));
    for (const c of [...this.connections]) {
      if (c.current) settle(c.current, connectionLost('the mail transport is closed'));
      this.drop(c);
    }
  }

  /** Hands waiting sends to ready connections, and opens connections for the rest as far as the bound allows. */
  private pump(): void {
    while (this.queue.length > 0 && this.idle.length > 0) this.dispatch(this.idle.pop()!, this.queue.shift()!);
    while (this.queue.length > this.opening && this.connections.size < this.limit) this.open();
  }

  private open(): void {
    const c: Connection = { smtp: new this.opts.SmtpConnection(this.opts.connection), state: 'opening', sent: 0 };
    this.connections.add(c);
    this.opening++;
    // An error while a message is in flight also reaches that send's callback, which decides what it means.
    c.smtp.on('error', (error: SmtpError) => {
      if (c.state === 'opening') this.openingFailed(c, error);
      else if (c.state === 'idle') this.drop(c);
    });
    c.smtp.once('end', () => this.ended(c));
    c.smtp.connect((error) => {
      if (error) return this.openingFailed(c, error);
      const { auth } = this.opts;
      if (auth && c.smtp.allowsAuth) {
        c.smtp.login({ credentials: auth }, (e) => (e ? this.openingFailed(c, e) : this.ready(c)));
      } else {
        this.ready(c);
      }
    });
  }

  /**
   * A connection could not be made. While others are up and the failure is the connection's (a server refusing one
   * more connection answers 421, or hangs up), the messages wait for those, and the pool keeps to as many as it has
   * for LIMIT_HOLD_MS. Otherwise the oldest waiting message hears why: each gets one connection's try.
   */
  private openingFailed(c: Connection, error: SmtpError): void {
    if (c.state !== 'opening') return;
    this.opening--;
    c.state = 'gone';
    const up = this.connections.size - 1 - this.opening;
    if (up > 0 && transient(error)) {
      this.limit = Math.min(this.limit, up);
      clearTimeout(this.limitTimer);
      this.limitTimer = setTimeout(() => (this.limit = this.opts.maxConnections), LIMIT_HOLD_MS).unref();
    } else {
      const send = this.queue.shift();
      if (send) settle(send, error);
    }
    this.drop(c);
  }

  private ready(c: Connection): void {
    if (c.state !== 'opening') return;
    this.opening--;
    this.release(c);
  }

  private dispatch(c: Connection, send: Send): void {
    c.state = 'busy';
    c.current = send;
    const reused = c.sent > 0;
    const { raw } = send.mail;
    // A stream rather than the string, only to learn whether the message began to leave.
    const message = new Readable({
      read() {
        send.started = true;
        this.push(raw);
        this.push(null);
      },
    });
    // SMTPConnection keeps its state of the exchange (refusals included) on the envelope it is given: a copy each time
    const { from, to } = send.mail.envelope;
    c.smtp.send({ from, to: [...to] }, message, (error, info) => {
      c.sent++;
      c.current = undefined;
      // cancelled meanwhile: the connection was closed under it
      if (send.settled) return;
      if (!error) {
        settle(send, null, {
          messageId: send.mail.messageId ?? '',
          accepted: info.accepted.map(String),
          rejected: info.rejected.map(String),
        });
        this.release(c);
        return;
      }
      if (reused && !send.started && !send.requeued && transient(error)) {
        send.requeued = true;
        this.queue.unshift(send);
        this.drop(c);
        // (the connection may have ended before this answer, so its end did not look at the queue)
        this.pump();
        return;
      }
      settle(send, error);
      // Refused by the server, the connection itself being fine: its session is reset and it is used again.
      if (
        (error.code === 'EENVELOPE' || error.code === 'EMESSAGE') &&
        error.responseCode !== 421 &&
        !c.smtp.destroyed
      ) {
        c.smtp.reset((e) => (e ? this.drop(c) : this.release(c)));
      } else {
        this.drop(c);
      }
    });
  }

  /** Ready for the next message. */
  private release(c: Connection): void {
    if (c.state === 'gone') return;
    if (this.closed) return this.drop(c);
    c.state = 'idle';
    this.idle.push(c);
    if (c.idleTimer) c.idleTimer.refresh();
    else c.idleTimer = setTimeout(() => this.idleTimeUp(c), this.opts.idleMs).unref();
    this.pump();
  }

  private idleTimeUp(c: Connection): void {
    if (c.state !== 'idle') return;
    this.unidle(c);
    c.state = 'gone';
    c.smtp.quit();
  }

  /**
   * The send cancelled: out of the queue, or its connection closed under it. A connection still opening that no
   * waiting send needs any more is closed too, the oldest first: it is the one most likely hung (a server that never
   * greets), and the next send would otherwise wait for it rather than open its own.
   */
  private abort(send: Send, cancel: SendCancel): void {
    if (send.settled) return;
    const at = this.queue.indexOf(send);
    if (at !== -1) this.queue.splice(at, 1);
    settle(send, cancelled(cancel));
    // (scans of at most maxConnections, only when a send is cancelled)
    const running = [...this.connections].find((c) => c.current === send);
    if (running) this.drop(running);
    if (this.opening > this.queue.length) {
      const unneeded = [...this.connections].find((c) => c.state === 'opening');
      if (unneeded) this.drop(unneeded);
    }
  }

  /** Closes `c` and forgets it (here, as SMTPConnection emits no 'end' for a connection that had already ended). */
  private drop(c: Connection): void {
    if (c.state === 'opening') this.opening--;
    this.unidle(c);
    c.state = 'gone';
    c.smtp.close();
    this.ended(c);
  }

  private ended(c: Connection): void {
    if (!this.connections.delete(c)) return;
    if (c.state === 'opening') this.opening--;
    this.unidle(c);
    c.state = 'gone';
    clearTimeout(c.idleTimer);
    // A send in flight is answered by SMTPConnection with what ended it, sometimes after the end (a pipelined
    // envelope's replies). Only a close of ours leaves it unanswered, and every such close answers it first.
    if (!this.closed) this.pump();
  }

  private unidle(c: Connection): void {
    if (c.state !== 'idle') return;
    const at = this.idle.indexOf(c);
    if (at !== -1) this.idle.splice(at, 1);
  }
}

function settle(send: Send, error: Error | null, info?: SentInfo): void {
  if (send.settled) return;
  send.settled = true;
  send.detach?.();
  if (error) send.reject(error);
  else send.resolve(info!);
}

/** The send's caller gave up: sender.ts reports it as out of time, whatever this says. */
function cancelled(cancel: SendCancel): Error {
  return Object.assign(new Error(`the send was cancelled: ${cancel.reason?.message ?? 'no reason given'}`), {
    code: 'EABORT',
  });
}
