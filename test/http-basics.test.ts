import type { FastifyInstance } from 'fastify';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SydentConfig } from '../src/config/types.js';
import { BODY_LIMIT, createApp } from '../src/http/app.js';
import { requestDeadline } from '../src/http/deadline.js';
import { decodeBase64, encodeBase64Url, publicKeyFromSeed } from '../src/crypto/index.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t.close();
});

function expectCors(res: Response): void {
  expect(res.headers.get('access-control-allow-origin')).toBe('*');
  expect(res.headers.get('access-control-allow-methods')).toBe('GET, POST, PUT, DELETE, OPTIONS');
  expect(res.headers.get('access-control-allow-headers')).toContain('Authorization');
}

async function json(res: Response): Promise<Record<string, unknown>> {
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  return (await res.json()) as Record<string, unknown>;
}

describe('status and versions', () => {
  it('GET /_matrix/identity/versions lists the spec versions', async () => {
    const res = await fetch(t.url('/_matrix/identity/versions'));
    expect(res.status).toBe(200);
    expectCors(res);
    const body = await json(res);
    expect(body['versions']).toContain('v1.1');
    expect(body['versions']).toContain('r0.3.0');
    expect(body['versions']).not.toContain('v1.20');
  });

  it('GET /_matrix/identity/v2 and /api/v1 answer {}', async () => {
    for (const p of ['/_matrix/identity/v2', '/_matrix/identity/api/v1']) {
      const res = await fetch(t.url(p));
      expect(res.status).toBe(200);
      expectCors(res);
      expect(await json(res)).toEqual({});
    }
  });

  it('the v1 tree is absent when enable_v1_access is false', async () => {
    const off = await startTestServer({ conf: { general: { enable_v1_access: 'false' } } });
    try {
      const res = await fetch(off.url('/_matrix/identity/api/v1'));
      expect(res.status).toBe(404);
      expect(await json(res)).toMatchObject({ errcode: 'M_UNRECOGNIZED' });
      const pk = await fetch(off.url('/_matrix/identity/api/v1/pubkey/ed25519:0'));
      expect(pk.status).toBe(404);
      expect((await fetch(off.url('/_matrix/identity/v2/pubkey/ed25519:0'))).status).toBe(200);
    } finally {
      await off.close();
    }
  });
});

describe('public keys', () => {
  it('serves the long-term key under v1 and v2, matching the configured seed', async () => {
    const expected = publicKeyFromSeed(t.config.crypto.signingKey.seed);
    for (const prefix of ['/_matrix/identity/v2', '/_matrix/identity/api/v1']) {
      const res = await fetch(t.url(`${prefix}/pubkey/ed25519:0`));
      expect(res.status).toBe(200);
      expectCors(res);
      const body = await json(res);
      expect(typeof body['public_key']).toBe('string');
      expect(body['public_key']).not.toMatch(/[=_-]/);
      expect(Buffer.from(decodeBase64(body['public_key'] as string))).toEqual(Buffer.from(expected));
    }
  });

  it('an unknown key id is 404 M_NOT_FOUND', async () => {
    const res = await fetch(t.url('/_matrix/identity/v2/pubkey/ed25519:9'));
    expect(res.status).toBe(404);
    expect(await json(res)).toMatchObject({ errcode: 'M_NOT_FOUND', error: expect.any(String) });
  });

  it('isvalid accepts our key in both base64 alphabets and refuses others', async () => {
    const key = publicKeyFromSeed(t.config.crypto.signingKey.seed);
    const std = (await json(await fetch(t.url('/_matrix/identity/v2/pubkey/ed25519:0'))))['public_key'] as string;
    const cases: [string, boolean][] = [
      [std, true],
      [encodeBase64Url(key), true],
      ['AAAA' + std.slice(4), false],
      ['not base64!', false],
    ];
    for (const prefix of ['/_matrix/identity/v2', '/_matrix/identity/api/v1']) {
      for (const [candidate, valid] of cases) {
        const res = await fetch(t.url(`${prefix}/pubkey/isvalid?public_key=${encodeURIComponent(candidate)}`));
        expect(res.status).toBe(200);
        expectCors(res);
        expect(await json(res)).toEqual({ valid });
      }
    }
  });

  it('isvalid without public_key is 400 M_MISSING_PARAMS', async () => {
    const res = await fetch(t.url('/_matrix/identity/v2/pubkey/isvalid'));
    expect(res.status).toBe(400);
    expect(await json(res)).toEqual({ errcode: 'M_MISSING_PARAMS', error: 'Missing parameters: public_key' });
  });
});

