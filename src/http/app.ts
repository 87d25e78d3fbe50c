import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type onResponseHookHandler,
} from 'fastify';
import FindMyWay from 'find-my-way';
import { ActorStoppedError, DeadlineExceededError } from '../actors/ask.js';
import { SupervisorClosedError } from '../actors/supervisor.js';
import { nextRequestId, redactUrl, type Logger } from '../log.js';
import { StoreUnavailableError } from '../store/unavailable.js';
import type { HttpRouteMetrics, Metrics } from '../metrics/metrics.js';
import { DISCARD_LIMIT } from './discard-body.js';
import { releaseRequestDeadline } from './deadline.js';
import { errors, MatrixError } from './errors.js';
import { HttpListener } from './http-listener.js';
import { parseJsonBody } from './json-body.js';
import { lazySerializers, lazyValidators } from './lazy-schemas.js';
import type { RequestLane } from './fast-lane.js';
import { parseParams } from './params.js';

/** Sydent's MAX_REQUEST_SIZE. */
export const BODY_LIMIT = 512 * 1024;

const CORS_ORIGIN = ['access-control-allow-origin', '*'] as const;
const CORS_METHODS = ['access-control-allow-methods', 'GET, POST, PUT, DELETE, OPTIONS'] as const;
const CORS_ALLOW_HEADERS = [
  'access-control-allow-headers',
  'Origin, X-Requested-With, Content-Type, Accept, Authorization',
] as const;
const CORS_NAMES: ReadonlySet<string> = new Set([CORS_ORIGIN[0], CORS_METHODS[0], CORS_ALLOW_HEADERS[0]]);
/** The CORS headers of every answer, as a flat name, value, name, value… list (for a fast lane's writeHead). */
export const CORS_HEADERS: readonly string[] = [...CORS_ORIGIN, ...CORS_METHODS, ...CORS_ALLOW_HEADERS];

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD'] as const;

declare module 'fastify' {
  interface FastifyContextConfig {
    /** the level of the route's request lines: `debug` for what is polled (health, metrics scrapes); default info */
    requestLog?: 'debug';
  }
}

interface AppOptions {
  log: Logger;
  /** counts and times every request by route */
  metrics?: Metrics;
  /** addresses or CIDRs whose X-Forwarded-For is believed; false trusts nobody */
  trustProxy?: string[] | false;
  bodyLimit?: number;
  /**
   * Requests it takes are answered before fastify sees them (http/fast-lane.ts); the rest, and every request once
   * the app is closing, go to fastify.
   */
  lane?: RequestLane;
  /** CORS headers on every answer (default); false for a listener no web page may use (the internal one) */
  cors?: boolean;
  /**
   * The listener's servers: deadlines, connection caps, the orderly stop (http/http-listener.ts); by default one with
   * the default deadlines and no caps.
   */
  listener?: HttpListener;
}

/**
 * A fastify app with the rules every listener shares: CORS on every response (unless `cors: false`), OPTIONS answered on every
 * route, JSON errors with errcode and error (404/405 M_UNRECOGNIZED included), bodies parsed as JSON whatever
 * their content type says, and request logs with secrets redacted.
 */
