/**
 * `POST …/3pid/unbind` proved by a validated session of the same 3PID (`sid` + `client_secret`), with no access
 * token: the binding disappears from every lookup and a tombstone is left in the local log. Every refusal keeps
 * the binding. Bad inputs (missing fields, not JSON) are here too. The homeserver-signed form is in
 * unbind-signed.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManualClock } from '../src/clock.js';
import { call, emailConf, type Reply } from './helpers/email.js';
import { mergeConf, startFederationEnv, type FederationEnv } from './helpers/federation-env.js';
import {
  DAY_MS,
  V1,
  V2,
  associationRows,
  bulkLookup,
  lookupPepper,
  lookupV1,
  lookupV2,
  registerAccount,
  requestEmailToken,
  sha256Of,
  userIdOf,
  validateEmail,
} from './helpers/flows.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';

let env: FederationEnv;
let smtp: SmtpTestServer;
let t: TestServer;
let token: string;
let pepper: string;

beforeAll(async () => {
  [env, smtp] = await Promise.all([
    startFederationEnv({ 'POST /_matrix/federation/v1/3pid/onbind': () => ({ json: {} }) }),
    startSmtpServer(),
  ]);
  t = await startTestServer({ conf: mergeConf(env.conf, { email: emailConf(smtp.port) }) });
  token = await registerAccount(t, env, 'looker');
  pepper = await lookupPepper(t, token);
});
afterAll(async () => {
  await t?.close();
  await smtp?.close();
  await env?.close();
});

const unbind = (body: unknown, api: 'v1' | 'v2' = 'v2'): Promise<Reply> =>
  call(t.url(`${api === 'v1' ? V1 : V2}/3pid/unbind`), { body });

/** Validates `email` (v1) and binds it to `mxid`: the sid of the session that proves it. */
async function bound(email: string, clientSecret: string, mxid: string): Promise<string> {
  const sid = await validateEmail(t, smtp, { email, clientSecret, api: 'v1' });
  const res = await call(t.url(`${V1}/3pid/bind`), { body: { sid, client_secret: clientSecret, mxid } });
  expect(res.status, res.text).toBe(200);
  return sid;
}

/** What every lookup answers for `address` (casefolded): the mxid, or null when none has it. */
async function lookedUp(address: string): Promise<{ v1: unknown; bulk: unknown; none: unknown; sha256: unknown }> {
  const v1 = await lookupV1(t, 'email', address);
  expect(v1.status, v1.text).toBe(200);
  const bulk = await bulkLookup(t, [['email', address]]);
  expect(bulk.status, bulk.text).toBe(200);
  const none = await lookupV2(t, token, { addresses: [`${address} email`], algorithm: 'none', pepper });
  expect(none.status, none.text).toBe(200);
  const hash = sha256Of(address, 'email', pepper);
  const sha = await lookupV2(t, token, { addresses: [hash], algorithm: 'sha256', pepper });
  expect(sha.status, sha.text).toBe(200);
  return {
    v1: v1.json['mxid'] ?? null,
    bulk: (bulk.json['threepids'] as string[][])[0]?.[2] ?? null,
    none: (none.json['mappings'] as Record<string, string>)[`${address} email`] ?? null,
    sha256: (sha.json['mappings'] as Record<string, string>)[hash] ?? null,
  };
}

const everywhere = (mxid: string | null) => ({ v1: mxid, bulk: mxid, none: mxid, sha256: mxid });

/**
 * An unbind of `address` (email) from `mxid`, proved by the session `sid` of `clientSecret`: answered 200 {}, whether
 * or not it was bound to `mxid`.
 */
async function expectUnbindAnswered(
  proof: { mxid: string; address: string; sid: string | number; clientSecret: string },
  api: 'v1' | 'v2' = 'v2',
): Promise<void> {
  const { mxid, address, sid, clientSecret } = proof;
  const res = await unbind({ mxid, threepid: { medium: 'email', address }, sid, client_secret: clientSecret }, api);
  expect(res.status, res.text).toBe(200);
  expect(res.json).toEqual({});
}

