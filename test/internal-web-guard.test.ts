/**
 * The internal listener binds 3PIDs without proof and shows live state, so no web page may use it: a browser
 * on the same machine can reach 127.0.0.1, and a page can rebind its own DNS name to it. The listener sends no
 * CORS headers, takes only bodies declared `application/json` (415 M_NOT_JSON), answers only for its own
 * address, `localhost` or configured names (421 M_FORBIDDEN), and refuses requests a page of another origin
 * made (403 M_FORBIDDEN). Raw sockets: fetch sets Host and Origin itself.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { associationCounts, INTERNAL } from './helpers/flows.js';
import { rawHttp, type RawReply, type RawRequest } from './helpers/raw-http.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let t: TestServer;
/** http://127.0.0.1:<port> */
let origin: string;
let port: number;

beforeAll(async () => {
  t = await startTestServer({ conf: { http: { 'internalapi.http.allowed_hosts': 'Debug.Example.org' } } });
  origin = new URL(t.internalUrl('/')).origin;
  port = Number(new URL(origin).port);
});

afterAll(async () => {
  await t?.close();
});

const send = (req: RawRequest): Promise<RawReply> => rawHttp(origin, req);
const BIND = `${INTERNAL}/bind`;
let n = 0;
/** A bind body for a new address each time; the mxid's homeserver is unreachable, so callbacks just wait. */
const bindBody = () =>
  JSON.stringify({ medium: 'email', address: `guard${++n}@example.org`, mxid: '@guard:localhost:1' });
const corsHeaders = (res: RawReply) => Object.keys(res.headers).filter((h) => h.startsWith('access-control-'));

describe('internal listener: no CORS', () => {
  it('no Access-Control-* header on any answer: data, bind, error, 404, OPTIONS', async () => {
    const answers = [
      await send({ target: '/_sydent/debug/actors' }),
      await send({ method: 'POST', target: BIND, headers: { 'Content-Type': 'application/json' }, body: bindBody() }),
      await send({ method: 'POST', target: BIND, headers: { 'Content-Type': 'application/json' }, body: '{}' }),
      await send({ target: '/nowhere' }),
      await send({
        method: 'OPTIONS',
        target: BIND,
        headers: { Origin: origin, 'Access-Control-Request-Method': 'POST' },
      }),
    ];
    expect(answers.map((a) => a.status)).toEqual([200, 200, 400, 404, 200]);
    for (const res of answers) expect(corsHeaders(res)).toEqual([]);
    // The client listener keeps them: clients in browsers use it.
    const client = await rawHttp(t.url('/'), { target: '/_matrix/identity/versions' });
    expect(client.headers['access-control-allow-origin']).toBe('*');
  });
});

describe('internal listener: JSON bodies only', () => {
  const refusedTypes: Array<[string, Record<string, string>]> = [
    ['text/plain (a page posts it without asking)', { 'Content-Type': 'text/plain' }],
    ['text/plain with charset', { 'Content-Type': 'text/plain;charset=UTF-8' }],
    ['a form', { 'Content-Type': 'application/x-www-form-urlencoded' }],
    ['multipart', { 'Content-Type': 'multipart/form-data; boundary=x' }],
    ['no Content-Type at all', {}],
    ['application/jsonx', { 'Content-Type': 'application/jsonx' }],
  ];
  for (const [name, headers] of refusedTypes) {
    it(`${name}: 415 M_NOT_JSON, nothing stored`, async () => {
      const before = associationCounts(t);
      const res = await send({ method: 'POST', target: BIND, headers, body: bindBody() });
      expect(res.status, res.body).toBe(415);
      expect(res.json).toMatchObject({ errcode: 'M_NOT_JSON', error: expect.any(String) });
      expect(associationCounts(t)).toEqual(before);
    });
  }

  it('application/json (any case, with parameters) binds', async () => {
    const before = associationCounts(t);
    for (const type of ['application/json', 'Application/JSON; charset=utf-8']) {
      const res = await send({ method: 'POST', target: BIND, headers: { 'Content-Type': type }, body: bindBody() });
      expect(res.status, res.body).toBe(200);
    }
    expect(associationCounts(t).local).toBe(before.local + 2);
  });

  it('a POST with neither body nor Content-Type (curl -X POST) is still taken', async () => {
    const res = await send({ method: 'POST', target: '/_sydent/debug/replication/retry' });
    expect(res.status, res.body).toBe(200);
    expect(res.json).toEqual({ retried: [] });
  });

  it('an empty text/plain POST (a cross-origin form) does not retry anything', async () => {
    const res = await send({
      method: 'POST',
      target: '/_sydent/debug/replication/retry',
      headers: { 'Content-Type': 'text/plain' },
      body: '',
    });
    expect(res.status).toBe(415);
    expect(res.json).toMatchObject({ errcode: 'M_NOT_JSON' });
  });
});

