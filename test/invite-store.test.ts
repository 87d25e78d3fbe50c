/**
 * `POST …/store-invite` (v1 without auth, v2 with an access token whose user is the `sender`): the answer a
 * homeserver gets, the invite mail that reaches the invitee (subject, room, web client, the token and the
 * ephemeral private key inside the link), the rows kept, and the redacted display_name.
 * Refusals are in invite-refusals.test.ts; pubkey/isvalid and sign-ed25519 in invite-sign.test.ts; the bind
 * that delivers the invite to the homeserver in invite-onbind.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeBase64, encodeBase64Url, publicKeyFromSeed } from '../src/crypto/index.js';
import { emailConf, sameMailbox } from './helpers/email.js';
import { mergeConf, startFederationEnv, type FederationEnv } from './helpers/federation-env.js';
import { registerAccount, serverPublicKey, userIdOf } from './helpers/flows.js';
import {
  ephemeralKeyRows,
  inviteBody,
  inviteTokenRows,
  pyQuote,
  readInviteMail,
  storeInvite,
} from './helpers/invites.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { startSmtpServer, type ReceivedMail, type SmtpTestServer } from './helpers/smtp.js';

const CLIENT_HTTP_BASE = 'https://is.example.test';
const TOKEN_CHARS = /^[0-9a-zA-Z.=_-]{1,255}$/;
const URLSAFE_B64 = /^[A-Za-z0-9_-]{43}$/;

let smtp: SmtpTestServer;
let env: FederationEnv;
let t: TestServer;
let longTermKey: string;

beforeAll(async () => {
  [smtp, env] = await Promise.all([startSmtpServer(), startFederationEnv({})]);
  t = await startTestServer({ conf: mergeConf(env.conf, { email: emailConf(smtp.port) }) });
  longTermKey = Buffer.from(await serverPublicKey(t))
    .toString('base64')
    .replace(/=+$/, '');
});
afterAll(async () => {
  await t?.close();
  await smtp?.close();
  await env?.close();
});

const mailsTo = (address: string): ReceivedMail[] =>
  smtp.messages.filter((m) => m.to.some((r) => sameMailbox(r, address)));

async function theMailTo(address: string): Promise<ReceivedMail> {
  // store-invite answers once the SMTP server took the mail: it is already there
  const mails = mailsTo(address);
  expect(mails, `mails to ${address}`).toHaveLength(1);
  return mails[0]!;
}

describe('v1 store-invite (no authentication)', () => {
  it('answers the token, both public keys with their validity URLs, and the redacted display_name', async () => {
    const before = Math.floor(t.clock.now() / 1000);
    const res = await storeInvite(t, 'v1', inviteBody({ address: 'Invitee@Example.com' }));
    expect(res.status, res.text).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const token = res.json['token'] as string;
    expect(token).toMatch(TOKEN_CHARS);
    const keys = res.json['public_keys'] as { public_key: string; key_validity_url: string }[];
    expect(keys).toHaveLength(2);
    expect(keys[0]).toEqual({
      public_key: longTermKey,
      key_validity_url: `${CLIENT_HTTP_BASE}/_matrix/identity/v2/pubkey/isvalid`,
    });
    expect(keys[1]!.key_validity_url).toBe(`${CLIENT_HTTP_BASE}/_matrix/identity/v2/pubkey/ephemeral/isvalid`);
    expect(keys[1]!.public_key).toMatch(URLSAFE_B64);
    expect(keys[1]!.public_key).not.toBe(longTermKey);
    expect(res.json['display_name']).toBe('Inv...@Exa...');

    // the rows: the casefolded address, Sydent's seconds, not sent yet
    const tokenRows = inviteTokenRows(t).filter((r) => r.token === token);
    expect(tokenRows).toHaveLength(1);
    expect(tokenRows[0]).toMatchObject({
      medium: 'email',
      address: 'invitee@example.com',
      room_id: '!room:hs.test',
      sender: '@alice:hs.test',
      token,
      sent_ts: null,
    });
    expect(tokenRows[0]!.received_ts).toBeGreaterThanOrEqual(before);
    expect(tokenRows[0]!.received_ts).toBeLessThan(1e11); // seconds, not milliseconds
    const keyRows = ephemeralKeyRows(t).filter((r) => r.public_key === keys[1]!.public_key);
    expect(keyRows).toHaveLength(1);
    expect(keyRows[0]!.persistence_ts).toBeGreaterThanOrEqual(before);
    expect(keyRows[0]!.persistence_ts).toBeLessThan(1e11);
    expect(keyRows[0]!.verify_count).toBe(0);
  });

  it('mails the invitee: subject, room name, default web client, and the token and private key in the link', async () => {
    const address = 'Mail.Invitee@Example.com';
    const res = await storeInvite(
      t,
      'v1',
      inviteBody({ address, room_name: 'Tea & Cake', sender_display_name: 'Alice Liddell', room_id: '!tea:hs.test' }),
    );
    expect(res.status, res.text).toBe(200);
    const mail = await theMailTo(address);
    expect(mail.to).toHaveLength(1);
    const invite = readInviteMail(mail);

    expect(invite.subject).toBe('Alice Liddell has invited you to chat');
    // v1: the sender is not verified, so it is not named in brackets
    expect(invite.text).toContain(
      'Alice Liddell has invited you to join a Matrix room\r\n(Tea & Cake) using this email address.',
    );
    expect(invite.text).not.toContain('(@alice:hs.test)');
    expect(invite.webClientLocation).toBe('https://app.element.io');
    expect(invite.roomId).toBe('!tea:hs.test');
    expect(invite.link).toContain(`/#/room/${pyQuote('!tea:hs.test')}?`); // %21tea%3Ahs.test
    expect(invite.params.get('room_name')).toBe('Tea & Cake');
    expect(invite.link).toContain('&room_name=Tea%20%26%20Cake&');
    expect(invite.params.get('inviter_name')).toBe('Alice Liddell');
    expect(invite.params.get('room_avatar_url')).toBe('mxc://hs.test/avatar');
    expect(invite.params.get('email')?.toLowerCase()).toBe(address.toLowerCase());

    // the token of the answer and the ephemeral private key, URL-quoted inside the sign URL
    const token = res.json['token'] as string;
    expect(invite.token).toBe(token);
    expect(invite.link).toContain(`%3Ftoken%3D${pyQuote(token)}%26private_key%3D${pyQuote(invite.privateKey)}&`);
    expect(invite.signUrl.pathname).toMatch(/\/_matrix\/identity\/(api\/v1|v2)\/sign-ed25519$/);
    // the private key is the seed of the ephemeral public key answered
    const ephemeral = (res.json['public_keys'] as { public_key: string }[])[1]!.public_key;
    expect(encodeBase64Url(publicKeyFromSeed(decodeBase64(invite.privateKey)))).toBe(ephemeral);
    // the private key is nowhere in the answer or the database
    expect(res.text).not.toContain(invite.privateKey);
    expect(JSON.stringify(ephemeralKeyRows(t))).not.toContain(invite.privateKey);

    // the HTML part carries the same link, HTML-escaped
    expect(invite.html).toContain('Tea &amp; Cake');
    expect(invite.html).toContain(`private_key%3D${pyQuote(invite.privateKey)}`);
  });

  it('a space: "… has invited you to a space"; the web client location the homeserver sent', async () => {
    const address = 'space.invitee@example.com';
    const res = await storeInvite(
      t,
      'v1',
      inviteBody({
        address,
        room_type: 'm.space',
        room_name: 'Space Station',
        sender_display_name: 'Ålice ✨',
        'org.matrix.web_client_location': 'https://chat.example.org',
      }),
    );
    expect(res.status, res.text).toBe(200);
    const invite = readInviteMail(await theMailTo(address));
    // non-ASCII survives the RFC 2047 encoding
    expect(invite.subject).toBe('Ålice ✨ has invited you to a space');
    expect(invite.text).toContain('has invited you to join a Matrix space\r\n(Space Station) using');
    expect(invite.webClientLocation).toBe('https://chat.example.org');
    expect(invite.params.get('room_type')).toBe('m.space');
    expect(invite.token).toBe(res.json['token']);
  });

  it('a web client location that is not an http(s) URL never reaches the mail: the configured default instead', async () => {
    const cases = [
      'javascript:alert(1)',
      'JavaScript:alert(document.cookie)//',
      ' javascript:alert(1)',
      'java\nscript:alert(1)',
      'data:text/html,<script>alert(1)</script>',
      'vbscript:msgbox(1)',
      '//evil.example',
      'https://evil.example" onclick="alert(1)',
      'not a url',
    ];
    for (const [i, location] of cases.entries()) {
      const address = `web.client.${i}@example.com`;
      const res = await storeInvite(t, 'v1', inviteBody({ address, 'org.matrix.web_client_location': location }));
      expect(res.status, `${location}: ${res.text}`).toBe(200);
      const invite = readInviteMail(await theMailTo(address));
      expect(invite.webClientLocation, location).toBe('https://app.element.io');
      expect(invite.html, location).toContain('href="https://app.element.io/#/room/');
      expect(invite.html.toLowerCase(), location).not.toMatch(/script:|onclick|evil\.example/);
    }
  });

  it('an http(s) web client location reaches the mail as the URL parser writes it (no line break, quote or space)', async () => {
    const address = 'web.client.parsed@example.com';
    const res = await storeInvite(
      t,
      'v1',
      inviteBody({ address, 'org.matrix.web_client_location': 'HTTPS://Chat.Example.org/app\r\n"x y' }),
    );
    expect(res.status, res.text).toBe(200);
    const invite = readInviteMail(await theMailTo(address));
    expect(invite.webClientLocation).toBe('https://chat.example.org/app%22x%20y');
    expect(invite.html).toContain('href="https://chat.example.org/app%22x%20y/#/room/');
  });

  it('extra keys are accepted; long names are shortened in the mail only', async () => {
    const address = 'extra.keys@example.com';
    const longName = 'The Very Long Room Name Of The Tea Party';
    const res = await storeInvite(
      t,
      'v1',
      inviteBody({
        address,
        room_name: longName,
        sender_display_name: 'Alice Pleasance Liddell',
        custom_field: 'x',
        guest_user_id: '@g:hs.test',
      }),
    );
    expect(res.status, res.text).toBe(200);
    const invite = readInviteMail(await theMailTo(address));
    expect(invite.subject).toBe('Alice Pleasance Lid… has invited you to chat');
    expect(invite.text).toContain('(The Very Long Room Name O…) using');
    expect(invite.params.get('guest_user_id')).toBe('@g:hs.test');
  });

  it('the row keeps the address Unicode-casefolded (ß → ss), the mail goes to the address as sent', async () => {
    const address = 'Strauß.Invite@Example.COM';
    const res = await storeInvite(t, 'v1', inviteBody({ address }));
    expect(res.status, res.text).toBe(200);
    expect(inviteTokenRows(t).filter((r) => r.token === res.json['token'])).toMatchObject([
      { address: 'strauss.invite@example.com' },
    ]);
    expect(res.json['display_name']).toBe('Str...@Exa...');
    const invite = readInviteMail(await theMailTo(address));
    expect(invite.token).toBe(res.json['token']);
  });

  it('one row per invite: two invites to the same address have two tokens and two keys', async () => {
    const address = 'twice@example.com';
    const a = await storeInvite(t, 'v1', inviteBody({ address, room_id: '!one:hs.test' }));
    const b = await storeInvite(t, 'v1', inviteBody({ address, room_id: '!two:hs.test' }));
    expect(a.status, a.text).toBe(200);
    expect(b.status, b.text).toBe(200);
    expect(a.json['token']).not.toBe(b.json['token']);
    const rowsFor = inviteTokenRows(t).filter((r) => r.address === address);
    expect(rowsFor.map((r) => r.room_id)).toEqual(['!one:hs.test', '!two:hs.test']);
    expect(mailsTo(address)).toHaveLength(2);
  });
});

describe('v2 store-invite (access token of the sender)', () => {
  it('200 with the same answer; the mail names the verified sender in brackets', async () => {
    const token = await registerAccount(t, env, 'alice');
    const sender = userIdOf(env, 'alice');
    const address = 'v2.invitee@example.com';
    const res = await storeInvite(t, 'v2', inviteBody({ address, sender, sender_display_name: 'Alice' }), token);
    expect(res.status, res.text).toBe(200);
    const keys = res.json['public_keys'] as { public_key: string; key_validity_url: string }[];
    expect(keys[0]).toEqual({
      public_key: longTermKey,
      key_validity_url: `${CLIENT_HTTP_BASE}/_matrix/identity/v2/pubkey/isvalid`,
    });
    expect(keys[1]!.key_validity_url).toBe(`${CLIENT_HTTP_BASE}/_matrix/identity/v2/pubkey/ephemeral/isvalid`);
    expect(res.json['display_name']).toBe('v2....@exa...');

    const invite = readInviteMail(await theMailTo(address));
    expect(invite.text).toContain(`Alice (${sender}) has invited you to join a Matrix room`);
    expect(invite.token).toBe(res.json['token']);
    expect(inviteTokenRows(t).filter((r) => r.token === res.json['token'])).toMatchObject([
      { sender, address, sent_ts: null },
    ]);
  });

  it("another user's sender: 403 M_UNAUTHORIZED, nothing stored or mailed", async () => {
    const token = await registerAccount(t, env, 'mallory');
    const address = 'v2.spoofed@example.com';
    const before = inviteTokenRows(t).length;
    const res = await storeInvite(t, 'v2', inviteBody({ address, sender: userIdOf(env, 'alice') }), token);
    expect(res.status, res.text).toBe(403);
    expect(res.json['errcode']).toBe('M_UNAUTHORIZED');
    expect(inviteTokenRows(t)).toHaveLength(before);
    expect(mailsTo(address)).toHaveLength(0);
  });

  it('no access token: 401 M_UNAUTHORIZED, nothing stored or mailed', async () => {
    const address = 'v2.anonymous@example.com';
    const before = inviteTokenRows(t).length;
    const res = await storeInvite(t, 'v2', inviteBody({ address, sender: userIdOf(env, 'alice') }));
    expect(res.status, res.text).toBe(401);
    expect(res.json['errcode']).toBe('M_UNAUTHORIZED');
    const bad = await storeInvite(t, 'v2', inviteBody({ address, sender: userIdOf(env, 'alice') }), 'not-a-token');
    expect(bad.status, bad.text).toBe(401);
    expect(bad.json['errcode']).toBe('M_UNAUTHORIZED');
    expect(inviteTokenRows(t)).toHaveLength(before);
    expect(mailsTo(address)).toHaveLength(0);
  });
});

describe('display_name redaction', () => {
  it('defaults (3/3): Invitee@Example.com → Inv...@Exa...; short parts reveal less', async () => {
    const cases: [string, string][] = [
      ['Invitee@Example.com', 'Inv...@Exa...'],
      ['1@1.com', '...@1.c...'],
      ['ab@c.d', 'a...@c...'],
      ['abcdef@ab.cdefgh', 'abc...@ab....'],
      ['Strauß@Example.com', 'Str...@Exa...'],
    ];
    for (const [address, shown] of cases) {
      const res = await storeInvite(t, 'v1', inviteBody({ address, sender: '@redact:hs.test' }));
      expect(res.status, res.text).toBe(200);
      expect(res.json['display_name'], address).toBe(shown);
    }
  });

  it('[email] …_username_obfuscate_characters = 6 and …_domain_obfuscate_characters = 8', async () => {
    const t2 = await startTestServer({
      conf: {
        email: emailConf(smtp.port, {
          'email.third_party_invite_username_obfuscate_characters': '6',
          'email.third_party_invite_domain_obfuscate_characters': '8',
        }),
      },
    });
    try {
      const cases: [string, string][] = [
        ['1234567890@1234567890.com', '123456...@12345678...'],
        ['1@1.com', '...@1...'],
        ['Invitee@Example.com', 'Invite...@Example....'],
        ['abcdef@x.y', 'abc...@x...'],
      ];
      for (const [address, shown] of cases) {
        const res = await storeInvite(t2, 'v1', inviteBody({ address }));
        expect(res.status, res.text).toBe(200);
        expect(res.json['display_name'], address).toBe(shown);
      }
    } finally {
      await t2.close();
    }
  });
});
