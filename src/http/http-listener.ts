/**
 * The Node HTTP(S) servers of one listener, with what every listener needs against slow and abusive clients and for
 * an orderly stop:
 * - deadlines: the headers within `headers_timeout_seconds` of the request's first byte, the whole request within
 *   `request_timeout_seconds` (a body sent a byte at a time included), an idle keep-alive connection closed after
 *   `keepalive_timeout_seconds`; a request past its deadline is answered 408 and its connection closed
 *   (http/client-errors.ts);
 * - connection caps (http/connection-limits.ts);
 * - a request answered before its body arrived has the rest read and dropped, so the client reads the answer
 *   (http/discard-body.ts);
 * - stop: no new connections, requests under way finish until a deadline, and those still running then are answered
 *   503 with Retry-After; requests that arrive meanwhile on open connections are answered 503 at once.
 */
import type { FastifyServerFactory } from 'fastify';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { RequestTimeouts } from '../config/types.js';
import type { Logger } from '../log.js';
import { CORS_HEADERS } from './app.js';
import { clientErrorAnswer } from './client-errors.js';
import { ConnectionGate, type ConnectionLimits } from './connection-limits.js';
import { discardRest } from './discard-body.js';
import { errors } from './errors.js';
import type { RequestLane } from './fast-lane.js';
import { PendingAnswers } from './pending-answers.js';

/** The config's defaults, for apps made without a listener of their own (tests). */
const DEFAULT_TIMEOUTS: RequestTimeouts = { headersMs: 10_000, requestMs: 30_000, keepAliveMs: 65_000 };

/** After the answers at the deadline are written, how long they may take to leave before the connections are cut. */
const FLUSH_MS = 250;

interface HttpListenerOptions {
  /** `client`, `internal`, `replication`, `metrics`: in log lines */
  name: string;
  log: Logger;
  timeouts?: RequestTimeouts;
  /** connection caps; none when absent (the listener name is taken from `name`) */
  limits?: Omit<ConnectionLimits, 'listener'>;
  /** CORS headers on the answers written here (503 while stopping, parser errors); default true */
  cors?: boolean;
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

export class HttpListener {
  readonly name: string;
  private readonly log: Logger;
  private readonly timeouts: RequestTimeouts;
  private readonly cors: boolean;
  private readonly gate: ConnectionGate | null;
  private readonly servers: http.Server[] = [];
  /** answers not yet written: the requests a stop waits for */
  private readonly inFlight = new PendingAnswers();
  /** called when the last pending answer is written */
  private readonly idleWaiters = new Set<() => void>();
  private accepting = true;
  private acceptFailures = 0;
  private acceptLoggedAt = -Infinity;
  private stopping: Promise<void> | null = null;
  /** every answer's 'close' listener: one function, not a closure per request (`this` is the answer) */
  private readonly answerClosed: (this: ServerResponse) => void;

  constructor(opts: HttpListenerOptions) {
    this.name = opts.name;
    this.log = opts.log;
    this.timeouts = opts.timeouts ?? DEFAULT_TIMEOUTS;
    this.cors = opts.cors !== false;
    this.gate = opts.limits ? new ConnectionGate({ listener: opts.name, ...opts.limits }, opts.log) : null;
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the listener, beside the answer Node gives as `this`
    const listener = this;
    this.answerClosed = function (this: ServerResponse) {
      listener.closed(this);
    };
  }

  /** fastify's `serverFactory`: each server it asks for (two for `localhost`) is one of this listener's. */
  serverFactory(lane?: RequestLane): FastifyServerFactory {
    return (handler) => {
      const app: Handler = handler;
      return this.setUp(
        http.createServer(
          this.serverOptions(),
          this.handler(lane ? (req, res) => lane(req, res) || app(req, res) : app),
        ),
      );
    };
  }

  /** An HTTPS server of this listener (the replication listener's, which asks for client certificates). */
  httpsServer(tls: https.ServerOptions, handler: Handler): https.Server {
    return this.setUp(https.createServer({ ...tls, ...this.serverOptions() }, this.handler(handler)));
  }

