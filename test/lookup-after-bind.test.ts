/**
 * What lookups answer once a 3PID is bound: v1 `lookup` (the signed association), v1 `bulk_lookup`, v2
 * `hash_details` and v2 `lookup` with `none` and `sha256` (hashes computed here from the pepper). Addresses match
 * in any case (Unicode case folding), results echo what the client sent, and after a re-bind every lookup
 * answers the newest binding (Sydent's stale-hash defect, §12 item 9, must not exist).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManualClock } from '../src/clock.js';
import { generateSeed, publicKeyFromSeed, signJson, verifySignedJson } from '../src/crypto/index.js';
import { allFind, lookupEveryWay, lookupMappings, validateAndBind } from './helpers/bindings.js';
import { call, emailConf } from './helpers/email.js';
import { mergeConf, startFederationEnv, type FederationEnv } from './helpers/federation-env.js';
import {
  HUNDRED_YEARS_MS,
  V1,
  V2,
  bulkLookup,
  lookupPepper,
  lookupV1,
  registerAccount,
  serverPublicKey,
  sha256Of,
  userIdOf,
  verifyOurs,
  write,
} from './helpers/flows.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';

let env: FederationEnv;
let smtp: SmtpTestServer;
let t: TestServer;
let publicKey: Uint8Array;
let token: string;
let pepper: string;
/** the answer of binding Zed.Lookup@Example.COM over v1 */
let zed: Record<string, unknown>;

beforeAll(async () => {
  env = await startFederationEnv({});
  smtp = await startSmtpServer();
  t = await startTestServer({ conf: mergeConf(env.conf, { email: emailConf(smtp.port) }) });
  publicKey = await serverPublicKey(t);
  token = await registerAccount(t, env, 'looker');
  pepper = await lookupPepper(t, token);

  const res = await validateAndBindV1('Zed.Lookup@Example.COM', 'lookup-zed', '@zed:hs.example');
  zed = res.json;
});
afterAll(async () => {
  await t?.close();
  await smtp?.close();
  await env?.close();
});

const validateAndBindV1 = (email: string, clientSecret: string, mxid: string) =>
  validateAndBind(t, smtp, { email, clientSecret, api: 'v1', mxid });

const mappings = (algorithm: 'none' | 'sha256', addresses: string[]) =>
  lookupMappings(t, { token, pepper }, algorithm, addresses);

describe('GET /api/v1/lookup', () => {
  it('answers the signed association, whatever the case of the address', async () => {
    for (const address of ['Zed.Lookup@Example.COM', 'zed.lookup@example.com', 'ZED.LOOKUP@EXAMPLE.COM']) {
      const res = await lookupV1(t, 'email', address);
      expect(res.status, res.text).toBe(200);
      expect(res.json).toEqual(zed);
      verifyOurs(res.json, publicKey);
    }
  });

  it('answers {} for a 3PID nobody bound, or another medium', async () => {
    expect((await lookupV1(t, 'email', 'nobody@example.com')).json).toEqual({});
    const msisdn = await lookupV1(t, 'msisdn', 'zed.lookup@example.com');
    expect(msisdn.status).toBe(200);
    expect(msisdn.json).toEqual({});
  });

  it('needs medium and address: 400 M_MISSING_PARAMS', async () => {
    for (const query of ['?medium=email', '?address=zed.lookup@example.com', '']) {
      const res = await call(t.url(`${V1}/lookup${query}`));
      expect(res.status, res.text).toBe(400);
      expect(res.json['errcode']).toBe('M_MISSING_PARAMS');
    }
  });
});

describe('POST /api/v1/bulk_lookup', () => {
  it('answers [medium, address as sent, mxid] for the hits only', async () => {
    const res = await bulkLookup(t, [
      ['email', 'ZED.Lookup@example.com'],
      ['email', 'nobody@example.com'],
      ['msisdn', '15555550100'],
      ['email', 'zed.lookup@example.com'],
    ]);
    expect(res.status, res.text).toBe(200);
    expect(res.json).toEqual({
      threepids: [
        ['email', 'ZED.Lookup@example.com', '@zed:hs.example'],
        ['email', 'zed.lookup@example.com', '@zed:hs.example'],
      ],
    });
  });

  it('an empty list answers an empty list', async () => {
    expect((await bulkLookup(t, [])).json).toEqual({ threepids: [] });
  });

  it('refuses threepids that are not a list of pairs (400 M_INVALID_PARAM), or no threepids (M_MISSING_PARAMS)', async () => {
    for (const threepids of ['email zed', { email: 'zed' }, [['email']], [['email', 'a', 'b']], [[1, 2]], ['email']]) {
      const res = await bulkLookup(t, threepids);
      expect(res.status, `${JSON.stringify(threepids)}: ${res.text}`).toBe(400);
      expect(res.json['errcode']).toBe('M_INVALID_PARAM');
    }
    const missing = await call(t.url(`${V1}/bulk_lookup`), { body: {} });
    expect(missing.status).toBe(400);
    expect(missing.json['errcode']).toBe('M_MISSING_PARAMS');
  });
});

