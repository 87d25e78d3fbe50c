/**
 * A third-party invite from start to end: store-invite → the mail → both public keys valid → the invitee
 * validates the address and binds it → the bind answer carries the invite, signed with our long-term key → the
 * invitee's homeserver receives `POST /_matrix/federation/v1/3pid/onbind` (from the outbox, asynchronously) with
 * that 3PID's invites only → the invite tokens are deleted (`delete_tokens_on_bind`, default) or kept with
 * sent_ts set (`delete_tokens_on_bind = false`).
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { decodeBase64, verifySignedJson } from '../src/crypto/index.js';
import { call, emailConf, sameMailbox, type Reply } from './helpers/email.js';
import { mergeConf, startFederationEnv, type FederationEnv } from './helpers/federation-env.js';
import {
  SERVER_NAME,
  V1,
  V2,
  registerAccount,
  serverPublicKey,
  userIdOf,
  validateEmail,
  verifyOurs,
} from './helpers/flows.js';
import { rows } from './helpers/rows.js';
import type { RecordedRequest } from './helpers/homeserver.js';
import { inviteBody, inviteTokenRows, readInviteMail, storeInvite, type InviteMail } from './helpers/invites.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';

const ONBIND = '/_matrix/federation/v1/3pid/onbind';

let smtp: SmtpTestServer;
let env: FederationEnv;

beforeAll(async () => {
  [smtp, env] = await Promise.all([
    startSmtpServer(),
    startFederationEnv({ [`POST ${ONBIND}`]: () => ({ json: {} }) }),
  ]);
});
afterAll(async () => {
  await smtp?.close();
  await env?.close();
});

async function startServer(general: Record<string, string> = {}): Promise<{ t: TestServer; publicKey: Uint8Array }> {
  const t = await startTestServer({ conf: mergeConf(env.conf, { general, email: emailConf(smtp.port) }) });
  return { t, publicKey: await serverPublicKey(t) };
}

interface Invited {
  token: string;
  publicKeys: { public_key: string; key_validity_url: string }[];
  mail: InviteMail;
}

async function invite(t: TestServer, address: string, roomId: string, sender = '@alice:hs.test'): Promise<Invited> {
  const res = await storeInvite(t, 'v1', inviteBody({ address, room_id: roomId, sender }));
  expect(res.status, res.text).toBe(200);
  const token = res.json['token'] as string;
  const mail = await smtp.waitForMessage((m) => m.to.some((r) => sameMailbox(r, address)) && m.raw.includes(token));
  return { token, publicKeys: res.json['public_keys'] as Invited['publicKeys'], mail: readInviteMail(mail) };
}

/** What a homeserver does with key_validity_url: GET it with the key (here on our own listener). */
async function keyIsValid(t: TestServer, key: { public_key: string; key_validity_url: string }): Promise<boolean> {
  const url = new URL(key.key_validity_url);
  const res = await call(t.url(`${url.pathname}?public_key=${encodeURIComponent(key.public_key)}`));
  expect(res.status, res.text).toBe(200);
  return res.json['valid'] === true;
}

const onbinds = (mxid: string): RecordedRequest[] =>
  env.hs.requests.filter(
    (r) => r.method === 'POST' && r.url === ONBIND && (JSON.parse(r.body) as { mxid?: string }).mxid === mxid,
  );

/** The onbind the homeserver received for `mxid` (polled: delivery is asynchronous). */
async function waitForOnbind(mxid: string): Promise<Record<string, unknown>> {
  const req = await vi.waitFor(
    () => {
      const first = onbinds(mxid)[0];
      expect(first, `POST ${ONBIND} for ${mxid}`).toBeDefined();
      return first!;
    },
    { timeout: 8000, interval: 25 },
  );
  expect(req.headers['content-type']).toMatch(/^application\/json/);
  return JSON.parse(req.body) as Record<string, unknown>;
}

interface SignedInvite {
  medium: string;
  address: string;
  mxid: string;
  room_id: string;
  sender: string;
  token?: string;
  signed: { mxid: string; token: string; signatures: Record<string, Record<string, string>> };
}

function expectInvites(
  invites: unknown,
  mxid: string,
  address: string,
  expected: { token: string; room_id: string }[],
  publicKey: Uint8Array,
) {
  const list = invites as SignedInvite[];
  expect(
    list.map((i) => ({ token: i.signed.token, room_id: i.room_id })).sort((a, b) => a.room_id.localeCompare(b.room_id)),
  ).toEqual([...expected].sort((a, b) => a.room_id.localeCompare(b.room_id)));
  for (const inv of list) {
    expect(inv).toMatchObject({ medium: 'email', address, mxid, sender: '@alice:hs.test' });
    expect(Object.keys(inv.signed).sort()).toEqual(['mxid', 'signatures', 'token']);
    expect(inv.signed.mxid).toBe(mxid);
    // signed with OUR long-term key: homeservers check it against public_keys[0] of the room event
    verifyOurs(inv.signed, publicKey);
    expect(() => verifyOurs({ ...inv.signed, mxid: '@mallory:hs.test' }, publicKey)).toThrow();
  }
}