  private serverOptions(): http.ServerOptions {
    const { headersMs, requestMs, keepAliveMs } = this.timeouts;
    return {
      headersTimeout: headersMs,
      requestTimeout: requestMs,
      keepAliveTimeout: keepAliveMs,
      // How often Node looks for requests past their deadline (its default, 30 s, would let one run 30 s late).
      connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(headersMs / 4))),
    };
  }

  private setUp<T extends http.Server>(server: T): T {
    this.gate?.attach(server);
    server.on('clientError', clientErrorAnswer({ cors: this.cors }));
    // Once listening, an error of the server is one of accept (out of descriptors after all): logged, not a crash
    // (unhandled, Node would throw it). Before, it is listen's own to report (a port in use).
    server.once('listening', () => server.on('error', (err) => this.acceptFailed(err)));
    this.servers.push(server);
    return server;
  }

  /** The first failure to accept, then at most one line a minute. */
  private acceptFailed(err: Error): void {
    const now = Date.now();
    this.acceptFailures++;
    if (now < this.acceptLoggedAt + 60_000) return;
    this.log.error(
      { err, listener: this.name, failures: this.acceptFailures },
      'the listener could not accept connections',
    );
    this.acceptLoggedAt = now;
    this.acceptFailures = 0;
  }

  private handler(next: Handler): Handler {
    return (req, res) => {
      if (!this.accepting) {
        this.unavailable(res);
        return;
      }
      this.inFlight.add(res);
      res.on('close', this.answerClosed);
      next(req, res);
    };
  }

  /** An answer's connection closed, or its answer written (a response closes once). */
  private closed(res: ServerResponse): void {
    // Answered before the body arrived whole: the rest is read and dropped, so the client reads this answer.
    if (res.writableFinished && !res.req.complete) discardRest(res.req);
    this.inFlight.remove(res);
    if (this.inFlight.size === 0) for (const done of [...this.idleWaiters]) done();
  }

  /** 503 M_UNKNOWN with Retry-After, and the connection closed after it; a response already begun is cut. */
  private unavailable(res: ServerResponse): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const error = errors.shuttingDown();
    const body = JSON.stringify(error.toJSON());
    const headers: string[] = [
      'content-type',
      'application/json',
      'content-length',
      String(Buffer.byteLength(body)),
      'connection',
      'close',
    ];
    for (const [name, value] of Object.entries(error.headers)) headers.push(name, value);
    if (this.cors) headers.push(...CORS_HEADERS);
    // Headers a handler set already (it may still be running) would mix with these.
    for (const name of res.getHeaderNames()) res.removeHeader(name);
    res.writeHead(error.status, headers);
    res.end(body);
  }

  /** answers not yet written */
  get pending(): number {
    return this.inFlight.size;
  }

  /**
   * Stops the listener: `stopAccepting`, requests under way may finish until `until` (epoch ms), then `close`.
   * Resolves once every connection is closed, shortly after `until` at the latest.
   */
  stop(until: number): Promise<void> {
    this.stopping ??= (async () => {
      this.stopAccepting();
      await this.settled(until);
      await this.close();
    })();
    return this.stopping;
  }

  /**
   * No new connections; idle ones are closed; each request under way closes its connection after its answer, and
   * a request that still arrives on an open connection is answered 503.
   */
  stopAccepting(): void {
    if (this.accepting === false) return;
    this.accepting = false;
    for (const server of this.servers) {
      server.close();
      server.closeIdleConnections();
    }
    for (const res of this.inFlight.list()) if (!res.headersSent) res.setHeader('connection', 'close');
  }

  /** Resolves when no answer is pending, or at `at` (epoch ms). */
  settled(at: number): Promise<void> {
    return this.idleOrAt(at);
  }

  /** Answers 503 what is still under way, gives those answers a moment to leave, then cuts every connection. */
  async close(): Promise<void> {
    this.stopAccepting();
    const left = this.inFlight.list();
    if (left.length > 0) {
      this.log.warn(
        { listener: this.name, requests: left.length },
        'stopping: requests still under way at the deadline are answered 503',
      );
      for (const res of left) this.unavailable(res);
      await this.idleOrAt(Date.now() + FLUSH_MS);
    }
    for (const server of this.servers) server.closeAllConnections();
  }

  /** Resolves when no answer is pending, or at `at`. */
  private idleOrAt(at: number): Promise<void> {
    if (this.inFlight.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.idleWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, at - Date.now()));
      this.idleWaiters.add(done);
    });
  }
}
