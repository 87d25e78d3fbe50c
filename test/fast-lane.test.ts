/**
 * The client listener's fast lane (src/http/fast-lane.ts), on the v2 lookup: which requests it takes and which it leaves to fastify, how it
 * reads bodies and writes answers, and that its answers are logged and counted. That it answers exactly as the
 * fastify route does is test/fast-lane-contract.test.ts.
 */
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { BODY_LIMIT } from '../src/http/app.js';
import type { AppContext } from '../src/http/context.js';
import { fastLane, type FastLaneOptions } from '../src/http/fast-lane.js';
import { V2_LOOKUP_PATH, lookupLaneRoute } from '../src/http/routes/lookup.js';
import { Metrics } from '../src/metrics/metrics.js';
import { mergeConf } from './helpers/federation-env.js';
import { internal, lookupPepper, registerAccount, sha256Of } from './helpers/flows.js';
import { lookupFixtureForFile } from './helpers/lookup-fixture.js';
import { startTestServer } from './helpers/server.js';

const fixture = lookupFixtureForFile(() => ({
  addressLookupLimit: 3,
  localpart: 'laner',
  address: 'lane@example.com',
  mxid: '@lane:hs.example',
}));

interface RawReply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/** One request with exactly these headers (fetch would add or change some). */
function send(
  base: string,
  opts: { method?: string; path?: string; headers?: Record<string, string>; body?: string | Buffer; chunked?: boolean },
): Promise<RawReply> {
  const url = new URL(opts.path ?? V2_LOOKUP_PATH, base);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.body !== undefined && !opts.chunked) headers['content-length'] = String(Buffer.byteLength(opts.body));
    const req = http.request(url, { method: opts.method ?? 'POST', headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
    });
    req.on('error', reject);
    if (opts.body !== undefined) {
      if (opts.chunked) {
        // Two writes before end: Node sends them as chunks (transfer-encoding: chunked).
        const half = Math.floor(opts.body.length / 2);
        req.write(opts.body.slice(0, half));
        req.write(opts.body.slice(half));
      } else {
        req.write(opts.body);
      }
    }
    req.end();
  });
}

const FELL_THROUGH = 599;

