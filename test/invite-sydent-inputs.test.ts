/**
 * store-invite takes what Sydent takes: any room ID a homeserver sends (test suites use `$aroom:fake.test`,
 * newer room versions have no `:server` part), refusing only empty, overlong and control-character IDs; and the
 * brand comes from `?brand=` in the query, as on every other endpoint, never from a field of the invite.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, emailConf } from './helpers/email.js';
import { internal } from './helpers/flows.js';
import {
  inviteBody,
  inviteCounts,
  inviteTokenRows,
  readInviteMail,
  storeInvite,
  storeInviteUrl,
} from './helpers/invites.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';
import { tempDir } from './helpers/tmp.js';

/** An invite template whose subject names its brand; the text part carries the join link readInviteMail wants. */
const INVITE = (brand: string) => `Date: {{ date|safe }}
From: {{ from|safe }}
To: {{ to|safe }}
Message-ID: {{ messageid|safe }}
Subject: Invite from brand ${brand}
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="{{ multipart_boundary|safe }}"

--{{ multipart_boundary|safe }}
Content-Type: text/plain; charset=UTF-8

brand=${brand}
{{ web_client_location }}/#/room/{{ room_id|urlencode }}?email={{ to|urlencode }}&signurl={{ sign_url|urlencode }}%3Ftoken%3D{{ token|urlencode }}%26private_key%3D{{ ephemeral_private_key|urlencode }}
--{{ multipart_boundary|safe }}
Content-Type: text/html; charset=UTF-8

<p>brand ${brand}</p>
--{{ multipart_boundary|safe }}--
`;

let smtp: SmtpTestServer;
let t: TestServer;
let templates: { dir: string; cleanup: () => void };

beforeAll(async () => {
  templates = tempDir('sydent-ts-invite-brands-');
  for (const brand of ['brand-a', 'brand-b']) {
    fs.mkdirSync(path.join(templates.dir, brand));
    fs.writeFileSync(path.join(templates.dir, brand, 'invite_template.eml.j2'), INVITE(brand));
  }
  smtp = await startSmtpServer();
  t = await startTestServer({
    conf: { general: { 'templates.path': templates.dir, 'brand.default': 'brand-a' }, email: emailConf(smtp.port) },
  });
});
afterAll(async () => {
  await t?.close();
  await smtp?.close();
  templates?.cleanup();
});

const mailTo = (address: string) => smtp.waitForMessage((m) => m.to.includes(address));

describe('room_id', () => {
  it('any non-empty room ID is stored and mailed as sent: $aroom:fake.test, an ID without a server, an alias', async () => {
    const cases = [
      ['$aroom:fake.test', 'dollar.room@example.com'],
      ['!OpaqueRoomIdWithoutServer', 'serverless.room@example.com'],
      ['#alias:hs.test', 'alias.room@example.com'],
    ] as const;
    for (const [roomId, address] of cases) {
      const res = await storeInvite(t, 'v1', inviteBody({ address, room_id: roomId }));
      expect(res.status, `${roomId}: ${res.text}`).toBe(200);
      const token = res.json['token'] as string;
      expect(token).toMatch(/^[A-Za-z]{128}$/);
      expect(inviteTokenRows(t).find((r) => r.token === token)).toMatchObject({ address, room_id: roomId });
      expect(readInviteMail(await mailTo(address)).roomId).toBe(roomId);
    }
  });

  it('a bound address with such a room ID is 400 M_THREEPID_IN_USE, as in Sydent', async () => {
    const bound = await internal(t, 'bind', {
      medium: 'email',
      address: 'bound.dollar@example.com',
      mxid: '@bound:hs.test',
    });
    expect(bound.status, bound.text).toBe(200);
    const before = { rows: inviteCounts(t), mails: smtp.messages.length };
    const res = await storeInvite(
      t,
      'v1',
      inviteBody({ address: 'bound.dollar@example.com', room_id: '$aroom:fake.test' }),
    );
    expect(res.status, res.text).toBe(400);
    expect(res.json).toMatchObject({ errcode: 'M_THREEPID_IN_USE', mxid: '@bound:hs.test' });
    expect(inviteCounts(t)).toEqual(before.rows);
    expect(smtp.messages.length).toBe(before.mails);
  });

  it('empty, longer than 255 characters, or with a control character: 400 M_INVALID_PARAM, nothing stored or mailed', async () => {
    const refused = [
      '',
      `!${'r'.repeat(255)}`,
      '!room\u0000:hs.test',
      '!room\n:hs.test',
      '!room\r\nBcc: x@y.z',
      '!room\u0085:hs.test',
      '\u007f',
    ];
    for (const roomId of refused) {
      const before = { rows: inviteCounts(t), mails: smtp.messages.length };
      const res = await storeInvite(t, 'v1', inviteBody({ address: 'refused.room@example.com', room_id: roomId }));
      expect(res.status, `${JSON.stringify(roomId)}: ${res.text}`).toBe(400);
      expect(res.json['errcode']).toBe('M_INVALID_PARAM');
      expect(typeof res.json['error']).toBe('string');
      expect(inviteCounts(t)).toEqual(before.rows);
      expect(smtp.messages.length).toBe(before.mails);
    }
    // 255 characters is still a room ID
    const longest = `!${'r'.repeat(254)}`;
    const ok = await storeInvite(t, 'v1', inviteBody({ address: 'longest.room@example.com', room_id: longest }));
    expect(ok.status, ok.text).toBe(200);
  });
});

describe('?brand=', () => {
  it('the query picks the invite template; a brand field in the body does not', async () => {
    const fromQuery = await call(`${storeInviteUrl(t, 'v1')}?brand=brand-b`, {
      body: inviteBody({ address: 'query.brand@example.com', brand: 'brand-a' }),
    });
    expect(fromQuery.status, fromQuery.text).toBe(200);
    expect(readInviteMail(await mailTo('query.brand@example.com')).subject).toBe('Invite from brand brand-b');

    const fromBody = await storeInvite(t, 'v1', inviteBody({ address: 'body.brand@example.com', brand: 'brand-b' }));
    expect(fromBody.status, fromBody.text).toBe(200);
    expect(readInviteMail(await mailTo('body.brand@example.com')).subject).toBe('Invite from brand brand-a');

    // an unknown brand is brand.default, as Sydent does
    const unknown = await call(`${storeInviteUrl(t, 'v1')}?brand=no-such-brand`, {
      body: inviteBody({ address: 'unknown.brand@example.com' }),
    });
    expect(unknown.status, unknown.text).toBe(200);
    expect(readInviteMail(await mailTo('unknown.brand@example.com')).subject).toBe('Invite from brand brand-a');
  });
});
