/**
 * The client listener's fast lane (src/http/fast-lane.ts) is a performance module: its contract is to answer exactly
 * as the fastify routes do, for each of its routes (the v2 lookup, requestToken by email and by SMS under v1 and
 * v2). Two client apps are built alike, each with its own logger and metrics; one is reached through its own server,
 * where the lane sees requests first, the other through `app.routing` (fastify's request handler, without the lane).
 * The same requests go to both and must get the same status, body and headers (but the connection's own: date,
 * connection, keep-alive), the same log lines, the same metrics and the same mails and SMS sent. The hooks fastify
 * runs for each route are held against the list of hooks whose work the lane does, so an app-wide hook added later
 * fails here until the lane applies it too. Both sides run the same route functions, so the wording of each refusal
 * is pinned by the endpoints' own tests (email-inputs, msisdn-inputs, lookup-v2-errors), not here.
 */
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { createClientApi } from '../src/http/client-api.js';
import { AUTH_HOOK, LANE_DOES_THE_WORK_OF } from '../src/http/fast-lane.js';
import { V2_LOOKUP_PATH } from '../src/http/routes/lookup.js';
import { Metrics } from '../src/metrics/metrics.js';
import { emailConf } from './helpers/email.js';
import { sha256Of } from './helpers/flows.js';
import { lookupFixtureForFile } from './helpers/lookup-fixture.js';
import { phoneRequest } from './helpers/msisdn.js';
import { openMarketForFile, smtpServerForFile } from './helpers/per-file.js';
import { loopbackAllowed, openMarketConf } from './helpers/sms-providers.js';

const LOOKUP_LIMIT = 5000;

const V1_REQUEST_TOKEN = '/_matrix/identity/api/v1/validate/email/requestToken';
const V2_REQUEST_TOKEN = '/_matrix/identity/v2/validate/email/requestToken';
const V1_SMS_REQUEST_TOKEN = '/_matrix/identity/api/v1/validate/msisdn/requestToken';
const V2_SMS_REQUEST_TOKEN = '/_matrix/identity/v2/validate/msisdn/requestToken';
/** The paths the lane takes, and whether fastify's route for each declares `auth`. */
const LANE_PATHS: Array<[string, boolean]> = [
  [V2_LOOKUP_PATH, true],
  [V1_REQUEST_TOKEN, false],
  [V2_REQUEST_TOKEN, true],
  [V1_SMS_REQUEST_TOKEN, false],
  [V2_SMS_REQUEST_TOKEN, true],
];

const smtp = smtpServerForFile();
const om = openMarketForFile();
const fixture = lookupFixtureForFile(() => ({
  addressLookupLimit: LOOKUP_LIMIT,
  localpart: 'contract',
  address: 'contract@example.com',
  mxid: '@contract:hs.example',
  conf: {
    email: emailConf(smtp.port),
    general: loopbackAllowed,
    // numbers of the NANP (calling code 1) refused, for the refusal that costs nothing
    sms: openMarketConf(om, { 'smsrule.1': 'reject' }),
  },
}));

interface Side {
  app: FastifyInstance;
  base: string;
  /** the app's log, one parsed line each */
  lines: Array<Record<string, unknown>>;
  metrics: Metrics;
  close(): Promise<void>;
}

