/**
 * Requests Node's HTTP parser refuses before any route sees them (a request line that is not HTTP, a URL or headers
 * over the size limit, chunk extensions over theirs), and URLs the router refuses (a path parameter over its length
 * limit, a path that is not valid percent-encoding): each is a Matrix error in JSON, with CORS headers on the client
 * listener (none on the internal one, which sends none), on the v2 lookup's path (whose fast lane sits ahead of
 * fastify) as elsewhere; after a parser error the connection is closed, since its framing is lost.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { V2_LOOKUP_PATH } from '../src/http/routes/lookup.js';
import { rawExchange, type RawExchange } from './helpers/raw-http.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t?.close();
});

function expectMatrixError(answer: RawExchange, status: number, errcode: string, what: string): void {
  expect(answer.status, `${what}: ${answer.body}`).toBe(status);
  expect(answer.headers['content-type'], what).toMatch(/^application\/json/);
  expect(answer.json, what).toEqual({ errcode, error: expect.any(String) });
}

function expectCors(answer: RawExchange, what: string): void {
  expect(answer.headers['access-control-allow-origin'], what).toBe('*');
  expect(answer.headers['access-control-allow-methods'], what).toBe('GET, POST, PUT, DELETE, OPTIONS');
}

const HUGE_QUERY = `a=${'x'.repeat(100_000)}`;

describe('the HTTP parser refuses, the listener answers a Matrix error and closes', () => {
  // [what, request, status, errcode]; each on an ordinary path and on the lookup lane's
  const cases = (path: string): Array<[string, string, number, string]> => [
    ['a 100 kB query string', `GET ${path}?${HUGE_QUERY} HTTP/1.1\r\nHost: x\r\n\r\n`, 431, 'M_TOO_LARGE'],
    [
      '100 kB of headers',
      `POST ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${'t'.repeat(100_000)}\r\n\r\n`,
      431,
      'M_TOO_LARGE',
    ],
    ['a request line that is not HTTP', `${path}\r\n\r\n`, 400, 'M_UNRECOGNIZED'],
    ['a space in the request target', `POST ${path}?a b HTTP/1.1\r\nHost: x\r\n\r\n`, 400, 'M_UNRECOGNIZED'],
    ['an unknown HTTP version', `POST ${path} HTTP/7.0\r\nHost: x\r\n\r\n`, 400, 'M_UNRECOGNIZED'],
    [
      'a content-length that is not a number',
      `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}`,
      400,
      'M_UNRECOGNIZED',
    ],
    [
      'two content-lengths',
      `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}`,
      400,
      'M_UNRECOGNIZED',
    ],
    // on a route without auth, which reads the body (an authenticated one answers 401 before the body arrives)
    [
      'chunk extensions over 16 KiB',
      `POST /_matrix/identity/api/v1/bulk_lookup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2;${'e'.repeat(20_000)}\r\n{}\r\n0\r\n\r\n`,
      413,
      'M_TOO_LARGE',
    ],
  ];

  for (const path of ['/_matrix/identity/v2/hash_details', V2_LOOKUP_PATH]) {
    it(`on ${path}`, async () => {
      for (const [what, request, status, errcode] of cases(path)) {
        const answer = await rawExchange(t.url('/'), request);
        expectMatrixError(answer, status, errcode, what);
        expectCors(answer, what);
        expect(answer.headers['connection'], what).toBe('close');
        expect(answer.closed, `${what}: the connection stays open`).toBe(true);
      }
      // and the server goes on answering other connections
      expect((await fetch(t.url('/_matrix/identity/versions'))).status).toBe(200);
    });
  }

  it('on the internal listener too, without CORS headers', async () => {
    const big = await rawExchange(
      t.internalUrl('/'),
      `GET /_sydent/debug/actors?${HUGE_QUERY} HTTP/1.1\r\nHost: x\r\n\r\n`,
    );
    expectMatrixError(big, 431, 'M_TOO_LARGE', 'a 100 kB query string');
    expect(big.closed).toBe(true);
    const garbage = await rawExchange(t.internalUrl('/'), 'GARBAGE\r\n\r\n');
    expectMatrixError(garbage, 400, 'M_UNRECOGNIZED', 'a request line that is not HTTP');
    expect(garbage.closed).toBe(true);
    for (const answer of [big, garbage])
      expect(Object.keys(answer.headers).filter((h) => h.startsWith('access-control-'))).toEqual([]);
  });
});

describe('URLs the router refuses', () => {
  it('a path parameter over its length limit: 414 M_TOO_LARGE with CORS', async () => {
    const answer = await rawExchange(
      t.url('/'),
      `GET /_matrix/identity/v2/pubkey/${'k'.repeat(200)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    );
    expectMatrixError(answer, 414, 'M_TOO_LARGE', 'a long key id');
    expectCors(answer, 'a long key id');
  });

  it('a path that is not valid percent-encoding: 400 M_INVALID_PARAM, with CORS on the client listener', async () => {
    for (const path of ['/_matrix/identity/v2/pubkey/%FF', '/_matrix/identity/v2/pubkey/%ZZ']) {
      const answer = await rawExchange(t.url('/'), `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      expectMatrixError(answer, 400, 'M_INVALID_PARAM', path);
      expectCors(answer, path);
    }
    const internal = await rawExchange(
      t.internalUrl('/'),
      `GET /_sydent/debug/sessions/%E0%A4 HTTP/1.1\r\nHost: ${new URL(t.internalUrl('/')).host}\r\nConnection: close\r\n\r\n`,
    );
    expectMatrixError(internal, 400, 'M_INVALID_PARAM', 'an internal path');
    expect(internal.headers['access-control-allow-origin']).toBeUndefined();
  });
});