describe('errors everywhere', () => {
  it('an unknown path is 404 M_UNRECOGNIZED with CORS', async () => {
    for (const p of ['/nothing', '/_matrix/identity/v2/', '/_matrix/identity/v2/nope', '/_matrix/identity/v3']) {
      const res = await fetch(t.url(p));
      expect(res.status).toBe(404);
      expectCors(res);
      expect(await json(res)).toEqual({ errcode: 'M_UNRECOGNIZED', error: expect.any(String) });
    }
  });

  it('a wrong method on a known path is 405 M_UNRECOGNIZED with Allow', async () => {
    const res = await fetch(t.url('/_matrix/identity/versions'), { method: 'POST', body: '{}' });
    expect(res.status).toBe(405);
    expectCors(res);
    expect(res.headers.get('allow')).toContain('GET');
    expect(await json(res)).toEqual({ errcode: 'M_UNRECOGNIZED', error: expect.any(String) });
    const del = await fetch(t.url('/_matrix/identity/v2/pubkey/ed25519:0'), { method: 'DELETE' });
    expect(del.status).toBe(405);
  });

  it('OPTIONS is answered on every route with CORS, and 404 on unknown paths', async () => {
    for (const p of [
      '/_matrix/identity/versions',
      '/_matrix/identity/v2',
      '/_matrix/identity/v2/pubkey/ed25519:0',
      '/_matrix/identity/api/v1/pubkey/isvalid',
    ]) {
      const res = await fetch(t.url(p), {
        method: 'OPTIONS',
        headers: { origin: 'https://app.example', 'access-control-request-method': 'POST' },
      });
      expect(res.status).toBe(200);
      expectCors(res);
    }
    const unknown = await fetch(t.url('/nothing'), { method: 'OPTIONS' });
    expect(unknown.status).toBe(404);
  });

  it('HEAD works where GET does', async () => {
    const res = await fetch(t.url('/_matrix/identity/versions'), { method: 'HEAD' });
    expect(res.status).toBe(200);
  });

  it('the debug endpoints are not on the client listener', async () => {
    const res = await fetch(t.url('/_sydent/debug/actors'));
    expect(res.status).toBe(404);
  });
});

describe('request bodies (the shared app every listener is built on)', () => {
  let app: FastifyInstance;
  let base: string;
  beforeAll(async () => {
    app = createApp({ log: pino({ level: 'silent' }) });
    app.post(
      '/echo',
      { schema: { body: { type: 'object', required: ['a'], properties: { a: { type: 'string' } } } } },
      async (req) => req.body,
    );
    app.post('/optional', async (req) => ({ body: req.body ?? null }));
    app.get('/boom', async () => {
      throw new Error('secret detail');
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await app.close();
  });

  const post = (p: string, body: string | undefined, type?: string) =>
    fetch(base + p, { method: 'POST', headers: type ? { 'content-type': type } : {}, body });

  it('parses JSON whatever the content type says', async () => {
    for (const type of ['application/json', 'application/json; charset=utf-8', 'text/plain', undefined]) {
      const res = await post('/echo', '{"a":"b"}', type);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ a: 'b' });
    }
  });

  it('parses form bodies; a key given twice is 400 M_INVALID_PARAM', async () => {
    const res = await post('/echo', 'a=b&c=1&d=%20x+y%C3%A9', 'application/x-www-form-urlencoded');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ a: 'b', c: '1', d: ' x yé' });
    const twice = await post('/echo', 'a=b&c=1&c=2', 'application/x-www-form-urlencoded');
    expect(twice.status).toBe(400);
    expectCors(twice);
    expect(await json(twice)).toEqual({ errcode: 'M_INVALID_PARAM', error: 'Parameter "c" is given more than once' });
  });

  it('an unparsable body is 400 M_NOT_JSON with CORS', async () => {
    for (const type of ['application/json', undefined]) {
      const res = await post('/echo', '{"a":', type);
      expect(res.status).toBe(400);
      expectCors(res);
      expect(await json(res)).toEqual({ errcode: 'M_NOT_JSON', error: expect.any(String) });
    }
  });

  it('a body that is not a JSON object is 400 M_NOT_JSON', async () => {
    for (const body of ['[1,2]', '"a"', '3', 'null']) {
      const res = await post('/echo', body, 'application/json');
      expect(res.status).toBe(400);
      expect((await json(res))['errcode']).toBe('M_NOT_JSON');
    }
  });

  it('missing fields are M_MISSING_PARAMS and mistyped ones M_INVALID_PARAM', async () => {
    const missing = await post('/echo', '{}', 'application/json');
    expect(missing.status).toBe(400);
    expect(await json(missing)).toEqual({ errcode: 'M_MISSING_PARAMS', error: 'Missing parameters: a' });
    const wrong = await post('/echo', '{"a":{"x":1}}', 'application/json');
    expect(wrong.status).toBe(400);
    expect((await json(wrong))['errcode']).toBe('M_INVALID_PARAM');
  });

  it('a route without a body schema accepts an empty body', async () => {
    const res = await post('/optional', undefined);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ body: null });
  });

  it('an oversized body is 413 M_TOO_LARGE', async () => {
    const res = await post('/echo', JSON.stringify({ a: 'x'.repeat(BODY_LIMIT) }), 'application/json');
    expect(res.status).toBe(413);
    expectCors(res);
    expect(await json(res)).toEqual({ errcode: 'M_TOO_LARGE', error: expect.any(String) });
  });

  it('an exception inside a handler is 500 M_UNKNOWN without its details', async () => {
    const res = await fetch(base + '/boom');
    expect(res.status).toBe(500);
    expectCors(res);
    expect(await json(res)).toEqual({ errcode: 'M_UNKNOWN', error: 'Internal Server Error' });
  });
});

