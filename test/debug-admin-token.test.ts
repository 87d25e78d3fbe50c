/**
 * `internalapi.admin_token` guards every debug endpoint whatever spelling of its URL reaches it: the router
 * decodes percent-escapes and takes absolute-form request targets, so the check must follow the matched route.
 * Requests are written on raw sockets: fetch would normalise the very URLs under test.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawHttp, type RawRequest } from './helpers/raw-http.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const ADMIN = 'letmein';
let t: TestServer;
let origin: string;

beforeAll(async () => {
  t = await startTestServer({ conf: { http: { 'internalapi.admin_token': ADMIN } } });
  origin = new URL(t.internalUrl('/')).origin;
});

afterAll(async () => {
  await t?.close();
});

// `ORIGIN` in a target stands for the listener's origin, known once the server runs.
const send = (req: RawRequest) => rawHttp(origin, { ...req, target: req.target.replace('ORIGIN', origin) });
const withToken = (req: RawRequest): RawRequest => ({
  ...req,
  headers: { ...req.headers, Authorization: `Bearer ${ADMIN}` },
});

/** Every way of naming a data endpoint that the router resolves to it. */
const guarded = (): Array<[string, RawRequest]> => [
  ['plain actors', { target: '/_sydent/debug/actors' }],
  ['%64ebug', { target: '/_sydent/%64ebug/actors' }],
  ['%5Fsydent', { target: '/%5Fsydent/debug/callbacks' }],
  ['%5fsydent, lower-case escape', { target: '/%5fsydent/debug/callbacks' }],
  ['every letter escaped', { target: '/%5F%73%79%64%65%6E%74/%64%65%62%75%67/%6D%61%63%68%69%6E%65%73' }],
  ['escaped last segment', { target: '/_sydent/debug/%73essions' }],
  ['escaped session id', { target: '/_sydent/debug/sessions/%31%32' }],
  ['query string before the path check', { target: '/_sydent/%64ebug/replication?x=/_sydent/debug/' }],
  ['POST retry with %64ebug', { method: 'POST', target: '/_sydent/%64ebug/replication/retry' }],
  ['POST retry plain', { method: 'POST', target: '/_sydent/debug/replication/retry' }],
  ['HEAD actors', { method: 'HEAD', target: '/_sydent/%64ebug/actors' }],
  ['absolute-form request line', { target: 'ORIGIN/_sydent/debug/actors' }],
  ['absolute-form with escapes', { target: 'ORIGIN/%5Fsydent/%64ebug/callbacks' }],
];

describe('admin token on the debug endpoints', () => {
  for (const [name, req] of guarded()) {
    it(`${name}: 401 M_UNAUTHORIZED without the token, answered with it`, async () => {
      const refused = await send(req);
      expect(refused.status, refused.body).toBe(401);
      if (req.method !== 'HEAD') expect(refused.json).toMatchObject({ errcode: 'M_UNAUTHORIZED' });
      const wrong = await send({ ...req, headers: { Authorization: 'Bearer letmeout' } });
      expect(wrong.status).toBe(401);
      // The same spelling with the token reaches the route: proof the refusal was the token check, not a 404.
      const allowed = await send(withToken(req));
      expect([200, 404], allowed.body).toContain(allowed.status);
      if (!req.target.includes('sessions/')) expect(allowed.status, allowed.body).toBe(200);
    });
  }

  it('the page and its renderer hold no data and are served without the token, however spelled', async () => {
    for (const target of ['/_sydent/debug/', '/_sydent/%64ebug/', '/%5Fsydent/debug/assets/mermaid.min.js']) {
      const res = await send({ target });
      expect(res.status, target).toBe(200);
    }
  });
});
