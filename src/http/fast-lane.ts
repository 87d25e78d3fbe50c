/**
 * The client listener's fast lane: a few routes answered on Node's request event, before fastify.
 *
 * Why: for the requests an identity server answers most (a one-hash lookup, a requestToken a client repeats), the
 * route's own work (a token check, one indexed read, a small JSON answer) is smaller than fastify's request pipeline
 * around it (bench/README.md, "Code shaped by measurements", has the figures). It is a performance module: its
 * contract is to answer exactly as the fastify routes do (test/fast-lane-contract.test.ts), app-wide hooks included.
 *
 * What it takes: a POST on exactly one of its routes' paths (no query string), with a JSON body (or none) of a
 * declared length within the body limit, while the app is not closing. Everything else (a query string, a form or
 * chunked body, OPTIONS, a too large body) goes to fastify untouched, whose route for the same path answers it. Both
 * run the same functions (the route's `answer`, and `accountForToken` for its auth), so a request gets the same
 * answer either way, and the lane adds what the app adds to every answer: CORS headers, the request log line, the
 * route's metrics, the end of the request's deadline. Its requests are read and answered together at the end of the
 * event loop's turn (answer-batch.ts says why).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyRequest } from 'fastify';
import proxyAddr from '@fastify/proxy-addr';

import type { RequestContext } from '../actors/request-context.js';
import type { SydentConfig } from '../config/types.js';
import type { HttpRouteMetrics, Metrics } from '../metrics/metrics.js';
import type { Account } from '../store/accounts.js';
import { AnswerBatch } from './answer-batch.js';
import { nextRequestId, type Logger } from '../log.js';
import { CORS_HEADERS, logFailure, toMatrixError, type RequestLine } from './app.js';
import { accountForToken, accountForTokenNow, bearerToken, type AuthRequirement } from './auth.js';
import type { AppContext } from './context.js';
import { requestDeadline, startDeadline, type DeadlineKind, type RequestDeadline } from './deadline.js';
import type { MatrixError } from './errors.js';
import { parseJsonBody } from './json-body.js';

/** The content type of every JSON answer, as fastify writes it. */
export const JSON_TYPE = 'application/json; charset=utf-8';

/**
 * The hooks fastify runs for a lane route on the client app (the app-wide ones and the route's own), by stage, and
 * what the lane does in their place; a route with `auth` also has AUTH_HOOK. test/fast-lane-contract.test.ts holds
 * these lists against each route's hooks: a hook added later to the app or to a lane route fails it until the lane
 * does that hook's work too and it is listed here. The request log line is fastify's log controller, not a hook; the
 * same test compares the lines.
 */
export const LANE_DOES_THE_WORK_OF: Readonly<Record<string, readonly string[]>> = {
  onRequest: [
    'CORS headers and a refused query string (app.ts): the lane writes CORS_HEADERS and takes no query string',
  ],
  onResponse: [
    "ending the request's deadline (app.ts): the lane clears the timer of a deadline its route made",
    'counting answers no route matched (app.ts): every answer of the lane matched its route',
    "the route's metrics (app.ts): the lane records its answers under the same route and method",
  ],
};

/** The onRequest hook of a route that declares `auth`, and what the lane does in its place. */
export const AUTH_HOOK = "the route's auth (auth.ts): the lane calls accountForToken with the route's requirement";

/** What a lane route's answer knows of its request, as the fastify route has it from the request. */
export interface LaneRequest {
  /** the client's address (X-Forwarded-For when the proxy is trusted), as fastify's `req.ip` */
  ip: string;
  /** the authenticated account, on a route that declares `auth` */
  account: Account | undefined;
  /** the request's deadline (deadline.ts), made on first use; the same one for every call */
  deadline(kind: DeadlineKind): RequestContext;
}

/** A fastify request as a lane route's answer sees it: for the fastify route that answers what the lane leaves. */
export function laneRequestOf(req: FastifyRequest, config: SydentConfig): LaneRequest {
  return { ip: req.ip, account: req.account, deadline: (kind) => requestDeadline(req, config, kind) };
}