describe('GET /v2/hash_details', () => {
  it('answers the algorithms and the pepper, with the token in the header or the query', async () => {
    const res = await call(t.url(`${V2}/hash_details`), { token });
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ algorithms: ['none', 'sha256'], lookup_pepper: pepper });
    const query = await call(t.url(`${V2}/hash_details?access_token=${token}`));
    expect(query.json).toEqual(res.json);
  });

  it('needs a token: 401 M_UNAUTHORIZED', async () => {
    for (const tok of [undefined, 'not-a-token']) {
      const res = await call(t.url(`${V2}/hash_details`), { token: tok });
      expect(res.status).toBe(401);
      expect(res.json['errcode']).toBe('M_UNAUTHORIZED');
    }
  });
});

describe('POST /v2/lookup', () => {
  it('none: keys are the strings as sent, matched in any case; misses are left out', async () => {
    expect(
      await mappings('none', [
        'Zed.Lookup@Example.COM email',
        'zed.lookup@example.com email',
        'nobody@example.com email',
        'zed.lookup@example.com msisdn',
      ]),
    ).toEqual({
      'Zed.Lookup@Example.COM email': '@zed:hs.example',
      'zed.lookup@example.com email': '@zed:hs.example',
    });
  });

  it('none: any whitespace between address and medium; the key is still the string as sent', async () => {
    expect(await mappings('none', ['zed.lookup@example.com  email', 'zed.lookup@example.com\temail'])).toEqual({
      'zed.lookup@example.com  email': '@zed:hs.example',
      'zed.lookup@example.com\temail': '@zed:hs.example',
    });
  });

  it('sha256: the hash of the normalised address hits; other hashes are misses, not errors', async () => {
    const hit = sha256Of('zed.lookup@example.com', 'email', pepper);
    const unnormalised = sha256Of('Zed.Lookup@Example.COM', 'email', pepper);
    const otherPepper = sha256Of('zed.lookup@example.com', 'email', `${pepper}x`);
    expect(await mappings('sha256', [hit, unnormalised, otherPepper, 'not a hash at all', ''])).toEqual({
      [hit]: '@zed:hs.example',
    });
  });

  it('the hash helper agrees with the spec test vectors', () => {
    expect(sha256Of('alice@example.com', 'email', 'matrixrocks')).toBe('4kenr7N9drpCJ4AfalmlGQVsOn3o2RHjkADUpXJWZUc');
    expect(sha256Of('bob@example.com', 'email', 'matrixrocks')).toBe('LJwSazmv46n0hlMlsb_iYxI0_HXEqy_yj6Jm636cdT8');
    expect(sha256Of('18005552067', 'msisdn', 'matrixrocks')).toBe('nlo35_T5fzSGZzJApqu8lgIudJvmOQtDaHtr-I4rU7I');
  });

  it('an empty list answers no mappings', async () => {
    expect(await mappings('none', [])).toEqual({});
    expect(await mappings('sha256', [])).toEqual({});
  });
});

