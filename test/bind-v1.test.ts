/**
 * `POST /api/v1/3pid/bind` (no authentication; `enable_v1_associations`, default true): the signed association
 * a client receives, the rows it leaves, and every refusal (which stores nothing).
 * v2 bind is in bind-v2.test.ts; lookups of what was bound in lookup-*.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManualClock } from '../src/clock.js';
import {
  expectAssociationMadeAt,
  expectBindingStored,
  startMailingServer,
  type MailingServer,
} from './helpers/bindings.js';
import { call, emailConf, type Reply } from './helpers/email.js';
import {
  DAY_MS,
  SERVER_NAME,
  V1,
  associationRows,
  expectRefusedStoringNothing,
  lookupV1,
  requestEmailToken,
  sha256Of,
  validateEmail,
  verifyOurs,
} from './helpers/flows.js';
import { rows } from './helpers/rows.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let t: MailingServer;

beforeAll(async () => {
  t = await startMailingServer();
});
afterAll(() => t?.close());

const bind = (body: unknown, server: TestServer = t): Promise<Reply> => call(server.url(`${V1}/3pid/bind`), { body });
const v1Validate = (email: string, clientSecret: string, server: TestServer = t) =>
  validateEmail(server, t.smtp, { email, clientSecret, api: 'v1' });

/** The refusal a client sees, and that nothing was stored. */
const expectRefused = (body: unknown, status: number, errcode: string, server: TestServer = t): Promise<Reply> =>
  expectRefusedStoringNothing(server, () => bind(body, server), status, errcode);

describe('a validated session is bound', () => {
  it('answers the association signed with our long-term key, valid for 100 years', async () => {
    const sid = await v1Validate('Alice.Bind@Example.COM', 'bind-v1-alice');
    const now = t.clock.now();
    const res = await bind({ sid, client_secret: 'bind-v1-alice', mxid: '@alice:hs.example' });
    expect(res.status, res.text).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    // the address casefolded
    expectAssociationMadeAt(
      res.json,
      { medium: 'email', address: 'alice.bind@example.com', mxid: '@alice:hs.example' },
      now,
    );
    const signatures = res.json['signatures'] as Record<string, Record<string, string>>;
    expect(Object.keys(signatures)).toEqual([SERVER_NAME]);
    expect(Object.keys(signatures[SERVER_NAME]!)).toEqual(['ed25519:0']);
    verifyOurs(res.json, t.publicKey);
    // a changed field no longer verifies
    expect(() => verifyOurs({ ...res.json, mxid: '@mallory:hs.example' }, t.publicKey)).toThrow();
  });

  it('stores the local row and the global row lookups read, with the lookup hash under the current pepper', async () => {
    const sid = await v1Validate('carol.rows@example.com', 'bind-v1-carol');
    const res = await bind({ sid, client_secret: 'bind-v1-carol', mxid: '@carol:hs.example' });
    expect(res.status, res.text).toBe(200);
    const pepper = rows<{ lookup_pepper: string }>(t, 'SELECT lookup_pepper FROM hashing_metadata')[0]!.lookup_pepper;
    const lookupHash = sha256Of('carol.rows@example.com', 'email', pepper);
    const ts = res.json['ts'] as number;
    const carol = { medium: 'email', address: 'carol.rows@example.com', mxid: '@carol:hs.example' };
    expectBindingStored(t, carol, { ts, lookupHash, answer: res.json });
  });

  it('accepts a form-urlencoded body (v1 backwards compatibility)', async () => {
    const sid = await v1Validate('form.bind@example.com', 'bind-v1-form');
    const res = await call(t.url(`${V1}/3pid/bind`), {
      body: { sid, client_secret: 'bind-v1-form', mxid: '@form:hs.example' },
      form: true,
    });
    expect(res.status, res.text).toBe(200);
    expect(res.json).toMatchObject({ address: 'form.bind@example.com', mxid: '@form:hs.example' });
    verifyOurs(res.json, t.publicKey);
  });

  it('accepts the sid as a number and binding the same session again (the newest binding wins)', async () => {
    const sid = await v1Validate('dave.again@example.com', 'bind-v1-dave');
    const first = await bind({ sid: Number(sid), client_secret: 'bind-v1-dave', mxid: '@dave:hs.example' });
    expect(first.status, first.text).toBe(200);
    (t.clock as ManualClock).advance(1000);
    const second = await bind({ sid, client_secret: 'bind-v1-dave', mxid: '@dave2:hs.example' });
    expect(second.status, second.text).toBe(200);
    expect(second.json['mxid']).toBe('@dave2:hs.example');
    expect((await lookupV1(t, 'email', 'dave.again@example.com')).json['mxid']).toBe('@dave2:hs.example');
    // the local log keeps one row per 3PID, the global table what lookups read
    expect(associationRows(t, 'email', 'dave.again@example.com').local.map((r) => r['mxid'])).toEqual([
      '@dave2:hs.example',
    ]);
  });
});

