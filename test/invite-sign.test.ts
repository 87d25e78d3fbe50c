/**
 * What the keys of a stored invite are good for: `GET …/pubkey/ephemeral/isvalid` and `…/pubkey/isvalid` (asked
 * by homeservers through key_validity_url), and `POST …/sign-ed25519`, with which an invitee's client signs the
 * invite with the ephemeral private key from the mail.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeBase64, encodeBase64, verifySignedJson } from '../src/crypto/index.js';
import { call, emailConf, sameMailbox, type Reply } from './helpers/email.js';
import { mergeConf, startFederationEnv, type FederationEnv } from './helpers/federation-env.js';
import { registerAccount, serverPublicKey, userIdOf, V1, V2 } from './helpers/flows.js';
import { ephemeralKeyRows, inviteBody, readInviteMail, storeInvite, type InviteMail } from './helpers/invites.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';

const SERVER_NAME = 'is.example.test';

let smtp: SmtpTestServer;
let env: FederationEnv;
let t: TestServer;
let longTermKey: Uint8Array;

interface Invited {
  token: string;
  /** the ephemeral public key as store-invite answered it (URL-safe) */
  ephemeral: string;
  mail: InviteMail;
  sender: string;
}

let invited: Invited;

async function invite(address: string, sender = '@alice:hs.test'): Promise<Invited> {
  const res = await storeInvite(t, 'v1', inviteBody({ address, sender }));
  expect(res.status, res.text).toBe(200);
  const mail = smtp.messages.find((m) => m.to.some((r) => sameMailbox(r, address)));
  if (!mail) throw new Error(`no mail to ${address}`);
  return {
    token: res.json['token'] as string,
    ephemeral: (res.json['public_keys'] as { public_key: string }[])[1]!.public_key,
    mail: readInviteMail(mail),
    sender,
  };
}

beforeAll(async () => {
  [smtp, env] = await Promise.all([startSmtpServer(), startFederationEnv({})]);
  t = await startTestServer({ conf: mergeConf(env.conf, { email: emailConf(smtp.port) }) });
  longTermKey = await serverPublicKey(t);
  invited = await invite('signer@example.com');
});
afterAll(async () => {
  await t?.close();
  await smtp?.close();
  await env?.close();
});

const isValid = (api: 'v1' | 'v2', path: string, key: string): Promise<Reply> =>
  call(t.url(`${api === 'v1' ? V1 : V2}${path}?public_key=${encodeURIComponent(key)}`));