/** The lane alone on a loopback server: what it does not take is answered 599 here. */
async function laneOnly(overrides: Partial<FastLaneOptions> = {}): Promise<{ base: string; close(): Promise<void> }> {
  const opts = { ctx: fixture.t.server.ctx, bodyLimit: BODY_LIMIT, trustProxy: false as const, ...overrides };
  const lane = fastLane(opts, [lookupLaneRoute(opts.ctx)]);
  const server = http.createServer((req, res) => {
    if (lane(req, res)) return;
    req.resume();
    res.writeHead(FELL_THROUGH, { 'content-type': 'text/plain' });
    res.end('left to fastify');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const lookupBody = (addresses: string[] = [fixture.hit]) =>
  JSON.stringify({ addresses, algorithm: 'sha256', pepper: fixture.pepper });

describe('what the lane takes', () => {
  it('a JSON POST with a Bearer token, with or without a content type, and answers it', async () => {
    const lane = await laneOnly();
    try {
      for (const headers of <Record<string, string>[]>[
        { authorization: `Bearer ${fixture.token}`, 'content-type': 'application/json' },
        { authorization: `Bearer ${fixture.token}`, 'content-type': 'application/json; charset=utf-8' },
        { authorization: `Bearer ${fixture.token}` },
      ]) {
        const res = await send(lane.base, { headers, body: lookupBody() });
        expect(res.status, res.text).toBe(200);
        expect(JSON.parse(res.text)).toEqual({ mappings: { [fixture.hit]: '@lane:hs.example' } });
      }
      // No token or a bad one: refused by the lane itself, before the body.
      const anonymous = await send(lane.base, { headers: { 'content-type': 'application/json' }, body: lookupBody() });
      expect(anonymous.status).toBe(401);
      expect(JSON.parse(anonymous.text)).toMatchObject({ errcode: 'M_UNAUTHORIZED' });
    } finally {
      await lane.close();
    }
  });

  it('leaves everything else to fastify, unread', async () => {
    const lane = await laneOnly();
    const auth = { authorization: `Bearer ${fixture.token}` };
    try {
      const cases: Array<[string, Parameters<typeof send>[1]]> = [
        [
          'a token in the query string',
          {
            path: `${V2_LOOKUP_PATH}?access_token=${fixture.token}`,
            headers: { 'content-type': 'application/json' },
            body: lookupBody(),
          },
        ],
        ['a trailing slash', { path: `${V2_LOOKUP_PATH}/`, headers: auth, body: lookupBody() }],
        ['another path', { path: '/_matrix/identity/v2/hash_details', method: 'GET', headers: auth }],
        ['GET', { method: 'GET', headers: auth }],
        ['OPTIONS', { method: 'OPTIONS', headers: auth }],
        [
          'a form body',
          { headers: { ...auth, 'content-type': 'application/x-www-form-urlencoded' }, body: 'addresses=x' },
        ],
        [
          'a chunked body',
          { headers: { ...auth, 'content-type': 'application/json' }, body: lookupBody(), chunked: true },
        ],
        [
          'a body over the limit',
          { headers: { ...auth, 'content-type': 'application/json' }, body: 'x'.repeat(BODY_LIMIT + 1) },
        ],
      ];
      for (const [what, opts] of cases) {
        const res = await send(lane.base, opts);
        expect(res.status, what).toBe(FELL_THROUGH);
      }
    } finally {
      await lane.close();
    }
  });
});

/** Reads `count` HTTP/1.1 answers (with content-length) from a socket: status and body of each, in order. */
function readAnswers(socket: net.Socket, count: number): Promise<Array<{ status: number; body: string }>> {
  return new Promise((resolve, reject) => {
    let buffer = '';
    const answers: Array<{ status: number; body: string }> = [];
    socket.setEncoding('utf8');
    socket.on('error', reject);
    socket.on('close', () => reject(new Error(`connection closed after ${answers.length} answers`)));
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      for (;;) {
        const end = buffer.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buffer.slice(0, end);
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1]);
        if (buffer.length < end + 4 + length) return;
        answers.push({ status: Number(head.split(' ')[1]), body: buffer.slice(end + 4, end + 4 + length) });
        buffer = buffer.slice(end + 4 + length);
        if (answers.length === count) {
          socket.removeAllListeners('close');
          resolve(answers);
          return;
        }
      }
    });
  });
}