describe('refusals store nothing', () => {
  it('a session whose token was not submitted: 400 M_SESSION_NOT_VALIDATED', async () => {
    const { sid } = await requestEmailToken(t, t.smtp, {
      email: 'pending@example.com',
      clientSecret: 'bind-v1-pending',
      api: 'v1',
    });
    await expectRefused(
      { sid, client_secret: 'bind-v1-pending', mxid: '@p:hs.example' },
      400,
      'M_SESSION_NOT_VALIDATED',
    );
    expect(associationRows(t, 'email', 'pending@example.com')).toEqual({ local: [], global: [] });
  });

  it('an unknown sid, or the wrong client_secret: 404 M_NO_VALID_SESSION', async () => {
    const sid = await v1Validate('secret@example.com', 'bind-v1-right');
    await expectRefused({ sid, client_secret: 'bind-v1-wrong', mxid: '@s:hs.example' }, 404, 'M_NO_VALID_SESSION');
    await expectRefused(
      { sid: '987654', client_secret: 'bind-v1-right', mxid: '@s:hs.example' },
      404,
      'M_NO_VALID_SESSION',
    );
    await expectRefused(
      { sid: 'not-a-number', client_secret: 'bind-v1-right', mxid: '@s:hs.example' },
      404,
      'M_NO_VALID_SESSION',
    );
    expect(associationRows(t, 'email', 'secret@example.com')).toEqual({ local: [], global: [] });
  });

  it('a client_secret outside [0-9a-zA-Z.=_-]{1,255}: 400 M_INVALID_PARAM', async () => {
    const sid = await v1Validate('badsecret@example.com', 'bind-v1-bs');
    for (const client_secret of ['bad secret', 'bind-v1-bs!', '', 'x'.repeat(256)]) {
      await expectRefused({ sid, client_secret, mxid: '@b:hs.example' }, 400, 'M_INVALID_PARAM');
    }
  });

  it('an mxid that is not a Matrix user ID: 400 M_INVALID_PARAM', async () => {
    const sid = await v1Validate('badmxid@example.com', 'bind-v1-bm');
    for (const mxid of ['alice', '@alice', 'alice:hs.example', '']) {
      await expectRefused({ sid, client_secret: 'bind-v1-bm', mxid }, 400, 'M_INVALID_PARAM');
    }
    expect(associationRows(t, 'email', 'badmxid@example.com')).toEqual({ local: [], global: [] });
  });

  it('missing fields: 400 M_MISSING_PARAMS', async () => {
    const sid = await v1Validate('missing@example.com', 'bind-v1-mp');
    const full = { sid, client_secret: 'bind-v1-mp', mxid: '@m:hs.example' };
    await expectRefused({}, 400, 'M_MISSING_PARAMS');
    for (const key of Object.keys(full)) {
      const body: Record<string, unknown> = { ...full };
      delete body[key];
      const res = await expectRefused(body, 400, 'M_MISSING_PARAMS');
      expect(res.json['error']).toContain(key);
    }
  });
});

describe('sessions expire', () => {
  it('24 h after validation it binds; 24 h and 1 ms after: 400 M_SESSION_EXPIRED (own server: the clock moves)', async () => {
    const own = await startTestServer({ conf: { email: emailConf(t.smtp.port) } });
    try {
      const onTime = await v1Validate('ontime@example.com', 'bind-v1-ontime', own);
      const sid = await v1Validate('late@example.com', 'bind-v1-late', own);
      // exactly 24 h later a session still binds; one millisecond more and it has expired
      (own.clock as ManualClock).advance(DAY_MS);
      const ok = await bind({ sid: onTime, client_secret: 'bind-v1-ontime', mxid: '@ontime:hs.example' }, own);
      expect(ok.status, ok.text).toBe(200);
      (own.clock as ManualClock).advance(1);
      await expectRefused(
        { sid, client_secret: 'bind-v1-late', mxid: '@late:hs.example' },
        400,
        'M_SESSION_EXPIRED',
        own,
      );
      expect(associationRows(own, 'email', 'late@example.com')).toEqual({ local: [], global: [] });
    } finally {
      await own.close();
    }
  });
});

describe('enable_v1_associations = false', () => {
  it('there is no v1 bind (404 M_UNRECOGNIZED) and nothing is stored; v1 lookups still answer', async () => {
    const own = await startTestServer({
      conf: { general: { enable_v1_associations: 'false' }, email: emailConf(t.smtp.port) },
    });
    try {
      const sid = await v1Validate('nov1@example.com', 'bind-v1-off', own);
      await expectRefused({ sid, client_secret: 'bind-v1-off', mxid: '@n:hs.example' }, 404, 'M_UNRECOGNIZED', own);
      expect(associationRows(own, 'email', 'nov1@example.com')).toEqual({ local: [], global: [] });
      const lookup = await lookupV1(own, 'email', 'nov1@example.com');
      expect(lookup.status).toBe(200);
      expect(lookup.json).toEqual({});
    } finally {
      await own.close();
    }
  });
});