/** URL-safe → standard alphabet */
const standard = (urlsafe: string) => urlsafe.replace(/-/g, '+').replace(/_/g, '/');
const urlsafe = (std: string) => std.replace(/\+/g, '-').replace(/\//g, '_');

describe('GET …/pubkey/ephemeral/isvalid', () => {
  it('the ephemeral key of an invite is valid, in the URL-safe and the standard alphabet, on v1 and v2', async () => {
    // make sure the test exercises both spellings: find an invite whose key differs between the alphabets
    let inv = invited;
    for (let i = 0; standard(inv.ephemeral) === inv.ephemeral; i++) inv = await invite(`alphabet${i}@example.com`);
    const countOf = () => ephemeralKeyRows(t).find((r) => r.public_key === inv.ephemeral)!.verify_count;
    const start = countOf();

    for (const api of ['v1', 'v2'] as const) {
      for (const key of [inv.ephemeral, standard(inv.ephemeral)]) {
        const res = await isValid(api, '/pubkey/ephemeral/isvalid', key);
        expect(res.status, res.text).toBe(200);
        expect(res.json, `${api} ${key}`).toEqual({ valid: true });
      }
    }
    // every check is counted
    expect(countOf()).toBe(start + 4);
  });

  it('any other key is not valid: a fresh key, the long-term key, garbage, empty', async () => {
    for (const key of [encodeBase64(new Uint8Array(32).fill(7)), encodeBase64(longTermKey), 'not base64 !!', '']) {
      const res = await isValid('v2', '/pubkey/ephemeral/isvalid', key);
      expect(res.status, res.text).toBe(200);
      expect(res.json, key).toEqual({ valid: false });
    }
  });

  it('without public_key: 400 M_MISSING_PARAMS', async () => {
    const res = await call(t.url(`${V2}/pubkey/ephemeral/isvalid`));
    expect(res.status, res.text).toBe(400);
    expect(res.json['errcode']).toBe('M_MISSING_PARAMS');
  });
});

describe('GET …/pubkey/isvalid (the long-term key)', () => {
  it('our key is valid in both alphabets; the ephemeral key is not', async () => {
    const std = encodeBase64(longTermKey);
    for (const key of [std, urlsafe(std)]) {
      for (const api of ['v1', 'v2'] as const) {
        const res = await isValid(api, '/pubkey/isvalid', key);
        expect(res.status, res.text).toBe(200);
        expect(res.json, `${api} ${key}`).toEqual({ valid: true });
      }
    }
    const other = await isValid('v2', '/pubkey/isvalid', invited.ephemeral);
    expect(other.json).toEqual({ valid: false });
  });
});

describe('POST …/sign-ed25519', () => {
  const expectSigned = (res: Reply, mxid: string, inv: Invited) => {
    expect(res.status, res.text).toBe(200);
    expect(Object.keys(res.json).sort()).toEqual(['mxid', 'sender', 'signatures', 'token']);
    expect(res.json).toMatchObject({ mxid, sender: inv.sender, token: inv.token });
    const sigs = res.json['signatures'] as Record<string, Record<string, string>>;
    expect(Object.keys(sigs)).toEqual([SERVER_NAME]);
    expect(Object.keys(sigs[SERVER_NAME]!)).toEqual(['ed25519:0']);
    // verifies with the ephemeral public key that store-invite answered (and not with our long-term key)
    verifySignedJson(res.json, SERVER_NAME, 'ed25519:0', decodeBase64(inv.ephemeral));
    expect(() => verifySignedJson(res.json, SERVER_NAME, 'ed25519:0', longTermKey)).toThrow();
    expect(() =>
      verifySignedJson(
        { ...res.json, mxid: '@mallory:hs.test' },
        SERVER_NAME,
        'ed25519:0',
        decodeBase64(inv.ephemeral),
      ),
    ).toThrow();
  };

  it('v1, JSON body with the private key from the mail: the signed {mxid, sender, token}', async () => {
    const res = await call(t.url(`${V1}/sign-ed25519`), {
      body: { mxid: '@bob:hs.test', token: invited.mail.token, private_key: invited.mail.privateKey },
    });
    expectSigned(res, '@bob:hs.test', invited);
  });

  it('v1 as Element calls it: the fields in the query string, an empty or null body', async () => {
    const q = new URLSearchParams({
      mxid: '@bob:hs.test',
      token: invited.mail.token,
      private_key: invited.mail.privateKey,
    });
    const url = t.url(`${V1}/sign-ed25519?${q.toString()}`);
    // no body at all
    expectSigned(await call(url, { method: 'POST' }), '@bob:hs.test', invited);
    // a JSON null body
    expectSigned(await call(url, { body: 'null' }), '@bob:hs.test', invited);
    // an empty JSON content
    const empty = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '' });
    const text = await empty.text();
    expect(empty.status, text).toBe(200);
    expectSigned(
      { status: empty.status, headers: empty.headers, json: JSON.parse(text) as Record<string, unknown>, text },
      '@bob:hs.test',
      invited,
    );
  });

  it('the private key in the standard alphabet signs too; the token can be signed again for another mxid', async () => {
    const res = await call(t.url(`${V1}/sign-ed25519`), {
      body: { mxid: '@carol:hs.test', token: invited.token, private_key: standard(invited.mail.privateKey) },
    });
    expectSigned(res, '@carol:hs.test', invited);
  });

  it('v2 needs an access token (401 without); with one it signs', async () => {
    const body = { mxid: userIdOf(env, 'bob'), token: invited.token, private_key: invited.mail.privateKey };
    const anonymous = await call(t.url(`${V2}/sign-ed25519`), { body });
    expect(anonymous.status, anonymous.text).toBe(401);
    expect(anonymous.json['errcode']).toBe('M_UNAUTHORIZED');
    const token = await registerAccount(t, env, 'bob');
    expectSigned(await call(t.url(`${V2}/sign-ed25519`), { body, token }), userIdOf(env, 'bob'), invited);
  });

  it('an unknown token: 404 M_UNRECOGNIZED', async () => {
    const res = await call(t.url(`${V1}/sign-ed25519`), {
      body: { mxid: '@bob:hs.test', token: 'NoSuchInviteToken', private_key: invited.mail.privateKey },
    });
    expect(res.status, res.text).toBe(404);
    expect(res.json['errcode']).toBe('M_UNRECOGNIZED');
    expect(typeof res.json['error']).toBe('string');
  });

  it('a private key that is not a base64 ed25519 seed: 400 M_INVALID_PARAM', async () => {
    for (const private_key of [
      'not base64 !!',
      encodeBase64(new Uint8Array(16)),
      '',
      encodeBase64(new Uint8Array(64)),
    ]) {
      const res = await call(t.url(`${V1}/sign-ed25519`), {
        body: { mxid: '@bob:hs.test', token: invited.token, private_key },
      });
      expect(res.status, `${private_key}: ${res.text}`).toBe(400);
      expect(res.json['errcode'], private_key).toBe('M_INVALID_PARAM');
    }
  });

  it('a missing field: 400 M_MISSING_PARAMS', async () => {
    const full = { mxid: '@bob:hs.test', token: invited.token, private_key: invited.mail.privateKey };
    for (const name of ['mxid', 'token', 'private_key'] as const) {
      const body: Record<string, string> = { ...full };
      delete body[name];
      const res = await call(t.url(`${V1}/sign-ed25519`), { body });
      expect(res.status, `${name}: ${res.text}`).toBe(400);
      expect(res.json['errcode'], name).toBe('M_MISSING_PARAMS');
    }
    const none = await call(t.url(`${V1}/sign-ed25519`), { method: 'POST' });
    expect(none.status, none.text).toBe(400);
    expect(none.json['errcode']).toBe('M_MISSING_PARAMS');
  });
});