/** A route the lane answers. */
export interface LaneRoute {
  /** the whole path, as the fastify route's */
  path: string;
  /** the fastify route's `config.auth` */
  auth?: AuthRequirement;
  /**
   * The 200 answer's JSON text for the body (parsed as fastify's parser does), or its promise; throws (or rejects
   * with) the error to answer. An answer made on the spot is written without waiting for a promise.
   */
  answer(body: unknown, request: LaneRequest): string | Buffer | Promise<string | Buffer>;
}

/** Where an endpoint group is mounted: its API and that API's prefix. */
export interface ApiMount {
  api: 'v1' | 'v2';
  prefix: string;
}

/**
 * One route in the lane under each mount, `path` after its prefix: authenticated under v2 (`terms`, as the v2
 * routes declare), and the JSON text of what `answer` resolves to.
 */
export function laneRoutesAt(
  mounts: readonly ApiMount[],
  path: string,
  answer: (body: unknown, request: LaneRequest) => Promise<unknown>,
): LaneRoute[] {
  return mounts.map(({ api, prefix }) => ({
    path: `${prefix}${path}`,
    ...(api === 'v2' ? { auth: 'terms' as const } : {}),
    answer: async (body, request) => JSON.stringify(await answer(body, request)),
  }));
}

export interface FastLaneOptions {
  ctx: AppContext;
  /** the listener's logger; default the server's */
  log?: Logger;
  /** the app's body limit: larger bodies are fastify's to refuse */
  bodyLimit: number;
  /** whose X-Forwarded-For is believed (the app's setting), for the client's address */
  trustProxy: string[] | false;
  metrics?: Metrics;
}

/** Takes a request (answering it) or leaves it to fastify (returns false, nothing read or written). */
export type RequestLane = (req: IncomingMessage, res: ServerResponse) => boolean;

/**
 * The headers of every answer, as fastify's carry them, flat (name, value, …: Node stores them without building an
 * object); the last value is the answer's content-length.
 */
const ANSWER_HEADERS: readonly string[] = ['content-type', JSON_TYPE, ...CORS_HEADERS, 'content-length', ''];

/** A route as the lane runs it. */
interface Lane {
  route: LaneRoute;
  metrics: HttpRouteMetrics | undefined;
}

/** A request the lane took, as its route's answer sees it. */
class LaneCall implements LaneRequest {
  account: Account | undefined = undefined;
  private made: RequestDeadline | undefined = undefined;

  constructor(
    readonly ip: string,
    private readonly config: SydentConfig,
  ) {}

  deadline(kind: DeadlineKind): RequestContext {
    this.made ??= startDeadline(this.config, kind);
    return this.made.context;
  }

  /** The request is answered: its deadline's timer goes (as the app's onResponse hook does it). */
  release(): void {
    if (this.made) clearTimeout(this.made.timer);
  }
}