describe('request logs', () => {
  it('log every request without tokens, secrets or addresses', async () => {
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
    const app = createApp({ log });
    app.get('/x', async () => ({}));
    app.get('/fail', async () => {
      throw new Error('failed');
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    try {
      const secrets = {
        access_token: 'tokSECRET1',
        client_secret: 'csSECRET2',
        token: 'tSECRET3',
        email: 'alice.SECRET4@example.com',
        address: 'bob.SECRET5@example.com',
        sid: 'sidSECRET6',
        private_key: 'pkSECRET7',
      };
      const q = new URLSearchParams(secrets).toString();
      for (const p of ['/x', '/fail', '/missing']) {
        await fetch(`${base}${p}?${q}&brand=vector-im`, { headers: { authorization: 'Bearer hdrSECRET8' } });
      }
      await new Promise((r) => setTimeout(r, 50));
      const all = lines.join('');
      expect(lines.filter((l) => l.includes('"msg":"request"'))).toHaveLength(3);
      expect(all).toContain('brand=vector-im');
      expect(all).toMatch(/"status":500/);
      expect(all).not.toMatch(/SECRET\d/);
    } finally {
      await app.close();
    }
  });

  it('a header the route cannot write (a stored link with a line break): a Matrix 500 with CORS, no secret in any line', async () => {
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
    const app = createApp({ log });
    app.get('/redirect', async (_req, reply) =>
      reply.code(302).header('location', 'https://x.example/\r\nSet-Cookie: a=b').send(''),
    );
    await app.listen({ host: '127.0.0.1', port: 0 });
    try {
      const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
      const res = await fetch(`${base}/redirect?sid=1&client_secret=csSECRET1&token=tSECRET2&access_token=atSECRET3`, {
        redirect: 'manual',
      });
      expect(res.status).toBe(500);
      expectCors(res);
      expect(res.headers.get('location')).toBeNull();
      expect(await json(res)).toEqual({ errcode: 'M_UNKNOWN', error: 'Internal Server Error' });
      await new Promise((r) => setTimeout(r, 50));
      expect(lines.some((l) => l.includes('ERR_INVALID_CHAR'))).toBe(true);
      expect(lines.join('')).not.toMatch(/SECRET\d/);
    } finally {
      await app.close();
    }
  });
});

describe("a request's deadline (the shared app every listener is built on)", () => {
  it('aborts the work of a request still running at its deadline, and ends with the answer of one that finished before', async () => {
    const config = { http: { requestDeadlineMs: 150, sendDeadlineMs: 150 } } as SydentConfig;
    const app = createApp({ log: pino({ level: 'silent' }) });
    const signals: Record<string, AbortSignal> = {};
    app.get('/quick', async (req) => {
      signals['quick'] = requestDeadline(req, config).signal;
      return {};
    });
    app.get('/slow', async (req) => {
      const { signal } = requestDeadline(req, config);
      signals['slow'] = signal;
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      return { aborted: signal.aborted };
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    try {
      const slow = await fetch(`${base}/slow`);
      expect(await slow.json()).toEqual({ aborted: true });
      expect((await fetch(`${base}/quick`)).status).toBe(200);
      await new Promise((r) => setTimeout(r, 400));
      // Answered long before: its timer went with the answer, and nothing aborts its signal afterwards.
      expect(signals['quick']?.aborted).toBe(false);
    } finally {
      await app.close();
    }
  });
});