describe('answers written together at the end of the turn', () => {
  it('pipelined requests on one connection are answered in order, each its own', async () => {
    const url = new URL(fixture.t.server.clientUrl);
    const miss = sha256Of('nobody@example.com', 'email', fixture.pepper);
    const request = (body: string) =>
      `POST ${V2_LOOKUP_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${fixture.token}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    const socket = net.connect(Number(url.port), url.hostname);
    try {
      const answers = readAnswers(socket, 4);
      // One write: the server reads all four in one turn of its loop.
      socket.write(
        request(lookupBody([fixture.hit])) +
          request(lookupBody([miss])) +
          request(JSON.stringify({ addresses: [fixture.hit], algorithm: 'sha256', pepper: 'wrong' })) +
          request(lookupBody([miss, fixture.hit])),
      );
      expect(await answers).toEqual([
        { status: 200, body: JSON.stringify({ mappings: { [fixture.hit]: '@lane:hs.example' } }) },
        { status: 200, body: JSON.stringify({ mappings: {} }) },
        { status: 400, body: expect.stringContaining('"errcode":"M_INVALID_PEPPER"') },
        { status: 200, body: JSON.stringify({ mappings: { [fixture.hit]: '@lane:hs.example' } }) },
      ]);
    } finally {
      socket.destroy();
    }
  });

  it('requests of many connections at once each get their own answer', async () => {
    const misses = Array.from({ length: 12 }, (_, i) => sha256Of(`nobody${i}@example.com`, 'email', fixture.pepper));
    const answers = await Promise.all(
      misses.map((miss, i) =>
        send(fixture.t.server.clientUrl, {
          headers: { authorization: `Bearer ${fixture.token}` },
          body: lookupBody(i % 2 ? [miss, fixture.hit] : [miss]),
        }),
      ),
    );
    answers.forEach((res, i) => {
      expect(res.status, res.text).toBe(200);
      expect(JSON.parse(res.text)).toEqual({ mappings: i % 2 ? { [fixture.hit]: '@lane:hs.example' } : {} });
    });
  });
});

describe('a client that goes away', () => {
  it('in the middle of its body: nothing breaks, the next lookup is answered', async () => {
    const url = new URL(fixture.t.server.clientUrl);
    await new Promise<void>((resolve, reject) => {
      const socket = net.connect(Number(url.port), url.hostname, () => {
        socket.write(
          `POST ${V2_LOOKUP_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${fixture.token}\r\n` +
            'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"addresses": [',
        );
        setTimeout(() => {
          socket.destroy();
          resolve();
        }, 20);
      });
      socket.on('error', reject);
    });
    const res = await send(fixture.t.server.clientUrl, {
      headers: { authorization: `Bearer ${fixture.token}` },
      body: lookupBody(),
    });
    expect(res.status, res.text).toBe(200);
    expect(JSON.parse(res.text)).toEqual({ mappings: { [fixture.hit]: '@lane:hs.example' } });
  });

  it('a body that arrives after its headers, in two parts, is waited for and answered', async () => {
    const url = new URL(fixture.t.server.clientUrl);
    const body = lookupBody();
    const answer = await new Promise<string>((resolve, reject) => {
      let received = '';
      const socket = net.connect(Number(url.port), url.hostname, () => {
        socket.write(
          `POST ${V2_LOOKUP_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${fixture.token}\r\nConnection: close\r\n` +
            `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, 10)}`,
        );
        // The client does not end its side: the server closes after the answer (Connection: close).
        setTimeout(() => socket.write(body.slice(10)), 50);
      });
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => (received += chunk));
      socket.on('end', () => resolve(received));
      socket.on('error', reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
    expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toEqual({
      mappings: { [fixture.hit]: '@lane:hs.example' },
    });
  });

  it('a large body in many chunks is read whole (10,000-address limit, ~450 KB)', async () => {
    const big = await startTestServer({ conf: mergeConf(fixture.env.conf, {}) });
    try {
      const bigToken = await registerAccount(big, fixture.env, 'bigger');
      const bigPepper = await lookupPepper(big, bigToken);
      const bound = await internal(big, 'bind', {
        medium: 'email',
        address: 'lane@example.com',
        mxid: '@lane:hs.example',
      });
      expect(bound.status, bound.text).toBe(200);
      const known = sha256Of('lane@example.com', 'email', bigPepper);
      const addresses = Array.from({ length: 9_999 }, (_, i) => sha256Of(`nobody${i}@example.com`, 'email', bigPepper));
      addresses.push(known);
      const body = JSON.stringify({ addresses, algorithm: 'sha256', pepper: bigPepper });
      expect(body.length).toBeGreaterThan(400_000);
      const res = await send(big.server.clientUrl, { headers: { authorization: `Bearer ${bigToken}` }, body });
      expect(res.status, res.text.slice(0, 200)).toBe(200);
      expect(JSON.parse(res.text)).toEqual({ mappings: { [known]: '@lane:hs.example' } });
    } finally {
      await big.close();
    }
  });
});

describe('10,000-address lookups while the lookup workers start and take their parts', () => {
  it('through the lane and through fastify (chunked), each answer is exactly the hits, its length declared', async () => {
    const big = await startTestServer({ conf: mergeConf(fixture.env.conf, {}) });
    try {
      const bigToken = await registerAccount(big, fixture.env, 'parts');
      const bigPepper = await lookupPepper(big, bigToken);
      const bound = ['a', 'b', 'c'].map((name) => ({ address: `${name}@parts.example`, mxid: `@${name}:hs.example` }));
      for (const b of bound) {
        const res = await internal(big, 'bind', { medium: 'email', ...b });
        expect(res.status, res.text).toBe(200);
      }
      const hashOf = (address: string): string => sha256Of(address, 'email', bigPepper);
      const misses = Array.from({ length: 9_997 }, (_, i) => hashOf(`nobody${i}@example.com`));
      const every = [...misses, ...bound.map((b) => hashOf(b.address))];
      const expected = Object.fromEntries(bound.map((b) => [hashOf(b.address), b.mxid]));
      // one hit among misses that sort after it, or before it (any string is a hash to look up): it is in the first
      // part or the last, and the other parts find nothing
      const hit = hashOf(bound[0]!.address);
      const hitFirst = [...Array.from({ length: 9_999 }, (_, i) => `~miss${i}`), hit];
      const hitLast = [hit, ...Array.from({ length: 9_999 }, (_, i) => `-miss${i}`)];
      const authorization = `Bearer ${bigToken}`;
      // The first large lookup starts the workers; those after it get parts once they are ready.
      const until = Date.now() + 2_000;
      for (let round = 0; round < 4 || Date.now() < until; round++) {
        for (const [addresses, mappings] of [
          [every, expected],
          [hitFirst, { [hit]: bound[0]!.mxid }],
          [hitLast, { [hit]: bound[0]!.mxid }],
        ] as const) {
          const body = JSON.stringify({ addresses, algorithm: 'sha256', pepper: bigPepper });
          for (const chunked of [false, true]) {
            const res = await send(big.server.clientUrl, { headers: { authorization }, body, chunked });
            expect(res.status, res.text.slice(0, 200)).toBe(200);
            expect(JSON.parse(res.text)).toEqual({ mappings });
            expect(Number(res.headers['content-length'])).toBe(Buffer.byteLength(res.text));
          }
        }
      }
    } finally {
      await big.close();
    }
  }, 30_000);
});

describe('what the lane leaves to fastify is answered', () => {
  it('a form body and a chunked body still get their answers (from fastify)', async () => {
    const chunked = await send(fixture.t.server.clientUrl, {
      headers: { authorization: `Bearer ${fixture.token}`, 'content-type': 'application/json' },
      body: lookupBody(),
      chunked: true,
    });
    expect(chunked.status, chunked.text).toBe(200);
    expect(JSON.parse(chunked.text)).toEqual({ mappings: { [fixture.hit]: '@lane:hs.example' } });
    const form = await send(fixture.t.server.clientUrl, {
      headers: { authorization: `Bearer ${fixture.token}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'algorithm=sha256',
    });
    expect(form.status, form.text).toBe(400);
    expect(JSON.parse(form.text)).toMatchObject({ errcode: 'M_MISSING_PARAMS' });
  });
});