/** Refused with this status and errcode, and the binding of `address` is still `mxid` in every lookup. */
async function expectRefused(
  body: unknown,
  status: number,
  errcode: string,
  address: string,
  mxid: string,
): Promise<Reply> {
  const res = await unbind(body);
  expect(res.status, res.text).toBe(status);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  expect(res.json['errcode']).toBe(errcode);
  expect(typeof res.json['error']).toBe('string');
  expect(await lookedUp(address)).toEqual(everywhere(mxid));
  return res;
}

describe('unbind with a validated session of the 3PID', () => {
  it('v2, no access token: 200 {}, gone from every lookup, a tombstone (mxid NULL) in the local log', async () => {
    const mxid = userIdOf(env, 'bob');
    const sid = await bound('Bob.Unbind@Example.com', 'unbind-bob', mxid);
    expect(await lookedUp('bob.unbind@example.com')).toEqual(everywhere(mxid));

    await expectUnbindAnswered({ mxid, address: 'Bob.Unbind@Example.com', sid, clientSecret: 'unbind-bob' });

    expect(await lookedUp('bob.unbind@example.com')).toEqual(everywhere(null));
    const { local, global } = associationRows(t, 'email', 'bob.unbind@example.com');
    expect(local).toHaveLength(1);
    expect(local[0]).toMatchObject({ medium: 'email', address: 'bob.unbind@example.com', mxid: null });
    expect(global.filter((r) => r['mxid'] !== null)).toEqual([]);
  });

  it('v1 works the same; the address may be given in any case', async () => {
    const mxid = userIdOf(env, 'carol');
    const sid = await bound('carol.unbind@example.com', 'unbind-carol', mxid);
    const proof = { mxid, address: 'CAROL.Unbind@EXAMPLE.com', sid: Number(sid), clientSecret: 'unbind-carol' };
    await expectUnbindAnswered(proof, 'v1');
    expect(await lookedUp('carol.unbind@example.com')).toEqual(everywhere(null));
  });

  it('unbinding again, or an mxid the 3PID is not bound to: 200 {} (idempotent), and another binding stays', async () => {
    const mxid = userIdOf(env, 'dave');
    const sid = await bound('dave.unbind@example.com', 'unbind-dave', mxid);
    const proof = { mxid, address: 'dave.unbind@example.com', sid, clientSecret: 'unbind-dave' };
    await expectUnbindAnswered({ ...proof, mxid: '@notdave:hs.test' });
    expect(await lookedUp('dave.unbind@example.com')).toEqual(everywhere(mxid));
    for (let i = 0; i < 2; i++) await expectUnbindAnswered(proof);
    expect(await lookedUp('dave.unbind@example.com')).toEqual(everywhere(null));
  });
});