export function createApp(opts: AppOptions): FastifyInstance {
  // Set by preClose: from then on the lane leaves every request to fastify, which answers 503 while it closes.
  let closing = false;
  const cors = opts.cors !== false;
  const listener = opts.listener ?? new HttpListener({ name: 'http', log: opts.log, cors });
  const lane = opts.lane;
  const app = Fastify({
    loggerInstance: withRedactedRequests(opts.log),
    logController: new RedactingLogController(),
    // The listener answers parser errors on each of its servers (fastify's handler would be on its first one only).
    clientErrorHandler: () => undefined,
    // Errors of the router itself (a path that is not valid percent-encoding), answered before any hook has run.
    frameworkErrors: (error, _req, reply) => {
      if (cors) for (let i = 0; i < CORS_HEADERS.length; i += 2) reply.header(CORS_HEADERS[i]!, CORS_HEADERS[i + 1]);
      sendError(reply, toMatrixError(error));
    },
    routerOptions: { querystringParser: parseQuery },
    // One counter for every listener: ids are unique in the process's log, whichever listener answered.
    genReqId: nextRequestId,
    bodyLimit: opts.bodyLimit ?? BODY_LIMIT,
    trustProxy: opts.trustProxy && opts.trustProxy.length > 0 ? opts.trustProxy : false,
    return503OnClosing: true,
    // No type coercion: a string is not an array of one string, and `true` is not "true". Fields that Sydent
    // accepted in several types (send_attempt) are parsed by their handlers. allErrors lists every missing field.
    // Our schemas are constants the tests exercise: checking each against the meta-schema at start-up (a compile of
    // the meta-schema per listener) buys nothing at run time.
    ajv: {
      customOptions: {
        coerceTypes: false,
        removeAdditional: false,
        allErrors: true,
        allowUnionTypes: true,
        validateSchema: false,
      },
    },
    // fastify's own compilers, run on each route's first request rather than at start-up (http/lazy-schemas.ts)
    schemaController: { compilersFactory: { buildValidator: lazyValidators, buildSerializer: lazySerializers } },
    forceCloseConnections: 'idle',
    serverFactory: listener.serverFactory(lane ? (req, res) => !closing && lane(req, res) : undefined),
  });
  if (lane) {
    app.addHook('preClose', (done) => {
      closing = true;
      done();
    });
  }

  // The routes that exist, whatever their method: tells a wrong method (405) from an unknown path (404).
  const known = FindMyWay({ ignoreTrailingSlash: false });
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const method of methods) {
      if (method === 'OPTIONS' || !METHODS.includes(method as (typeof METHODS)[number])) continue;
      try {
        known.on(method as (typeof METHODS)[number], route.url, () => undefined, { url: route.url });
      } catch {
        // the same path registered twice for a method (GET's implicit HEAD): already known
      }
    }
  });

  // CORS on every answer, errors included (unless `cors: false`). A callback hook, not an async one: no promise per
  // request. Then a query string that parseQuery refused is answered, before any route hook (auth) reads it;
  // unknown paths stay 404.
  app.addHook('onRequest', (req, reply, done) => {
    if (cors) {
      reply.header(CORS_ORIGIN[0], CORS_ORIGIN[1]);
      reply.header(CORS_METHODS[0], CORS_METHODS[1]);
      reply.header(CORS_ALLOW_HEADERS[0], CORS_ALLOW_HEADERS[1]);
    }
    const refused = (req.query as RefusedQuery | undefined)?.[QUERY_REFUSED];
    if (refused && !req.is404) return done(refused);
    done();
  });

  app.addHook('onResponse', (req, _reply, done) => {
    releaseRequestDeadline(req);
    done();
  });

  const metrics = opts.metrics;
  if (metrics) installRequestMetrics(app, metrics, (path) => routeOf(known, path));

  installBodyParsers(app);

  app.setNotFoundHandler(async (req, reply) => {
    const path = req.url.split('?', 1)[0] ?? '/';
    const allowed = METHODS.filter((m) => known.find(m, path) !== null);
    if (allowed.length === 0) throw errors.unrecognized();
    if (req.method === 'OPTIONS') return reply.code(200).send({});
    reply.header('allow', [...allowed, 'OPTIONS'].join(', '));
    throw errors.methodNotAllowed(req.method);
  });

  app.setErrorHandler(async (error: FastifyError | MatrixError, req, reply) => {
    const matrix = toMatrixError(error);
    // fastify closes the connection after a body too large, which resets it under a client still writing the body:
    // the listener reads and drops the rest instead (http/discard-body.ts), up to a bound past which it does close.
    if (
      (error as FastifyError).code === 'FST_ERR_CTP_BODY_TOO_LARGE' &&
      !(Number(req.headers['content-length']) > DISCARD_LIMIT)
    ) {
      reply.removeHeader('connection');
    }
    if (matrix.status >= 500) logFailure(req.log, error, matrix, redactUrl(req.url));
    // A header the route set could not be written (a stored link with a line break): the error goes out without it.
    if (HEADER_ERRORS.has((error as FastifyError).code)) {
      for (const name of Object.keys(reply.getHeaders())) if (!CORS_NAMES.has(name)) reply.removeHeader(name);
    }
    return sendError(reply, matrix);
  });

  return app;
}

/** Node's refusals of a header name or value. */
const HEADER_ERRORS = new Set(['ERR_INVALID_CHAR', 'ERR_HTTP_INVALID_HEADER_VALUE', 'ERR_INVALID_HTTP_TOKEN']);

const QUERY_REFUSED = Symbol('query refused');
type RefusedQuery = { [QUERY_REFUSED]?: MatrixError };