export function fastLane(opts: FastLaneOptions, routes: readonly LaneRoute[]): RequestLane {
  const { ctx, bodyLimit } = opts;
  const log = opts.log ?? ctx.log;
  const trust = opts.trustProxy ? proxyAddr.compile(opts.trustProxy) : null;
  const lanes = new Map<string, Lane>(
    routes.map((route) => [route.path, { route, metrics: opts.metrics?.httpRoute(route.path, 'POST') }]),
  );
  // The level is set once, from the config, at start-up.
  const infoLogged = log.isLevelEnabled('info');
  const timed = opts.metrics !== undefined || infoLogged;

  const batch = new AnswerBatch();

  /** One answer: status and JSON body, written with the others of this turn (answer-batch.ts), then logged. */
  function send(
    lane: Lane,
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
    batch.add(res, status, headers, body, (error) => written(lane, req, started, status, error));
  }

  /** The log line and metrics the app gives every request, once its answer is written. */
  function written(lane: Lane, req: IncomingMessage, started: number, status: number, error: unknown): void {
    const url = lane.route.path;
    if (error !== undefined) log.error({ err: error, url }, 'answer not written');
    if (started < 0) return;
    const ms = performance.now() - started;
    lane.metrics?.record(status, ms / 1000);
    if (!infoLogged) return;
    const line: RequestLine = { method: 'POST', url, status, ms: Math.round(ms), ip: clientIp(req) };
    // The id fastify gives the requests it answers, from the same counter.
    log.info({ reqId: nextRequestId(), ...line }, 'request');
  }

  function sendError(lane: Lane, req: IncomingMessage, res: ServerResponse, started: number, error: unknown): void {
    const matrix: MatrixError = toMatrixError(error);
    if (matrix.status >= 500) logFailure(log, error, matrix, lane.route.path);
    send(lane, req, res, started, matrix.status, JSON.stringify(matrix.toJSON()), matrix.headers);
  }

  function clientIp(req: IncomingMessage): string | undefined {
    return trust ? proxyAddr(req, trust) : req.socket.remoteAddress;
  }

  /** The route's answer to the whole body, or its error: written now if it is made now, else when it settles. */
  function reply(
    lane: Lane,
    call: LaneCall,
    req: IncomingMessage,
    res: ServerResponse,
    started: number,
    body: Buffer | null,
  ): Promise<void> | undefined {
    let answered: string | Buffer | Promise<string | Buffer>;
    try {
      // An empty body is none, as fastify's parser has it.
      answered = lane.route.answer(body === null ? undefined : parseJsonBody(body), call);
    } catch (error) {
      sendError(lane, req, res, started, error);
      call.release();
      return undefined;
    }
    if (typeof answered === 'string' || Buffer.isBuffer(answered)) {
      send(lane, req, res, started, 200, answered);
      call.release();
      return undefined;
    }
    return answered
      .then(
        (text) => send(lane, req, res, started, 200, text),
        (error: unknown) => sendError(lane, req, res, started, error),
      )
      .finally(() => call.release());
  }

  /**
   * Answers at the end of the turn that read the request (see the handler below): the token first, as fastify's auth
   * hook does (an unauthenticated request is refused whatever its body), then the body and the route's answer. Where
   * the store reads synchronously (ImmediateReads) the token is checked on the spot, and a route that answers on the
   * spot is written in this turn with no promise at all. A body still arriving (a large one comes in several reads)
   * is collected as it comes, then answered.
   */
  function answer(
    lane: Lane,
    req: IncomingMessage,
    res: ServerResponse,
    started: number,
    token: string | undefined,
  ): Promise<void> | undefined {
    // as fastify's req.ip, which a socket already closed leaves without an address
    const call = new LaneCall(clientIp(req) ?? '', ctx.config);
    const { auth } = lane.route;
    if (!auth) return withBody(lane, call, req, res, started);
    const immediate = ctx.reads.immediate;
    if (immediate === undefined) {
      return accountForToken(ctx, token, auth).then(
        (account) => {
          call.account = account;
          return withBody(lane, call, req, res, started);
        },
        (error: unknown) => sendError(lane, req, res, started, error),
      );
    }
    try {
      call.account = accountForTokenNow(ctx, immediate, token, auth);
    } catch (error) {
      sendError(lane, req, res, started, error);
      return undefined;
    }
    return withBody(lane, call, req, res, started);
  }

  /** The route's answer once the whole body is here. */
  function withBody(
    lane: Lane,
    call: LaneCall,
    req: IncomingMessage,
    res: ServerResponse,
    started: number,
  ): Promise<void> | undefined {
    if (req.complete) return reply(lane, call, req, res, started, req.read() as Buffer | null);
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => void reply(lane, call, req, res, started, Buffer.concat(chunks)));
    return undefined;
  }

  return (req, res) => {
    if (req.method !== 'POST') return false;
    const lane = lanes.get(req.url ?? '');
    if (lane === undefined) return false;
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
    batch.beforeWrite(() => answer(lane, req, res, started, token));
    return true;
  };
}
