/**
 * The internal API (`POST <internal listener>/_matrix/identity/internal/bind` and `/unbind`, no auth): a bind
 * answers and stores exactly what a validated bind does; an unbind takes the 3PID out of every lookup and leaves a
 * tombstone in the local log; an unbind of something not bound is `{}` and changes nothing. None of it is on the
 * client listener.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManualClock } from '../src/clock.js';
import { allFind, expectAssociationMadeAt, expectBindingStored, lookupEveryWay } from './helpers/bindings.js';
import { call } from './helpers/email.js';
import { mergeConf, startFederationEnv, type FederationEnv } from './helpers/federation-env.js';
import {
  INTERNAL,
  associationCounts,
  associationRows,
  bulkLookup,
  databaseSnapshot,
  internal,
  lookupPepper,
  lookupV1,
  registerAccount,
  serverPublicKey,
  sha256Of,
  userIdOf,
  verifyOurs,
} from './helpers/flows.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let env: FederationEnv;
let t: TestServer;
let token: string;
let pepper: string;
let publicKey: Uint8Array;

beforeAll(async () => {
  env = await startFederationEnv({});
  t = await startTestServer({ conf: mergeConf(env.conf) });
  token = await registerAccount(t, env, 'internal');
  pepper = await lookupPepper(t, token);
  publicKey = await serverPublicKey(t);
});
afterAll(async () => {
  await t?.close();
  await env?.close();
});

const clock = () => t.clock as ManualClock;

const everyLookup = (medium: string, address: string, sentAs = address) =>
  lookupEveryWay(t, { token, pepper }, medium, address, sentAs);

describe('internal bind', () => {
  it('answers the signed association and stores it like a validated bind', async () => {
    clock().advance(1000);
    const now = t.clock.now();
    const res = await internal(t, 'bind', {
      medium: 'email',
      address: 'Ivy.Internal@Example.COM',
      mxid: '@ivy:hs.example',
    });
    expect(res.status, res.text).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const ivy = { medium: 'email', address: 'ivy.internal@example.com', mxid: '@ivy:hs.example' };
    expectAssociationMadeAt(res.json, ivy, now);
    verifyOurs(res.json, publicKey);

    const lookupHash = sha256Of('ivy.internal@example.com', 'email', pepper);
    expectBindingStored(t, ivy, { ts: now, lookupHash, answer: res.json });
    expect(await everyLookup('email', 'ivy.internal@example.com', 'IVY.internal@example.com')).toEqual(
      allFind('@ivy:hs.example'),
    );
    expect((await lookupV1(t, 'email', 'ivy.internal@example.com')).json).toEqual(res.json);
  });

  it('binds an msisdn, found by every lookup', async () => {
    const res = await internal(t, 'bind', { medium: 'msisdn', address: '15555550123', mxid: '@phone:hs.example' });
    expect(res.status, res.text).toBe(200);
    expect(res.json).toMatchObject({ medium: 'msisdn', address: '15555550123', mxid: '@phone:hs.example' });
    expect(await everyLookup('msisdn', '15555550123')).toEqual(allFind('@phone:hs.example'));
  });

  it('missing fields: 400 M_MISSING_PARAMS, nothing stored', async () => {
    const full = { medium: 'email', address: 'partial@example.com', mxid: '@partial:hs.example' };
    const before = associationCounts(t);
    for (const what of ['bind', 'unbind'] as const) {
      for (const key of [...Object.keys(full), 'all']) {
        const body: Record<string, unknown> = key === 'all' ? {} : { ...full };
        delete body[key];
        const res = await internal(t, what, body);
        expect(res.status, `${what} without ${key}: ${res.text}`).toBe(400);
        expect(res.json['errcode']).toBe('M_MISSING_PARAMS');
      }
    }
    expect(associationCounts(t)).toEqual(before);
  });
});

describe('what the internal API refuses (as the client API would): 400 M_INVALID_PARAM, nothing stored, no callback', () => {
  const mxid = () => userIdOf(env, 'refused');
  const cases = (): Array<[string, Record<string, unknown>]> => [
    ['a medium with a header injection', { medium: 'x\r\nX-Injected: yes', address: 'crlf@example.com', mxid: mxid() }],
    ['a medium with a NUL', { medium: 'x\u0000y', address: 'nul@example.com', mxid: mxid() }],
    ['a medium with a right-to-left override', { medium: '\u202eliame', address: 'rtl@example.com', mxid: mxid() }],
    ['an unknown medium', { medium: 'phone', address: '15555550199', mxid: mxid() }],
    ['a medium in capitals', { medium: 'EMAIL', address: 'caps@example.com', mxid: mxid() }],
    ['an email address with a display name', { medium: 'email', address: 'Eve <eve@example.com>', mxid: mxid() }],
    [
      'an email address with a line break',
      { medium: 'email', address: 'eve@example.com\r\nBcc: x@example.com', mxid: mxid() },
    ],
    ['an email address that is not one', { medium: 'email', address: 'not an address', mxid: mxid() }],
    ['an msisdn of letters', { medium: 'msisdn', address: 'call me', mxid: mxid() }],
    ['an msisdn too short to be a number', { medium: 'msisdn', address: '12', mxid: mxid() }],
    ['an mxid without @', { medium: 'email', address: 'mxid1@example.com', mxid: `refused:${env.serverName}` }],
    ['an mxid without a server', { medium: 'email', address: 'mxid2@example.com', mxid: '@refused' }],
    ['an mxid with an empty localpart', { medium: 'email', address: 'mxid3@example.com', mxid: `@:${env.serverName}` }],
    ['an mxid with a space', { medium: 'email', address: 'mxid4@example.com', mxid: `@re fused:${env.serverName}` }],
    [
      'an mxid with a line break',
      { medium: 'email', address: 'mxid5@example.com', mxid: `@refused\r\n:${env.serverName}` },
    ],
    ['an mxid with a bad server name', { medium: 'email', address: 'mxid6@example.com', mxid: '@refused:bad_server!' }],
    [
      'an mxid over 255 characters',
      { medium: 'email', address: 'mxid7@example.com', mxid: `@${'r'.repeat(250)}:${env.serverName}` },
    ],
  ];

  it('bind and unbind', async () => {
    const before = { db: databaseSnapshot(t), homeserver: env.hs.requests.length };
    for (const what of ['bind', 'unbind'] as const) {
      for (const [name, body] of cases()) {
        const res = await internal(t, what, body);
        expect(res.status, `${what}, ${name}: ${res.text}`).toBe(400);
        expect(res.json, `${what}, ${name}`).toEqual({ errcode: 'M_INVALID_PARAM', error: expect.any(String) });
      }
    }
    // a callback would be delivered at once: a moment for one that should not exist
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect({ db: databaseSnapshot(t), homeserver: env.hs.requests.length }).toEqual(before);
  });

  it('what it accepts is stored in the canonical form: a formatted msisdn as its E.164 digits', async () => {
    const res = await internal(t, 'bind', {
      medium: 'msisdn',
      address: '+1 (555) 555-0124',
      mxid: '@formatted:hs.example',
    });
    expect(res.status, res.text).toBe(200);
    expect(res.json).toMatchObject({ medium: 'msisdn', address: '15555550124' });
    expect(await everyLookup('msisdn', '15555550124')).toEqual(allFind('@formatted:hs.example'));
    const gone = await internal(t, 'unbind', {
      medium: 'msisdn',
      address: '+15555550124',
      mxid: '@formatted:hs.example',
    });
    expect(gone.status, gone.text).toBe(200);
    expect(await everyLookup('msisdn', '15555550124')).toEqual(allFind(undefined));
  });
});

describe('internal unbind', () => {
  it('takes the 3PID out of every lookup and writes a tombstone (mxid NULL) in the local log', async () => {
    const bound = await internal(t, 'bind', { medium: 'email', address: 'gone@example.com', mxid: '@gone:hs.example' });
    expect(bound.status).toBe(200);
    expect(await everyLookup('email', 'gone@example.com')).toEqual(allFind('@gone:hs.example'));
    const boundId = associationRows(t, 'email', 'gone@example.com').local[0]!['id'] as number;

    clock().advance(5000);
    const now = t.clock.now();
    // the address in another case is the same 3PID
    const res = await internal(t, 'unbind', { medium: 'email', address: 'Gone@Example.com', mxid: '@gone:hs.example' });
    expect(res.status, res.text).toBe(200);
    expect(res.json).toEqual({});

    expect(await everyLookup('email', 'gone@example.com')).toEqual(allFind(undefined));
    expect((await lookupV1(t, 'email', 'gone@example.com')).json).toEqual({});
    expect((await bulkLookup(t, [['email', 'gone@example.com']])).json).toEqual({ threepids: [] });
    const { local, global } = associationRows(t, 'email', 'gone@example.com');
    expect(global).toEqual([]);
    expect(local).toHaveLength(1);
    expect(local[0]).toMatchObject({ medium: 'email', address: 'gone@example.com', mxid: null, ts: now });
    // a new row: the replication log moves forward
    expect(local[0]!['id'] as number).toBeGreaterThan(boundId);
  });

  it('of something not bound: {} and nothing changes', async () => {
    const before = associationCounts(t);
    const res = await internal(t, 'unbind', {
      medium: 'email',
      address: 'never@example.com',
      mxid: '@never:hs.example',
    });
    expect(res.status, res.text).toBe(200);
    expect(res.json).toEqual({});
    expect(associationCounts(t)).toEqual(before);
    expect(associationRows(t, 'email', 'never@example.com')).toEqual({ local: [], global: [] });
  });

  it('with an mxid that is not the bound one: {} and the binding stays', async () => {
    await internal(t, 'bind', { medium: 'email', address: 'kept@example.com', mxid: '@keeper:hs.example' });
    const before = associationRows(t, 'email', 'kept@example.com');
    const res = await internal(t, 'unbind', {
      medium: 'email',
      address: 'kept@example.com',
      mxid: '@someone:hs.example',
    });
    expect(res.status).toBe(200);
    expect(res.json).toEqual({});
    expect(associationRows(t, 'email', 'kept@example.com')).toEqual(before);
    expect(await everyLookup('email', 'kept@example.com')).toEqual(allFind('@keeper:hs.example'));
  });

  it('after a re-bind to another user, unbinding the former user leaves the new binding', async () => {
    await internal(t, 'bind', { medium: 'email', address: 'moved@example.com', mxid: '@old:hs.example' });
    clock().advance(1000);
    await internal(t, 'bind', { medium: 'email', address: 'moved@example.com', mxid: '@new:hs.example' });
    expect(await everyLookup('email', 'moved@example.com')).toEqual(allFind('@new:hs.example'));
    const res = await internal(t, 'unbind', { medium: 'email', address: 'moved@example.com', mxid: '@old:hs.example' });
    expect(res.json).toEqual({});
    expect(await everyLookup('email', 'moved@example.com')).toEqual(allFind('@new:hs.example'));
    // and the current one goes
    await internal(t, 'unbind', { medium: 'email', address: 'moved@example.com', mxid: '@new:hs.example' });
    expect(await everyLookup('email', 'moved@example.com')).toEqual(allFind(undefined));
  });

  it('a second unbind of the same binding answers {} and writes nothing more', async () => {
    await internal(t, 'bind', { medium: 'email', address: 'twice@example.com', mxid: '@twice:hs.example' });
    await internal(t, 'unbind', { medium: 'email', address: 'twice@example.com', mxid: '@twice:hs.example' });
    const after = associationRows(t, 'email', 'twice@example.com');
    clock().advance(1000);
    const res = await internal(t, 'unbind', {
      medium: 'email',
      address: 'twice@example.com',
      mxid: '@twice:hs.example',
    });
    expect(res.json).toEqual({});
    expect(associationRows(t, 'email', 'twice@example.com')).toEqual(after);
  });
});

describe('the client listener', () => {
  it('has no internal endpoints: 404 M_UNRECOGNIZED, nothing stored', async () => {
    const before = associationCounts(t);
    for (const what of ['bind', 'unbind']) {
      const res = await call(t.url(`${INTERNAL}/${what}`), {
        body: { medium: 'email', address: 'outside@example.com', mxid: '@outside:hs.example' },
      });
      expect(res.status, res.text).toBe(404);
      expect(res.json['errcode']).toBe('M_UNRECOGNIZED');
    }
    expect(associationCounts(t)).toEqual(before);
  });

  it('the internal listener is a different port', () => {
    expect(new URL(t.internalUrl('/')).port).not.toBe(new URL(t.url('/')).port);
  });
});
