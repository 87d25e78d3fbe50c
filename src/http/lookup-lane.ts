/**
 * The fast lane of `POST /_matrix/identity/v2/lookup`: answered on Node's request event, before fastify.
 *
 * Why: a one-hash lookup is the request an identity server answers most, and its own work (a token check, one
 * indexed read, a small JSON answer) is smaller than fastify's request pipeline around it (bench/README.md, "Code
 * shaped by measurements", has the figures). It is a performance module: its contract is to answer exactly as the
 * fastify route does (test/lookup-lane-contract.test.ts), app-wide hooks included.
 *
 * What it takes: only that method on exactly that path (no query string), with a JSON body (or none) of a declared
 * length within the body limit, while the app is not closing. Everything else (a token in the query string, a form
 * or chunked body, OPTIONS, a too large body) goes to fastify untouched, whose route for the same path answers it.
 * Both run the same functions, `accountForToken` and `v2Lookup`, so a request gets the same answer either way, and
 * this lane adds what the app adds to every answer: CORS headers, the request log line, the route's metrics. Its
 * requests are read and answered together at the end of the event loop's turn (answer-batch.ts says why).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import proxyAddr from '@fastify/proxy-addr';

import type { HttpRouteMetrics, Metrics } from '../metrics/metrics.js';
import { AnswerBatch } from './answer-batch.js';
import { nextRequestId, type Logger } from '../log.js';
import { CORS_HEADERS, logFailure, toMatrixError, type RequestLine } from './app.js';
import { accountForToken, bearerToken } from './auth.js';
import { V2_PREFIX, type AppContext } from './context.js';
import type { MatrixError } from './errors.js';
import { parseJsonBody } from './json-body.js';
import { JSON_TYPE, v2Lookup } from './routes/lookup.js';

export const V2_LOOKUP_PATH = `${V2_PREFIX}/lookup`;

/**
 * The hooks fastify runs for `POST /_matrix/identity/v2/lookup` on the client app (the app-wide ones and the route's
 * own), by stage, and what the lane does in their place. test/lookup-lane-contract.test.ts holds this list against
 * the route's hooks: a hook added later to the app or to this route fails it until the lane does that hook's work
 * too and it is listed here. The request log line is fastify's log controller, not a hook; the same test compares
 * the lines.
 */
export const LANE_DOES_THE_WORK_OF: Readonly<Record<string, readonly string[]>> = {
  onRequest: [
    'CORS headers and a refused query string (app.ts): the lane writes CORS_HEADERS and takes no query string',
    "the route's auth (auth.ts): the lane calls accountForToken with the route's requirement, 'terms'",
  ],
  onResponse: [
    "clearing the request deadline's timer (app.ts): a lookup makes no deadline",
    'counting answers no route matched (app.ts): every answer of the lane matched its route',
    "the route's metrics (app.ts): the lane records its answers under the same route and method",
  ],
};

/**
 * The headers of every answer, as fastify's carry them, flat (name, value, …: Node stores them without building an
 * object); the last value is the answer's content-length.
 */
const ANSWER_HEADERS: readonly string[] = ['content-type', JSON_TYPE, ...CORS_HEADERS, 'content-length', ''];

export interface LookupLaneOptions {
  ctx: AppContext;
  /** the listener's logger; default the server's */
  log?: Logger;
  /** the app's body limit: larger bodies are fastify's to refuse */
  bodyLimit: number;
  /** whose X-Forwarded-For is believed (the app's setting), for the logged address */
  trustProxy: string[] | false;
  metrics?: Metrics;
}

/** Takes a request (answering it) or leaves it to fastify (returns false, nothing read or written). */
export type RequestLane = (req: IncomingMessage, res: ServerResponse) => boolean;