/** A client app as the server builds it, with its own log and metrics; `lane: false` bypasses the lane. */
async function clientApp(lane: boolean, prepare?: (app: FastifyInstance) => void): Promise<Side> {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino(
    { level: 'info' },
    { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) },
  );
  const metrics = new Metrics(fixture.t.server.ctx.reads);
  const app = await createClientApi({ ...fixture.t.server.ctx, metrics }, log);
  prepare?.(app);
  if (lane) {
    await app.listen({ port: 0, host: '127.0.0.1' });
    return {
      app,
      base: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`,
      lines,
      metrics,
      close: () => app.close(),
    };
  }
  await app.ready();
  const server = http.createServer((req, res) => app.routing(req, res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    app,
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    lines,
    metrics,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await app.close();
    },
  };
}

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

interface Request {
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** sent to fastify's side first (a new session: the first side creates it, the second repeats it) */
  routeFirst?: boolean;
  /** the mails the two sides send together: one for a session's send, none for a repeat */
  mails?: number;
  /** the SMS they send together, as `mails` */
  sms?: number;
}

function send(base: string, r: Request): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...r.headers };
    if (r.body !== undefined) headers['content-length'] = String(Buffer.byteLength(r.body));
    const req = http.request(
      new URL(r.path ?? V2_LOOKUP_PATH, base),
      { method: r.method ?? 'POST', headers, agent: false },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
      },
    );
    req.on('error', reject);
    if (r.body !== undefined) req.write(r.body);
    req.end();
  });
}

/** The connection's own headers, which differ between any two answers. */
const CONNECTION_HEADERS = new Set(['date', 'connection', 'keep-alive']);
const answerHeaders = (reply: Reply) =>
  Object.fromEntries(Object.entries(reply.headers).filter(([name]) => !CONNECTION_HEADERS.has(name)));

/** A log line without what differs between any two requests: time, request id, duration. */
function logLine(line: Record<string, unknown>): Record<string, unknown> {
  const { time: _time, pid: _pid, hostname: _hostname, reqId, ms: _ms, ...rest } = line;
  return { ...rest, hasReqId: reqId !== undefined };
}

/** The app's metrics but the timings (duration buckets and sums), which differ between any two requests. */
async function countedMetrics(metrics: Metrics): Promise<string[]> {
  const text = await metrics.registry.metrics();
  return text.split('\n').filter((l) => l.startsWith('sydent_') && !/_bucket\{|_sum[{ ]/.test(l));
}

/** One request to one side: the answer, the log lines it caused and the metrics after it. */
async function exchange(
  side: Side,
  r: Request,
): Promise<{ reply: Reply; log: Array<Record<string, unknown>>; metrics: string[] }> {
  const before = side.lines.length;
  const reply = await send(side.base, r);
  // Both write the request line once the answer is out, which may be after the client has it.
  await vi.waitFor(() => expect(side.lines.slice(before).some((l) => l['msg'] === 'request')).toBe(true));
  return { reply, log: side.lines.slice(before).map(logLine), metrics: await countedMetrics(side.metrics) };
}

/** What the lane leaves to fastify; it answers every other request of the lists. */
const LEFT_TO_FASTIFY = [
  'a token in the query string',
  'a form body',
  'GET',
  'PUT',
  'HEAD',
  'a CORS preflight',
  'requestToken: a brand in the query string',
  'requestToken: a form body',
  'requestToken: GET',
  'requestToken by SMS: a brand in the query string',
  'requestToken by SMS: a form body',
  'requestToken by SMS: GET',
];

const lookupBody = (addresses: string[], extra: Record<string, unknown> = {}) =>
  JSON.stringify({ addresses, algorithm: 'sha256', pepper: fixture.pepper, ...extra });
const misses = (n: number) =>
  Array.from({ length: n }, (_, i) => sha256Of(`nobody${i}@example.com`, 'email', fixture.pepper));

function requests(): Array<[string, Request]> {
  return [...lookupRequests(), ...requestTokenRequests(), ...smsRequestTokenRequests()];
}

let sessions = 0;
/** A requestToken body for a session no request has started yet. */
function newSession(extra: Record<string, unknown> = {}): string {
  sessions++;
  return JSON.stringify({
    client_secret: `contract${sessions}`,
    email: `Contract${sessions}@Example.com`,
    send_attempt: 1,
    ...extra,
  });
}

function requestTokenRequests(): Array<[string, Request]> {
  const json = { 'content-type': 'application/json' };
  const v2 = { ...json, authorization: `Bearer ${fixture.token}` };
  const v1 = (what: string, r: Request): [string, Request] => [
    `requestToken: ${what}`,
    { path: V1_REQUEST_TOKEN, ...r },
  ];
  const repeated = newSession();
  return [
    v1('a new session, the lane first', { mails: 1, headers: json, body: newSession() }),
    v1('a new session, fastify first', { mails: 1, headers: json, body: newSession(), routeFirst: true }),
    v1('a new session with a next_link', {
      mails: 1,
      headers: json,
      body: newSession({ next_link: 'https://app.example/done' }),
    }),
    v1('a new session, send_attempt a string', { mails: 1, headers: json, body: newSession({ send_attempt: '7' }) }),
    v1('a new session without a content type', { mails: 1, headers: {}, body: newSession() }),
    v1('a session started', { mails: 1, headers: json, body: repeated }),
    v1('a repeat of it', { headers: json, body: repeated }),
    v1('a repeat with a greater send_attempt', {
      mails: 1,
      headers: json,
      body: repeated.replace('"send_attempt":1', '"send_attempt":2'),
    }),
    v1('a repeat with a greater send_attempt, fastify first', {
      mails: 1,
      headers: json,
      body: repeated.replace('"send_attempt":1', '"send_attempt":3'),
      routeFirst: true,
    }),
    ['requestToken v2: a new session', { mails: 1, path: V2_REQUEST_TOKEN, headers: v2, body: newSession() }],
    ['requestToken v2: no token', { path: V2_REQUEST_TOKEN, headers: json, body: newSession() }],
    [
      'requestToken v2: an unknown token',
      { path: V2_REQUEST_TOKEN, headers: { ...json, authorization: 'Bearer nope' }, body: newSession() },
    ],
    ['requestToken v2: missing fields', { path: V2_REQUEST_TOKEN, headers: v2, body: '{}' }],
    v1('missing fields', { headers: json, body: JSON.stringify({ email: 'a@example.com' }) }),
    v1('client_secret not a string', { headers: json, body: newSession({ client_secret: 5 }) }),
    v1('email null and client_secret a list', { headers: json, body: newSession({ email: null, client_secret: [] }) }),
    v1('an invalid client_secret', { headers: json, body: newSession({ client_secret: 'a b' }) }),
    v1('an invalid email', { headers: json, body: newSession({ email: 'not an address' }) }),
    v1('a send_attempt not a number', { headers: json, body: newSession({ send_attempt: 'x' }) }),
    v1('a send_attempt out of range', { headers: json, body: newSession({ send_attempt: 2 ** 40 }) }),
    v1('a next_link not http', { headers: json, body: newSession({ next_link: 'javascript:alert(1)' }) }),
    v1('invalid JSON', { headers: json, body: '{"client_secret":' }),
    v1('an empty body', { headers: json, body: '' }),
    v1('no body at all', { headers: {} }),
    v1('a list', { headers: json, body: '[]' }),
    v1('null', { headers: json, body: 'null' }),
    v1('a NUL in the address', { headers: json, body: newSession({ email: 'a\u0000b@example.com' }) }),
    v1('bytes that are not UTF-8', {
      headers: json,
      body: Buffer.from('{"client_secret":"x","email":"\xff@example.com","send_attempt":1}', 'latin1'),
    }),
    v1('a brand in the query string', {
      mails: 1,
      path: `${V1_REQUEST_TOKEN}?brand=vector-im`,
      headers: json,
      body: newSession(),
    }),
    v1('a form body', {
      mails: 1,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `client_secret=contractform&email=form%40example.com&send_attempt=1`,
    }),
    v1('GET', { method: 'GET' }),
  ];
}

let phones = 0;
/** A requestToken body for a number no request has started a session for yet. */
function newPhoneSession(extra: Record<string, unknown> = {}): string {
  phones++;
  return JSON.stringify({ ...phoneRequest(`contractsms${phones}`, 'GB', `07700 900${100 + phones}`), ...extra });
}

function smsRequestTokenRequests(): Array<[string, Request]> {
  const json = { 'content-type': 'application/json' };
  const v2 = { ...json, authorization: `Bearer ${fixture.token}` };
  const v1 = (what: string, r: Request): [string, Request] => [
    `requestToken by SMS: ${what}`,
    { path: V1_SMS_REQUEST_TOKEN, ...r },
  ];
  const repeated = newPhoneSession();
  return [
    v1('a new session, the lane first', { sms: 1, headers: json, body: newPhoneSession() }),
    v1('a new session, fastify first', { sms: 1, headers: json, body: newPhoneSession(), routeFirst: true }),
    v1('a new session with a next_link', {
      sms: 1,
      headers: json,
      body: newPhoneSession({ next_link: 'https://app.example/done' }),
    }),
    v1('a number in international form', {
      sms: 1,
      headers: json,
      body: newPhoneSession({ phone_number: '+44 7700 900999' }),
    }),
    v1('a session started', { sms: 1, headers: json, body: repeated }),
    v1('a repeat of it', { headers: json, body: repeated }),
    v1('a repeat with a greater send_attempt', {
      sms: 1,
      headers: json,
      body: repeated.replace('"send_attempt":1', '"send_attempt":2'),
    }),
    [
      'requestToken by SMS v2: a new session',
      { sms: 1, path: V2_SMS_REQUEST_TOKEN, headers: v2, body: newPhoneSession() },
    ],
    ['requestToken by SMS v2: no token', { path: V2_SMS_REQUEST_TOKEN, headers: json, body: newPhoneSession() }],
    ['requestToken by SMS v2: missing fields', { path: V2_SMS_REQUEST_TOKEN, headers: v2, body: '{}' }],
    v1('missing fields', { headers: json, body: JSON.stringify({ country: 'GB' }) }),
    v1('country not a string', { headers: json, body: newPhoneSession({ country: 44 }) }),
    v1('phone_number null and client_secret a list', {
      headers: json,
      body: newPhoneSession({ phone_number: null, client_secret: [] }),
    }),
    v1('an invalid country', { headers: json, body: newPhoneSession({ country: 'GBR' }) }),
    v1('a phone_number too long', { headers: json, body: newPhoneSession({ phone_number: '1'.repeat(100) }) }),
    v1('a number that is none', { headers: json, body: newPhoneSession({ phone_number: '12' }) }),
    v1('a refused country', {
      headers: json,
      body: newPhoneSession({ country: 'US', phone_number: '201 555 0123' }),
    }),
    v1('an invalid client_secret', { headers: json, body: newPhoneSession({ client_secret: 'a b' }) }),
    v1('a send_attempt not a number', { headers: json, body: newPhoneSession({ send_attempt: 'x' }) }),
    v1('a next_link not http', { headers: json, body: newPhoneSession({ next_link: 'javascript:alert(1)' }) }),
    v1('invalid JSON', { headers: json, body: '{"client_secret":' }),
    v1('an empty body', { headers: json, body: '' }),
    v1('a list', { headers: json, body: '[]' }),
    v1('a brand in the query string', {
      sms: 1,
      path: `${V1_SMS_REQUEST_TOKEN}?brand=vector-im`,
      headers: json,
      body: newPhoneSession(),
    }),
    v1('a form body', {
      sms: 1,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `client_secret=contractsmsform&country=GB&phone_number=07700900998&send_attempt=1`,
    }),
    v1('GET', { method: 'GET' }),
  ];
}

function lookupRequests(): Array<[string, Request]> {
  const auth = { authorization: `Bearer ${fixture.token}` };
  const json = { ...auth, 'content-type': 'application/json' };
  return [
    ['a hit', { headers: json, body: lookupBody([fixture.hit]) }],
    ['a miss', { headers: json, body: lookupBody(misses(1)) }],
    ['no content type', { headers: auth, body: lookupBody([fixture.hit]) }],
    ['a big batch, at the limit', { headers: json, body: lookupBody([...misses(LOOKUP_LIMIT - 1), fixture.hit]) }],
    ['a batch over the limit', { headers: json, body: lookupBody(misses(LOOKUP_LIMIT + 1)) }],
    ['invalid JSON', { headers: json, body: '{"addresses": [' }],
    ['an empty body', { headers: json, body: '' }],
    ['a list', { headers: json, body: '[]' }],
    [
      'bytes that are not UTF-8',
      {
        headers: json,
        body: Buffer.from(`{"addresses":["\xff"],"algorithm":"sha256","pepper":"${fixture.pepper}"}`, 'latin1'),
      },
    ],
    ['null', { headers: json, body: 'null' }],
    ['a string', { headers: json, body: '"x"' }],
    ['a NUL in an address', { headers: json, body: lookupBody(['a\u0000b']) }],
    [
      'a lone surrogate in an address',
      {
        headers: json,
        body: `{"addresses":["\\ud800"],"algorithm":"sha256","pepper":${JSON.stringify(fixture.pepper)}}`,
      },
    ],
    [
      'nested too deep',
      {
        headers: json,
        body: `{"addresses":["a"],"algorithm":"sha256","pepper":"x","x":${'['.repeat(1000)}${']'.repeat(1000)}}`,
      },
    ],
    ['missing fields', { headers: json, body: JSON.stringify({ algorithm: 'sha256' }) }],
    ['an unknown algorithm', { headers: json, body: lookupBody(['x'], { algorithm: 'md5' }) }],
    ['a wrong pepper', { headers: json, body: lookupBody([fixture.hit], { pepper: `${fixture.pepper}x` }) }],
    [
      'addresses not a list',
      { headers: json, body: JSON.stringify({ addresses: 'x', algorithm: 'sha256', pepper: fixture.pepper }) },
    ],
    [
      'a bad none entry',
      { headers: json, body: JSON.stringify({ addresses: ['justone'], algorithm: 'none', pepper: fixture.pepper }) },
    ],
    ['no token', { headers: { 'content-type': 'application/json' }, body: lookupBody([fixture.hit]) }],
    [
      'an unknown token',
      {
        headers: { authorization: 'Bearer not-a-token', 'content-type': 'application/json' },
        body: lookupBody([fixture.hit]),
      },
    ],
    [
      'a malformed authorization header',
      { headers: { authorization: 'Basic abc', 'content-type': 'application/json' }, body: lookupBody([fixture.hit]) },
    ],
    [
      'a token in the query string',
      {
        path: `${V2_LOOKUP_PATH}?access_token=${fixture.token}`,
        headers: { 'content-type': 'application/json' },
        body: lookupBody([fixture.hit]),
      },
    ],
    [
      'a form body',
      { headers: { ...auth, 'content-type': 'application/x-www-form-urlencoded' }, body: 'algorithm=sha256' },
    ],
    ['GET', { method: 'GET', headers: auth }],
    ['PUT', { method: 'PUT', headers: json, body: lookupBody([fixture.hit]) }],
    ['HEAD', { method: 'HEAD', headers: auth }],
    [
      'a CORS preflight',
      {
        method: 'OPTIONS',
        headers: {
          origin: 'https://app.example',
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'authorization, content-type',
        },
      },
    ],
  ];
}

describe('the lane answers as the fastify route does', () => {
  it('same status, body, headers, log lines and metrics for every request', async () => {
    // Which requests reached fastify: on the lane's side, only those the lane left to it.
    const reached: Record<'lane' | 'route', string[]> = { lane: [], route: [] };
    let current = '';
    const watch = (side: 'lane' | 'route') => (app: FastifyInstance) =>
      app.addHook('onRequest', (_req, _reply, done) => {
        reached[side].push(current);
        done();
      });
    const lane = await clientApp(true, watch('lane'));
    const route = await clientApp(false, watch('route'));
    try {
      for (const [what, r] of requests()) {
        current = what;
        const mailed = smtp.messages.length;
        const texted = om.messages.length;
        const viaRoute0 = r.routeFirst ? await exchange(route, r) : undefined;
        const viaLane = await exchange(lane, r);
        const viaRoute = viaRoute0 ?? (await exchange(route, r));
        expect(viaLane.reply.status, `${what}: ${viaLane.reply.text.slice(0, 200)}`).toBe(viaRoute.reply.status);
        expect(viaLane.reply.text, what).toBe(viaRoute.reply.text);
        expect(answerHeaders(viaLane.reply), what).toEqual(answerHeaders(viaRoute.reply));
        expect(viaLane.log, what).toEqual(viaRoute.log);
        expect(viaLane.metrics, what).toEqual(viaRoute.metrics);
        expect(smtp.messages.length - mailed, `${what}: mails sent`).toBe(r.mails ?? 0);
        expect(om.messages.length - texted, `${what}: SMS sent`).toBe(r.sms ?? 0);
      }
      expect(reached.route).toEqual(requests().map(([what]) => what));
      expect(reached.lane).toEqual(LEFT_TO_FASTIFY);
    } finally {
      await lane.close();
      await route.close();
    }
  });

  it('the comparison sees an app-wide hook the lane does not apply', async () => {
    // An app-wide onSend hook adding a header: fastify's answers carry it, the lane's would not.
    const addHeader = (app: FastifyInstance) =>
      app.addHook('onSend', (_req, reply, payload, done) => {
        reply.header('x-added-later', 'yes');
        done(null, payload);
      });
    const lane = await clientApp(true, addHeader);
    const route = await clientApp(false, addHeader);
    try {
      const r: Request = {
        headers: { authorization: `Bearer ${fixture.token}`, 'content-type': 'application/json' },
        body: lookupBody([fixture.hit]),
      };
      const viaLane = await exchange(lane, r);
      const viaRoute = await exchange(route, r);
      expect(viaRoute.reply.headers['x-added-later']).toBe('yes');
      expect(answerHeaders(viaLane.reply)).not.toEqual(answerHeaders(viaRoute.reply));
      expect(routeHooks(lane.app, V2_LOOKUP_PATH)).not.toEqual(declaredHooks(true));
    } finally {
      await lane.close();
      await route.close();
    }
  });
});

/** How many hooks fastify runs for `POST path`, by stage (printRoutes' hook listing). */
function routeHooks(app: FastifyInstance, path: string): Record<string, number> {
  const lines = app.printRoutes({ method: 'POST', includeHooks: true, commonPrefix: false }).split('\n');
  const start = lines.findIndex((l) => l.endsWith(` ${path} (POST)`));
  expect(start, `${path} is listed`).toBeGreaterThanOrEqual(0);
  const hooks: Record<string, number> = {};
  for (const line of lines.slice(start + 1)) {
    const m = /^[│ ]*• \((\w+)\) (\[.*\])$/.exec(line);
    if (!m) break;
    hooks[m[1]!] = (JSON.parse(m[2]!) as string[]).length;
  }
  return hooks;
}

/** The hooks whose work the lane does, by stage, for a route with or without `auth`. */
function declaredHooks(auth: boolean): Record<string, number> {
  const hooks = Object.fromEntries(
    Object.entries(LANE_DOES_THE_WORK_OF).map(([stage, works]) => [stage, works.length]),
  );
  if (auth) hooks['onRequest'] = (hooks['onRequest'] ?? 0) + [AUTH_HOOK].length;
  return hooks;
}

describe('every hook of the routes is one whose work the lane does', () => {
  it('the hooks fastify runs for each lane route are those LANE_DOES_THE_WORK_OF (and AUTH_HOOK) list', async () => {
    const app = await clientApp(true);
    try {
      // A failure here: a hook was added to the app or to a lane route. Make the lane do its work too (and the
      // contract test above show it), then list it in LANE_DOES_THE_WORK_OF.
      for (const [path, auth] of LANE_PATHS) expect(routeHooks(app.app, path), path).toEqual(declaredHooks(auth));
    } finally {
      await app.close();
    }
  });
});

/** Writes `requests` on one connection at once and reads `count` answers: their bodies, in the order they came. */
function pipelined(base: string, requests: string, count: number): Promise<string[]> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(url.port), url.hostname, () => socket.write(requests));
    let received = Buffer.alloc(0);
    const bodies: string[] = [];
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      for (;;) {
        const end = received.indexOf('\r\n\r\n');
        if (end < 0) return;
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(received.subarray(0, end).toString('latin1'))?.[1]);
        if (received.length < end + 4 + length) return;
        bodies.push(received.subarray(end + 4, end + 4 + length).toString('utf8'));
        received = received.subarray(end + 4 + length);
        if (bodies.length === count) {
          socket.destroy();
          resolve(bodies);
          return;
        }
      }
    });
    socket.on('error', reject);
    socket.on('close', () => reject(new Error(`closed after ${bodies.length} answers`)));
  });
}

describe('pipelined requests through the lane', () => {
  it('are answered in order: a repeat sent after a new session waits for its mail to go', async () => {
    const base = fixture.t.url('');
    const json = { 'content-type': 'application/json' };
    const repeatedBody = newSession();
    const started = await send(base, { path: V1_REQUEST_TOKEN, headers: json, body: repeatedBody });
    expect(started.status, started.text).toBe(200);
    const startedSid = (JSON.parse(started.text) as { sid: string }).sid;
    const mailed = smtp.messages.length;
    const request = (body: string) =>
      `POST ${V1_REQUEST_TOKEN} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    const bodies = await pipelined(base, request(newSession()) + request(repeatedBody), 2);
    const [freshSid, repeatSid] = bodies.map((b) => (JSON.parse(b) as { sid: string }).sid);
    expect(repeatSid).toBe(startedSid);
    expect(freshSid).not.toBe(startedSid);
    expect(smtp.messages.length - mailed).toBe(1);
  });
});