describe('refused session proofs keep the binding', () => {
  let mxid: string;
  let sid: string;
  const address = 'erin.unbind@example.com';
  const threepid = { medium: 'email', address };
  beforeAll(async () => {
    mxid = userIdOf(env, 'erin');
    sid = await bound(address, 'unbind-erin', mxid);
  });

  it('a validated session of another 3PID: 403 M_FORBIDDEN', async () => {
    const otherSid = await validateEmail(t, smtp, {
      email: 'mallory.unbind@example.com',
      clientSecret: 'unbind-mallory',
      api: 'v1',
    });
    await expectRefused(
      { mxid, threepid, sid: otherSid, client_secret: 'unbind-mallory' },
      403,
      'M_FORBIDDEN',
      address,
      mxid,
    );
    // the right address with another medium is another 3PID too
    await expectRefused(
      { mxid, threepid: { medium: 'msisdn', address }, sid, client_secret: 'unbind-erin' },
      403,
      'M_FORBIDDEN',
      address,
      mxid,
    );
  });

  it('a session whose token was never submitted: 400 M_SESSION_NOT_VALIDATED', async () => {
    const pending = await requestEmailToken(t, smtp, {
      email: address,
      clientSecret: 'unbind-erin-pending',
      api: 'v1',
    });
    await expectRefused(
      { mxid, threepid, sid: pending.sid, client_secret: 'unbind-erin-pending' },
      400,
      'M_SESSION_NOT_VALIDATED',
      address,
      mxid,
    );
  });

  it('an unknown sid, or the wrong client_secret: 404 M_NO_VALID_SESSION', async () => {
    await expectRefused(
      { mxid, threepid, sid, client_secret: 'unbind-wrong' },
      404,
      'M_NO_VALID_SESSION',
      address,
      mxid,
    );
    await expectRefused(
      { mxid, threepid, sid: '987654', client_secret: 'unbind-erin' },
      404,
      'M_NO_VALID_SESSION',
      address,
      mxid,
    );
  });

  it('a client_secret outside [0-9a-zA-Z.=_-]{1,255}: 400 M_INVALID_PARAM', async () => {
    for (const client_secret of ['bad secret', 'unbind-erin!', '', 'x'.repeat(256)]) {
      await expectRefused({ mxid, threepid, sid, client_secret }, 400, 'M_INVALID_PARAM', address, mxid);
    }
  });

  it('sid without client_secret (and no signature): 401 M_FORBIDDEN', async () => {
    await expectRefused({ mxid, threepid, sid }, 401, 'M_FORBIDDEN', address, mxid);
    await expectRefused({ mxid, threepid, client_secret: 'unbind-erin' }, 401, 'M_FORBIDDEN', address, mxid);
  });
});

describe('bad inputs keep the binding', () => {
  const address = 'frank.unbind@example.com';
  let mxid: string;
  let sid: string;
  beforeAll(async () => {
    mxid = userIdOf(env, 'frank');
    sid = await bound(address, 'unbind-frank', mxid);
  });

  it('no threepid or no mxid: 400 M_MISSING_PARAMS', async () => {
    const proof = { sid, client_secret: 'unbind-frank' };
    await expectRefused({ mxid, ...proof }, 400, 'M_MISSING_PARAMS', address, mxid);
    await expectRefused({ threepid: { medium: 'email', address }, ...proof }, 400, 'M_MISSING_PARAMS', address, mxid);
    await expectRefused({ ...proof }, 400, 'M_MISSING_PARAMS', address, mxid);
  });

  it('a threepid without address or medium: 400 M_MISSING_PARAMS', async () => {
    const proof = { sid, client_secret: 'unbind-frank' };
    await expectRefused({ mxid, threepid: { medium: 'email' }, ...proof }, 400, 'M_MISSING_PARAMS', address, mxid);
    await expectRefused({ mxid, threepid: { address }, ...proof }, 400, 'M_MISSING_PARAMS', address, mxid);
    await expectRefused({ mxid, threepid: {}, ...proof }, 400, 'M_MISSING_PARAMS', address, mxid);
  });

  it('a body that is not JSON: 400 M_NOT_JSON', async () => {
    for (const body of ['{"mxid": ', 'mxid=@frank:hs.test']) {
      const res = await call(t.url(`${V2}/3pid/unbind`), { body });
      expect(res.status, res.text).toBe(400);
      expect(res.json['errcode'], body).toBe('M_NOT_JSON');
    }
    expect(await lookedUp(address)).toEqual(everywhere(mxid));
  });
});

// Last: it moves this server's clock a day on, which expires every session of the file.
describe('an expired session', () => {
  it('more than 24 h after validation: 400 M_SESSION_EXPIRED, the binding stays', async () => {
    const address = 'gina.unbind@example.com';
    const mxid = userIdOf(env, 'gina');
    const sid = await bound(address, 'unbind-gina', mxid);
    (t.clock as ManualClock).advance(DAY_MS + 60_000);
    await expectRefused(
      { mxid, threepid: { medium: 'email', address }, sid, client_secret: 'unbind-gina' },
      400,
      'M_SESSION_EXPIRED',
      address,
      mxid,
    );
  });
});