describe('delete_tokens_on_bind (default true), v1 bind', () => {
  let t: TestServer;
  let publicKey: Uint8Array;
  beforeAll(async () => {
    ({ t, publicKey } = await startServer());
  });
  afterAll(async () => {
    await t?.close();
  });

  it('store-invite → mail → keys valid → validate + bind → signed invite in the answer and in onbind → tokens deleted', async () => {
    const bob = userIdOf(env, 'bob');
    const typed = 'Bob.Invitee@Example.com';
    const address = 'bob.invitee@example.com';

    // two invites for bob's address, one for somebody else
    const first = await invite(t, typed, '!room1:hs.test');
    const second = await invite(t, address, '!room2:hs.test');
    const other = await invite(t, 'someone.else@example.com', '!room3:hs.test');

    // the mail carries the token and the ephemeral private key; the invitee's client can sign with it
    expect(first.mail.token).toBe(first.token);
    const signed = await call(t.url(`${V1}/sign-ed25519`), {
      body: { mxid: bob, token: first.mail.token, private_key: first.mail.privateKey },
    });
    expect(signed.status, signed.text).toBe(200);
    verifySignedJson(signed.json, SERVER_NAME, 'ed25519:0', decodeBase64(first.publicKeys[1]!.public_key));

    // a homeserver checks both keys through their validity URLs
    expect(await keyIsValid(t, first.publicKeys[0]!)).toBe(true);
    expect(await keyIsValid(t, first.publicKeys[1]!)).toBe(true);

    // the invitee validates the address and binds it
    const sid = await validateEmail(t, smtp, { email: typed, clientSecret: 'onbind-bob', api: 'v1' });
    const bind = await call(t.url(`${V1}/3pid/bind`), { body: { sid, client_secret: 'onbind-bob', mxid: bob } });
    expect(bind.status, bind.text).toBe(200);
    expect(bind.json).toMatchObject({ medium: 'email', address, mxid: bob });
    verifyOurs(bind.json, publicKey);
    const expected = [
      { token: first.token, room_id: '!room1:hs.test' },
      { token: second.token, room_id: '!room2:hs.test' },
    ];
    expectInvites(bind.json['invites'], bob, address, expected, publicKey);

    // the invitee's homeserver is told, with the same signed association
    const body = await waitForOnbind(bob);
    expect(body).toMatchObject({ medium: 'email', address, mxid: bob });
    verifyOurs(body, publicKey);
    expectInvites(body['invites'], bob, address, expected, publicKey);
    expect(JSON.stringify(body)).not.toContain(other.token);

    // after a 200 from the homeserver the tokens of that 3PID are deleted; other invites stay
    await vi.waitFor(
      () =>
        expect(
          inviteTokenRows(t).some((r) => r.address === address),
          'tokens deleted',
        ).toBe(false),
      { timeout: 5000, interval: 25 },
    );
    expect(inviteTokenRows(t).filter((r) => r.token === other.token)).toMatchObject([
      { address: 'someone.else@example.com', sent_ts: null },
    ]);
    // the ephemeral key stays valid (Sydent never expires them)
    expect(await keyIsValid(t, first.publicKeys[1]!)).toBe(true);
  });

  it('a later bind of another address carries none of those invites (Sydent shared them: defect 1)', async () => {
    const carol = userIdOf(env, 'carol');
    const sid = await validateEmail(t, smtp, {
      email: 'carol.later@example.com',
      clientSecret: 'onbind-carol',
      api: 'v1',
    });
    const bind = await call(t.url(`${V1}/3pid/bind`), { body: { sid, client_secret: 'onbind-carol', mxid: carol } });
    expect(bind.status, bind.text).toBe(200);
    expect(bind.json['invites']).toBeUndefined();
    const body = await waitForOnbind(carol);
    expect(body['invites']).toBeUndefined();
    verifyOurs(body, publicKey);
  });
});

describe('delete_tokens_on_bind = false, v2 bind with an account', () => {
  let t: TestServer;
  let publicKey: Uint8Array;
  beforeAll(async () => {
    ({ t, publicKey } = await startServer({ delete_tokens_on_bind: 'false' }));
  });
  afterAll(async () => {
    await t?.close();
  });

  it('the invite reaches the homeserver, and the token rows stay with sent_ts set', async () => {
    const dave = userIdOf(env, 'dave');
    const address = 'dave.invitee@example.com';
    const inv = await invite(t, address, '!room4:hs.test');
    expect(inviteTokenRows(t).filter((r) => r.token === inv.token)).toMatchObject([{ sent_ts: null }]);

    const token = await registerAccount(t, env, 'dave');
    const sid = await validateEmail(t, smtp, { email: address, clientSecret: 'onbind-dave', api: 'v2', token });
    const before = Math.floor(t.clock.now() / 1000);
    const bind: Reply = await call(t.url(`${V2}/3pid/bind`), {
      body: { sid, client_secret: 'onbind-dave', mxid: dave },
      token,
    });
    expect(bind.status, bind.text).toBe(200);
    expectInvites(bind.json['invites'], dave, address, [{ token: inv.token, room_id: '!room4:hs.test' }], publicKey);

    const body = await waitForOnbind(dave);
    expectInvites(body['invites'], dave, address, [{ token: inv.token, room_id: '!room4:hs.test' }], publicKey);

    // once the notifier recorded the delivery, the row is still there, marked sent
    await vi.waitFor(
      () =>
        expect(
          rows(t, "SELECT 1 FROM callback_outbox WHERE address = ? AND state = 'delivered'", address),
          'the delivery recorded',
        ).not.toHaveLength(0),
      { timeout: 5000, interval: 25 },
    );
    const left = inviteTokenRows(t).filter((r) => r.token === inv.token);
    expect(left).toHaveLength(1);
    expect(left[0]!.sent_ts).toBeGreaterThanOrEqual(before);
    expect(left[0]!.sent_ts).toBeLessThan(1e11); // seconds

    // a second bind of the same address sends no invite again (it was sent)
    const again = await call(t.url(`${V2}/3pid/bind`), {
      body: { sid, client_secret: 'onbind-dave', mxid: dave },
      token,
    });
    expect(again.status, again.text).toBe(200);
    expect(again.json['invites']).toBeUndefined();
  });
});