describe('an association replicated from a peer', () => {
  it("is found by every lookup; v1 answers it with the peer's signature and ours", async () => {
    const seed = generateSeed();
    const now = t.clock.now();
    const assoc = signJson(
      {
        medium: 'email',
        address: 'remote@example.com',
        mxid: '@remote:peer.example',
        ts: now,
        not_before: now,
        not_after: now + HUNDRED_YEARS_MS,
      },
      'peer.example',
      { seed, version: '0' },
    );
    await write(
      t,
      `INSERT INTO global_threepid_associations
       (medium, address, lookup_hash, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc)
       VALUES ('email', 'remote@example.com', ?, '@remote:peer.example', ?, ?, ?, 'peer.example', 1, ?)`,
      sha256Of('remote@example.com', 'email', pepper),
      now,
      now,
      now + HUNDRED_YEARS_MS,
      JSON.stringify(assoc),
    );
    const res = await lookupV1(t, 'email', 'Remote@example.com');
    expect(res.status, res.text).toBe(200);
    expect(Object.keys(res.json['signatures'] as object).sort()).toEqual(['is.example.test', 'peer.example']);
    verifySignedJson(res.json, 'peer.example', 'ed25519:0', publicKeyFromSeed(seed));
    verifyOurs(res.json, publicKey);
    expect((await bulkLookup(t, [['email', 'remote@example.com']])).json).toEqual({
      threepids: [['email', 'remote@example.com', '@remote:peer.example']],
    });
    const hash = sha256Of('remote@example.com', 'email', pepper);
    expect(await mappings('sha256', [hash])).toEqual({ [hash]: '@remote:peer.example' });
    expect(await mappings('none', ['REMOTE@example.com email'])).toEqual({
      'REMOTE@example.com email': '@remote:peer.example',
    });
  });
});

describe('Unicode case folding (not just lower-casing)', () => {
  it('Strauß@Example.com is bound as strauss@example.com and found by every spelling', async () => {
    const bound = await validateAndBindV1('Strauß@Example.com', 'lookup-strauss', '@strauss:hs.example');
    expect(bound.json['address']).toBe('strauss@example.com');

    for (const address of ['STRAUSS@example.com', 'strauß@example.com', 'Strauss@EXAMPLE.com']) {
      expect((await lookupV1(t, 'email', address)).json['mxid']).toBe('@strauss:hs.example');
    }
    expect((await bulkLookup(t, [['email', 'STRAUß@example.com']])).json).toEqual({
      threepids: [['email', 'STRAUß@example.com', '@strauss:hs.example']],
    });
    expect(await mappings('none', ['STRAUSS@example.com email', 'strauß@Example.com email'])).toEqual({
      'STRAUSS@example.com email': '@strauss:hs.example',
      'strauß@Example.com email': '@strauss:hs.example',
    });
    const hash = sha256Of('strauss@example.com', 'email', pepper);
    expect(await mappings('sha256', [hash, sha256Of('strauß@example.com', 'email', pepper)])).toEqual({
      [hash]: '@strauss:hs.example',
    });
  });
});

describe('re-binding a 3PID to another user: every lookup answers the newest binding', () => {
  const everyLookup = (address: string, sentAs = address) =>
    lookupEveryWay(t, { token, pepper }, 'email', address, sentAs);
  /** `email` validated with the token of `localpart`, then bound to that user */
  const bindOverV2 = (localpart: string, userToken: string, email: string, clientSecret: string) =>
    validateAndBind(t, smtp, { email, clientSecret, api: 'v2', token: userToken, mxid: userIdOf(env, localpart) });

  it('v2 binds, a new session each time, the clock moving between them', async () => {
    const zoe = await registerAccount(t, env, 'zoe');
    const adam = await registerAccount(t, env, 'adam');
    // the newer binding's mxid sorts first: a lookup that picked the greatest mxid (Sydent) would answer @zoe
    await bindOverV2('zoe', zoe, 'Moving@Example.com', 'rebind-1');
    expect(await everyLookup('moving@example.com', 'Moving@Example.com')).toEqual(allFind(userIdOf(env, 'zoe')));

    (t.clock as ManualClock).advance(60_000);
    const b2 = await bindOverV2('adam', adam, 'moving@example.com', 'rebind-2');
    expect(await everyLookup('moving@example.com', 'Moving@Example.com')).toEqual(allFind(userIdOf(env, 'adam')));
    expect((await lookupV1(t, 'email', 'moving@example.com')).json).toEqual(b2.json);

    // and back again
    (t.clock as ManualClock).advance(60_000);
    await bindOverV2('zoe', zoe, 'moving@example.com', 'rebind-3');
    expect(await everyLookup('moving@example.com')).toEqual(allFind(userIdOf(env, 'zoe')));
  });

  it('v1 binds within the same millisecond (equal ts): sha256 too must answer the newest, ties broken by row id like the other lookups', async () => {
    await validateAndBindV1('samems@example.com', 'rebind-ms-1', '@zz-first:hs.example');
    await validateAndBindV1('samems@example.com', 'rebind-ms-2', '@aa-second:hs.example');
    expect(await everyLookup('samems@example.com')).toEqual(allFind('@aa-second:hs.example'));
  });
});