describe('internal listener: its own Host only (DNS rebinding)', () => {
  it('refuses a foreign name, on data and on bind, with nothing stored', async () => {
    const before = associationCounts(t);
    for (const host of [
      `evil.example:${port}`,
      'evil.example',
      `127.0.0.1.evil.example:${port}`,
      `localhost.evil.example:${port}`,
    ]) {
      const read = await send({ target: '/_sydent/debug/actors', host });
      expect(read.status, host).toBe(421);
      expect(read.json).toMatchObject({ errcode: 'M_FORBIDDEN' });
      expect(read.body).not.toContain('systemId');
      const bind = await send({
        method: 'POST',
        target: BIND,
        host,
        headers: { 'Content-Type': 'application/json' },
        body: bindBody(),
      });
      expect(bind.status, host).toBe(421);
    }
    expect(associationCounts(t)).toEqual(before);
  });

  it('refuses our address with another port, and a foreign authority in an absolute-form request line', async () => {
    expect((await send({ target: '/_sydent/debug/actors', host: `127.0.0.1:${port + 1}` })).status).toBe(421);
    expect((await send({ target: '/_sydent/debug/actors', host: '127.0.0.1' })).status).toBe(421);
    const absolute = await send({ target: 'http://evil.example/_sydent/debug/actors' });
    expect(absolute.status).toBe(421);
    expect(absolute.json).toMatchObject({ errcode: 'M_FORBIDDEN' });
    expect((await send({ target: `http://evil.example:${port}/%5Fsydent/debug/actors` })).status).toBe(421);
  });

  it('answers for its address and port, localhost on loopback, and a configured name in any case', async () => {
    for (const host of [
      `127.0.0.1:${port}`,
      `localhost:${port}`,
      `LocalHost:${port}`,
      'debug.example.org',
      `DEBUG.example.org.:8443`,
    ]) {
      const res = await send({ target: '/_sydent/debug/actors', host });
      expect(res.status, host).toBe(200);
    }
    expect((await send({ target: `${origin}/_sydent/debug/actors` })).status).toBe(200);
  });
});

describe('internal listener: requests of another origin', () => {
  it('a cross-origin POST without body (retry) and a cross-origin bind are refused 403', async () => {
    const before = associationCounts(t);
    for (const from of ['http://evil.example', 'null', `http://localhost:${port + 1}`]) {
      const retry = await send({
        method: 'POST',
        target: '/_sydent/debug/replication/retry',
        headers: { Origin: from },
      });
      expect(retry.status, from).toBe(403);
      expect(retry.json).toMatchObject({ errcode: 'M_FORBIDDEN' });
      const bind = await send({
        method: 'POST',
        target: BIND,
        headers: { Origin: from, 'Content-Type': 'application/json' },
        body: bindBody(),
      });
      expect(bind.status, from).toBe(403);
    }
    expect(associationCounts(t)).toEqual(before);
  });

  it('the listener’s own origin (the debug page) is answered', async () => {
    const res = await send({ target: '/_sydent/debug/actors', headers: { Origin: origin } });
    expect(res.status).toBe(200);
  });
});