/**
 * The router's query string parser (params.ts). It runs inside the router, where a throw would escape fastify, so a
 * refusal is left on the query object for the onRequest hook to answer.
 */
function parseQuery(text: string): Record<string, string> | RefusedQuery {
  const parsed = parseParams(text);
  return parsed.ok ? parsed.params : { [QUERY_REFUSED]: parsed.error };
}

/**
 * The app's logger, whose `req` serializer (used by fastify's own error lines) shows the URL with its secrets
 * redacted, as our request line does; fastify's would log it raw.
 */
function withRedactedRequests(log: Logger): FastifyBaseLogger {
  return log.child(
    {},
    {
      serializers: {
        req: (req: FastifyRequest) => ({ method: req.method, url: redactUrl(req.url), remoteAddress: req.ip }),
      },
    },
  );
}

/**
 * The log line of a 5xx answer. An error we answer on purpose (a MatrixError: the mail server refused, a peer is
 * down) is a warning without a stack trace; anything else is a bug, logged at error with its stack.
 */
export function logFailure(log: FastifyBaseLogger | Logger, error: unknown, matrix: MatrixError, url: string): void {
  // The store logs its cause once, when it starts (src/store/health.ts): not once per request it refuses.
  if (error instanceof StoreUnavailableError)
    log.debug({ status: matrix.status, cause: error.reason, url }, 'request failed');
  else if (error instanceof MatrixError || isShutdownError(error))
    log.warn({ status: matrix.status, errcode: matrix.errcode, error: matrix.message, url }, 'request failed');
  else log.error({ err: error, url }, 'request failed');
}

/** The route pattern a path belongs to, whatever the method (for OPTIONS, which no route declares). */
function routeOf(known: ReturnType<typeof FindMyWay>, path: string): string | null {
  for (const method of METHODS) {
    const found = known.find(method, path);
    if (found) return (found.store as { url: string }).url;
  }
  return null;
}

/**
 * Counts and times every answer by route pattern (never the URL: URLs carry sids and tokens, and would explode the
 * label set) and method. Each route gets its own onResponse hook holding its counters, so nothing is looked up per
 * request; answers of no route (404, or a request refused before routing) count as `unmatched`, except a CORS
 * preflight (OPTIONS), which counts under the route of its path.
 */
function installRequestMetrics(
  app: FastifyInstance,
  metrics: Metrics,
  routeOfPath: (path: string) => string | null,
): void {
  app.addHook('onRoute', (route) => {
    // By method as received: a route may answer several (and GET's implicit HEAD route is registered on its own).
    const byMethod = Object.create(null) as Record<string, HttpRouteMetrics>;
    const url = route.url;
    const hook: onResponseHookHandler = (req, reply, done) => {
      const method = req.method;
      (byMethod[method] ??= metrics.httpRoute(url, method)).record(reply.statusCode, reply.elapsedTime / 1000);
      done();
    };
    // A new array, never a push: fastify copies a GET route's options for its HEAD route, which gets its own hook.
    route.onResponse = [...hookList(route.onResponse), hook];
  });
  const unmatched = Object.create(null) as Record<string, HttpRouteMetrics>;
  app.addHook('onResponse', (req, reply, done) => {
    if (req.is404) {
      const method = req.method;
      const route = method === 'OPTIONS' ? routeOfPath(req.url.split('?', 1)[0] ?? '/') : null;
      const target =
        route === null
          ? (unmatched[method] ??= metrics.httpRoute('unmatched', method))
          : metrics.httpRoute(route, method);
      target.record(reply.statusCode, reply.elapsedTime / 1000);
    }
    done();
  });
}

/** A route option's hooks (one function, a list, or none) as a list. */
export function hookList<T>(hooks: T | T[] | undefined): T[] {
  if (hooks === undefined) return [];
  return Array.isArray(hooks) ? hooks : [hooks];
}

/**
 * One log line per request, with tokens, secrets and addresses taken out of the URL; fastify's own lines would
 * log the raw URL.
 */
class RedactingLogController extends LogController {
  override incomingRequest(): void {}
  override routeNotFound(): void {}

  override requestCompleted(error: Error | null | undefined, req: FastifyRequest, reply: FastifyReply): void {
    const level = req.routeOptions.config?.requestLog ?? 'info';
    // Below the configured level (sydent's default is WARNING) there is nothing to build.
    if (!error && !levelEnabled(req.log, level)) return;
    const line: RequestLine = {
      method: req.method,
      url: redactUrl(req.url),
      status: reply.statusCode,
      ms: Math.round(reply.elapsedTime),
      ip: req.ip,
    };
    logCompleted(req.log, line, error, level);
  }
}

