/**
 * `POST /v2/3pid/bind`: an access token (registered through a loopback homeserver; no terms configured) and
 * `mxid` equal to the token's user. The answer is the association signed with our long-term key; the rows carry
 * the lookup hash under the pepper `hash_details` gives.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManualClock } from '../src/clock.js';
import { expectAssociationMadeAt, expectBindingStored } from './helpers/bindings.js';
import { call, emailConf, type Reply } from './helpers/email.js';
import { startFederationEnv, mergeConf, type FederationEnv } from './helpers/federation-env.js';
import {
  DAY_MS,
  SERVER_NAME,
  V2,
  associationCounts,
  associationRows,
  expectRefusedStoringNothing,
  lookupPepper,
  lookupV2,
  registerAccount,
  requestEmailToken,
  serverPublicKey,
  sha256Of,
  userIdOf,
  validateEmail,
  verifyOurs,
} from './helpers/flows.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';

let env: FederationEnv;
let smtp: SmtpTestServer;
let t: TestServer;
let publicKey: Uint8Array;
let alice: string;
let bob: string;
let aliceId: string;
let bobId: string;

beforeAll(async () => {
  env = await startFederationEnv({});
  smtp = await startSmtpServer();
  t = await startTestServer({ conf: mergeConf(env.conf, { email: emailConf(smtp.port) }) });
  publicKey = await serverPublicKey(t);
  alice = await registerAccount(t, env, 'alice');
  bob = await registerAccount(t, env, 'bob');
  aliceId = userIdOf(env, 'alice');
  bobId = userIdOf(env, 'bob');
});
afterAll(async () => {
  await t?.close();
  await smtp?.close();
  await env?.close();
});

const bind = (body: unknown, token?: string): Promise<Reply> => call(t.url(`${V2}/3pid/bind`), { body, token });
const v2Validate = (email: string, clientSecret: string, token = alice) =>
  validateEmail(t, smtp, { email, clientSecret, api: 'v2', token });

const expectRefused = (body: unknown, token: string | undefined, status: number, errcode: string): Promise<Reply> =>
  expectRefusedStoringNothing(t, () => bind(body, token), status, errcode);

describe("bind with a token, to the token's own user", () => {
  it('answers the signed association and stores it, hashed with the pepper of hash_details', async () => {
    const sid = await v2Validate('Alice.V2@Example.COM', 'bind-v2-alice');
    const now = t.clock.now();
    const res = await bind({ sid, client_secret: 'bind-v2-alice', mxid: aliceId }, alice);
    expect(res.status, res.text).toBe(200);
    const binding = { medium: 'email', address: 'alice.v2@example.com', mxid: aliceId };
    expectAssociationMadeAt(res.json, binding, now);
    expect(Object.keys((res.json['signatures'] as Record<string, object>)[SERVER_NAME]!)).toEqual(['ed25519:0']);
    verifyOurs(res.json, publicKey);

    const pepper = await lookupPepper(t, alice);
    const lookupHash = sha256Of('alice.v2@example.com', 'email', pepper);
    expectBindingStored(t, binding, { ts: now, lookupHash, answer: res.json });
  });

  it('also takes the token from ?access_token=', async () => {
    const sid = await v2Validate('query.token@example.com', 'bind-v2-query');
    const res = await call(t.url(`${V2}/3pid/bind?access_token=${alice}`), {
      body: { sid, client_secret: 'bind-v2-query', mxid: aliceId },
    });
    expect(res.status, res.text).toBe(200);
    expect(res.json['mxid']).toBe(aliceId);
  });

  it('a session validated over v1 can be bound over v2', async () => {
    const sid = await validateEmail(t, smtp, { email: 'mixed@example.com', clientSecret: 'bind-v2-mixed', api: 'v1' });
    const res = await bind({ sid, client_secret: 'bind-v2-mixed', mxid: bobId }, bob);
    expect(res.status, res.text).toBe(200);
    expect(associationRows(t, 'email', 'mixed@example.com').global.map((r) => r['mxid'])).toEqual([bobId]);
  });
});

describe('refusals store nothing', () => {
  it("an mxid other than the token's user: 403 M_UNAUTHORIZED", async () => {
    const sid = await v2Validate('someone.else@example.com', 'bind-v2-else');
    await expectRefused({ sid, client_secret: 'bind-v2-else', mxid: bobId }, alice, 403, 'M_UNAUTHORIZED');
    await expectRefused(
      { sid, client_secret: 'bind-v2-else', mxid: '@mallory:evil.example' },
      alice,
      403,
      'M_UNAUTHORIZED',
    );
    // the user ID is compared exactly
    await expectRefused(
      { sid, client_secret: 'bind-v2-else', mxid: aliceId.toUpperCase() },
      alice,
      403,
      'M_UNAUTHORIZED',
    );
    expect(associationRows(t, 'email', 'someone.else@example.com')).toEqual({ local: [], global: [] });
  });

  it('no token, or an unknown one: 401 M_UNAUTHORIZED', async () => {
    const sid = await v2Validate('notoken@example.com', 'bind-v2-nt');
    await expectRefused({ sid, client_secret: 'bind-v2-nt', mxid: aliceId }, undefined, 401, 'M_UNAUTHORIZED');
    await expectRefused({ sid, client_secret: 'bind-v2-nt', mxid: aliceId }, 'no-such-token', 401, 'M_UNAUTHORIZED');
    // v2 ignores the token in the body (Sydent's quirk is not kept: the body is not a credential)
    await expectRefused(
      { sid, client_secret: 'bind-v2-nt', mxid: aliceId, access_token: alice },
      undefined,
      401,
      'M_UNAUTHORIZED',
    );
  });

  it('not validated 400, wrong secret or unknown sid 404, bad secret 400, missing fields 400', async () => {
    const { sid: pending } = await requestEmailToken(t, smtp, {
      email: 'v2.pending@example.com',
      clientSecret: 'bind-v2-pending',
      api: 'v2',
      token: alice,
    });
    await expectRefused(
      { sid: pending, client_secret: 'bind-v2-pending', mxid: aliceId },
      alice,
      400,
      'M_SESSION_NOT_VALIDATED',
    );
    await expectRefused(
      { sid: pending, client_secret: 'bind-v2-other', mxid: aliceId },
      alice,
      404,
      'M_NO_VALID_SESSION',
    );
    await expectRefused(
      { sid: '123456', client_secret: 'bind-v2-pending', mxid: aliceId },
      alice,
      404,
      'M_NO_VALID_SESSION',
    );
    await expectRefused({ sid: pending, client_secret: 'no spaces', mxid: aliceId }, alice, 400, 'M_INVALID_PARAM');
    await expectRefused({ sid: pending, client_secret: 'bind-v2-pending' }, alice, 400, 'M_MISSING_PARAMS');
    await expectRefused({}, alice, 400, 'M_MISSING_PARAMS');
  });

  it('an expired session: 400 M_SESSION_EXPIRED (own server: the clock moves)', async () => {
    const own = await startTestServer({ conf: mergeConf(env.conf, { email: emailConf(smtp.port) }) });
    try {
      const token = await registerAccount(own, env, 'alice');
      const sid = await validateEmail(own, smtp, {
        email: 'v2.late@example.com',
        clientSecret: 'bind-v2-late',
        api: 'v2',
        token,
      });
      (own.clock as ManualClock).advance(DAY_MS + 1);
      const res = await call(own.url(`${V2}/3pid/bind`), {
        body: { sid, client_secret: 'bind-v2-late', mxid: aliceId },
        token,
      });
      expect(res.status, res.text).toBe(400);
      expect(res.json['errcode']).toBe('M_SESSION_EXPIRED');
      expect(associationCounts(own)).toEqual({ local: 0, global: 0 });
    } finally {
      await own.close();
    }
  });
});

describe('with terms configured', () => {
  it('bind, hash_details and lookup answer 403 M_TERMS_NOT_SIGNED until the terms are accepted', async () => {
    const termsFile = path.join(t.dir, 'bind-terms.yaml');
    fs.writeFileSync(
      termsFile,
      'master_version: "bind_1"\ndocs:\n  tos:\n    version: "1.0"\n    langs:\n      en: {name: "Terms", url: "https://example.org/bind-tos-1.0-en.html"}\n',
    );
    const own = await startTestServer({
      conf: mergeConf(env.conf, { general: { 'terms.path': termsFile }, email: emailConf(smtp.port) }),
    });
    try {
      const token = await registerAccount(own, env, 'carol');
      const carolId = userIdOf(env, 'carol');
      // v1 validation needs no terms; the v2 bind does
      const sid = await validateEmail(own, smtp, {
        email: 'terms.bind@example.com',
        clientSecret: 'bind-v2-terms',
        api: 'v1',
      });
      const body = { sid, client_secret: 'bind-v2-terms', mxid: carolId };
      const refused = await call(own.url(`${V2}/3pid/bind`), { body, token });
      expect(refused.status, refused.text).toBe(403);
      expect(refused.json['errcode']).toBe('M_TERMS_NOT_SIGNED');
      expect(associationCounts(own)).toEqual({ local: 0, global: 0 });
      const details = await call(own.url(`${V2}/hash_details`), { token });
      expect(details.status).toBe(403);
      expect(details.json['errcode']).toBe('M_TERMS_NOT_SIGNED');
      const lookup = await lookupV2(own, token, { addresses: [], algorithm: 'sha256', pepper: 'x' });
      expect(lookup.status).toBe(403);
      expect(lookup.json['errcode']).toBe('M_TERMS_NOT_SIGNED');

      const accept = await call(own.url(`${V2}/terms`), {
        body: { user_accepts: ['https://example.org/bind-tos-1.0-en.html'] },
        token,
      });
      expect(accept.status, accept.text).toBe(200);
      const bound = await call(own.url(`${V2}/3pid/bind`), { body, token });
      expect(bound.status, bound.text).toBe(200);
      const pepper = await lookupPepper(own, token);
      const hash = sha256Of('terms.bind@example.com', 'email', pepper);
      const found = await lookupV2(own, token, { addresses: [hash], algorithm: 'sha256', pepper });
      expect(found.json).toEqual({ mappings: { [hash]: carolId } });
    } finally {
      await own.close();
    }
  });
});