export function lookupLane(opts: LookupLaneOptions): RequestLane {
  const { ctx, bodyLimit } = opts;
  const log = opts.log ?? ctx.log;
  const trust = opts.trustProxy ? proxyAddr.compile(opts.trustProxy) : null;
  const routeMetrics: HttpRouteMetrics | undefined = opts.metrics?.httpRoute(V2_LOOKUP_PATH, 'POST');
  // The level is set once, from the config, at start-up.
  const infoLogged = log.isLevelEnabled('info');
  const timed = routeMetrics !== undefined || infoLogged;

  const batch = new AnswerBatch();

  /** One answer: status and JSON body, written with the others of this turn (answer-batch.ts), then logged. */
  function send(
    req: IncomingMessage,
    res: ServerResponse,
    started: number,
    status: number,
    body: string | Buffer,
    extra?: Record<string, string>,
  ): void {
    const headers = ANSWER_HEADERS.slice();
    headers[headers.length - 1] = String(typeof body === 'string' ? Buffer.byteLength(body) : body.length);
    if (extra) for (const [name, value] of Object.entries(extra)) headers.push(name, value);
    batch.add(res, status, headers, body, (error) => written(req, started, status, error));
  }

  /** The log line and metrics the app gives every request, once its answer is written. */
  function written(req: IncomingMessage, started: number, status: number, error: unknown): void {
    if (error !== undefined) log.error({ err: error, url: V2_LOOKUP_PATH }, 'answer not written');
    if (started < 0) return;
    const ms = performance.now() - started;
    routeMetrics?.record(status, ms / 1000);
    if (!infoLogged) return;
    const line: RequestLine = { method: 'POST', url: V2_LOOKUP_PATH, status, ms: Math.round(ms), ip: clientIp(req) };
    // The id fastify gives the requests it answers, from the same counter.
    log.info({ reqId: nextRequestId(), ...line }, 'request');
  }

  function sendError(req: IncomingMessage, res: ServerResponse, started: number, error: unknown): void {
    const matrix: MatrixError = toMatrixError(error);
    if (matrix.status >= 500) logFailure(log, error, matrix, V2_LOOKUP_PATH);
    send(req, res, started, matrix.status, JSON.stringify(matrix.toJSON()), matrix.headers);
  }

  function clientIp(req: IncomingMessage): string | undefined {
    return trust ? proxyAddr(req, trust) : req.socket.remoteAddress;
  }

  /**
   * Answers at the end of the turn that read the request (see the handler below): the token first, as fastify's auth
   * hook does (an unauthenticated request is refused whatever its body), then the body and the lookup. A body still
   * arriving (a large one comes in several reads) is collected as it comes, then answered.
   */
  async function answer(
    req: IncomingMessage,
    res: ServerResponse,
    started: number,
    token: string | undefined,
  ): Promise<void> {
    try {
      await accountForToken(ctx, token, 'terms');
      if (req.complete) {
        const body = req.read() as Buffer | null;
        send(req, res, started, 200, await v2Lookup(ctx, body === null ? undefined : parseJsonBody(body)));
        return;
      }
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => void reply(req, res, started, Buffer.concat(chunks)));
    } catch (error) {
      sendError(req, res, started, error);
    }
  }

  /** The answer to a whole body that arrived in several reads. */
  async function reply(req: IncomingMessage, res: ServerResponse, started: number, body: Buffer): Promise<void> {
    try {
      send(req, res, started, 200, await v2Lookup(ctx, parseJsonBody(body)));
    } catch (error) {
      sendError(req, res, started, error);
    }
  }

  return (req, res) => {
    if (req.method !== 'POST' || req.url !== V2_LOOKUP_PATH) return false;
    const { headers } = req;
    if (headers['transfer-encoding'] !== undefined) return false;
    const length = headers['content-length'];
    if (length !== undefined && !(Number(length) <= bodyLimit)) return false;
    const type = headers['content-type'];
    if (type !== undefined && !type.startsWith('application/json')) return false;

    // Timing is only read when someone looks at it (the info log or the metrics).
    const started = timed ? performance.now() : -1;
    const token = bearerToken(headers.authorization);
    // Not read now: by the end of this turn a small body has arrived whole and is taken from the request's buffer in
    // one read, without switching the stream to flowing mode (two listeners, a resume, and two ticks per request).
    batch.beforeWrite(() => answer(req, res, started, token));
    return true;
  };
}