describe('what the app adds to every answer', () => {
  it('one request log line per answer, without the token', async () => {
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
    const ctx: AppContext = { ...fixture.t.server.ctx, log };
    const lane = await laneOnly({ ctx });
    try {
      await send(lane.base, { headers: { authorization: `Bearer ${fixture.token}` }, body: lookupBody() });
      await send(lane.base, { headers: { authorization: 'Bearer not-a-token' }, body: lookupBody() });
    } finally {
      await lane.close();
    }
    const requests = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['msg'] === 'request');
    expect(requests.map((l) => [l['method'], l['url'], l['status'], l['ip']])).toEqual([
      ['POST', V2_LOOKUP_PATH, 200, '127.0.0.1'],
      ['POST', V2_LOOKUP_PATH, 401, '127.0.0.1'],
    ]);
    for (const l of requests) expect(typeof l['ms']).toBe('number');
    expect(lines.join('')).not.toContain(fixture.token);
  });

  it('counted under the route, by status', async () => {
    const metrics = new Metrics(fixture.t.server.ctx.reads);
    const lane = await laneOnly({ metrics });
    try {
      await send(lane.base, { headers: { authorization: `Bearer ${fixture.token}` }, body: lookupBody() });
      await send(lane.base, { headers: { authorization: `Bearer ${fixture.token}` }, body: 'nope' });
    } finally {
      await lane.close();
    }
    const route = metrics.httpRoute(V2_LOOKUP_PATH, 'POST');
    expect(route.count).toBe(2);
    expect(Object.fromEntries(route.pendingByStatus)).toEqual({ 200: 1, 400: 1 });
  });
});