/** What the log says of each answered request (the URL already redacted). */
export interface RequestLine {
  method: string;
  url: string;
  status: number;
  ms: number;
  ip: string | undefined;
}

/** The request log line: at info (or the route's `requestLog` level), or at error when the response itself failed. */
function logCompleted(
  log: FastifyBaseLogger | Logger,
  line: RequestLine,
  error?: Error | null,
  level: 'info' | 'debug' = 'info',
): void {
  if (error) log.error({ ...line, err: error }, 'request');
  else if (levelEnabled(log, level)) log[level](line, 'request');
}

function levelEnabled(log: FastifyBaseLogger | Logger, level: 'info' | 'debug'): boolean {
  const isLevelEnabled = (log as Partial<Logger>).isLevelEnabled;
  return typeof isLevelEnabled === 'function' ? isLevelEnabled.call(log, level) : true;
}

function sendError(reply: FastifyReply, error: MatrixError): FastifyReply {
  return reply.code(error.status).headers(error.headers).type('application/json').send(error.toJSON());
}

/** The actors gave up on the request, or had stopped: the server is shutting down (see ActorSystem.abandon). */
function isShutdownError(error: unknown): boolean {
  return error instanceof SupervisorClosedError || error instanceof ActorStoppedError;
}

/** Maps fastify's own failures (schemas, body parsing, limits) to the Matrix error a client understands. */
export function toMatrixError(error: unknown): MatrixError {
  if (error instanceof MatrixError) return error;
  if (isShutdownError(error)) return errors.shuttingDown();
  if (error instanceof StoreUnavailableError) return errors.unavailableFor(error.message, error.retryAfterSeconds);
  if (error instanceof DeadlineExceededError) return errors.unavailableFor('The server could not answer in time', 1);
  const err = error as FastifyError & { validation?: ValidationIssue[]; validationContext?: string };
  if (err.validation) return fromValidation(err.validation, err.validationContext ?? 'body');
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return errors.tooLarge(`Request body is larger than ${BODY_LIMIT} bytes`);
    case 'FST_ERR_BAD_URL':
      return errors.invalidParam('The request path is not valid percent-encoded UTF-8');
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return new MatrixError(414, 'M_TOO_LARGE', 'A part of the request path is too long');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return errors.notJson('Request body is not valid JSON');
    default:
      break;
  }
  if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
    return new MatrixError(err.statusCode, 'M_UNKNOWN', err.message);
  }
  return errors.unknown();
}

interface ValidationIssue {
  keyword: string;
  instancePath: string;
  params: Record<string, unknown>;
  message?: string;
}

function fromValidation(issues: ValidationIssue[], context: string): MatrixError {
  const missing = issues
    .filter((i) => i.keyword === 'required' && i.instancePath === '')
    .map((i) => String(i.params['missingProperty']));
  if (missing.length > 0) return errors.missingParams(missing);
  const first = issues[0];
  if (!first) return errors.invalidParam('Invalid request');
  if (first.instancePath === '' && first.keyword === 'type' && context === 'body') {
    return errors.notJson('Request body must be a JSON object');
  }
  const name = first.instancePath.replace(/^\//, '').replaceAll('/', '.') || context;
  return errors.invalidParam(`${name} ${first.message ?? 'is invalid'}`);
}

/** Bodies are taken as bytes and decoded strictly (json-body.ts, params.ts): never a U+FFFD for a bad byte. */
function installBodyParsers(app: FastifyInstance): void {
  app.removeAllContentTypeParsers();
  const parseJson = (_req: FastifyRequest, body: Buffer, done: (err: Error | null, value?: unknown) => void) => {
    let value: unknown;
    try {
      value = parseJsonBody(body);
    } catch (error) {
      return done(error as Error);
    }
    done(null, value);
  };
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, parseJson);
  // Legacy clients post form bodies to the session endpoints: read by the query string's rules.
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'buffer' }, (_req, body, done) => {
    const parsed = parseParams((body as Buffer).toString('latin1'));
    if (parsed.ok) done(null, parsed.params);
    else done(parsed.error);
  });
  // The spec lets clients leave out Content-Type: whatever they send is read as JSON.
  app.addContentTypeParser('*', { parseAs: 'buffer' }, parseJson);
}
