/**
 * Pending third-party invites at bind time: the association carries the invites of that 3PID only, each with a
 * `signed {mxid, token}` block under our long-term key; their rows are marked sent; later binds (of another
 * address, or the same one again) carry none. Sydent's shared `extra_fields` dict leaked one bind's invites into
 * every later association (sydent-behaviour §1.C, §12 item 1): it must not happen here.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManualClock } from '../src/clock.js';
import {
  expectAssociationFields,
  startMailingServer,
  validateAndBind,
  type MailingServer,
} from './helpers/bindings.js';
import type { Reply } from './helpers/email.js';
import { insertInvite, internal, lookupV1, verifyOurs, write } from './helpers/flows.js';
import type { InviteTokenRow } from './helpers/invites.js';
import { rows } from './helpers/rows.js';

let t: MailingServer;

beforeAll(async () => {
  t = await startMailingServer();
});
afterAll(() => t?.close());

const inviteRows = (address: string) =>
  rows<InviteTokenRow>(t, 'SELECT * FROM invite_tokens WHERE address = ? ORDER BY id', address);

const validateAndBindV1 = (email: string, clientSecret: string, mxid: string): Promise<Reply> =>
  validateAndBind(t, t.smtp, { email, clientSecret, api: 'v1', mxid });

interface InviteInAnswer {
  medium: string;
  address: string;
  mxid: string;
  room_id: string;
  sender: string;
  token: string;
  signed: { mxid: string; token: string; signatures: Record<string, Record<string, string>> };
}

describe('a bind with pending invites', () => {
  const received = Math.floor(Date.now() / 1000) - 3600;

  it("carries exactly that 3PID's pending invites, signed, and marks them sent", async () => {
    await insertInvite(t, {
      address: 'invitee@example.com',
      room_id: '!room1:hs.example',
      sender: '@inviter:hs.example',
      token: 'tokOne',
      received_ts: received,
    });
    await insertInvite(t, {
      address: 'invitee@example.com',
      room_id: '!room2:hs.example',
      sender: '@other:hs.example',
      token: 'tokTwo',
      received_ts: received,
    });
    // an invite already delivered, and one for somebody else: neither belongs in the answer
    await insertInvite(t, {
      address: 'invitee@example.com',
      room_id: '!old:hs.example',
      sender: '@inviter:hs.example',
      token: 'tokOld',
      received_ts: received,
    });
    const oldSent = received + 60;
    await write(t, 'UPDATE invite_tokens SET sent_ts = ? WHERE token = ?', oldSent, 'tokOld');
    await insertInvite(t, {
      address: 'bystander@example.com',
      room_id: '!room3:hs.example',
      sender: '@inviter:hs.example',
      token: 'tokBystander',
      received_ts: received,
    });

    (t.clock as ManualClock).advance(1000);
    const now = t.clock.now();
    const res = await validateAndBindV1('Invitee@Example.COM', 'invites-1', '@invitee:hs.example');

    // the association, invites included, is signed by us
    verifyOurs(res.json, t.publicKey);
    expect(res.json).toMatchObject({ medium: 'email', address: 'invitee@example.com', mxid: '@invitee:hs.example' });
    const invites = res.json['invites'] as InviteInAnswer[];
    expect(Array.isArray(invites)).toBe(true);
    expect([...invites].sort((a, b) => a.token.localeCompare(b.token))).toEqual([
      {
        medium: 'email',
        address: 'invitee@example.com',
        mxid: '@invitee:hs.example',
        room_id: '!room1:hs.example',
        sender: '@inviter:hs.example',
        token: 'tokOne',
        signed: { mxid: '@invitee:hs.example', token: 'tokOne', signatures: expect.any(Object) },
      },
      {
        medium: 'email',
        address: 'invitee@example.com',
        mxid: '@invitee:hs.example',
        room_id: '!room2:hs.example',
        sender: '@other:hs.example',
        token: 'tokTwo',
        signed: { mxid: '@invitee:hs.example', token: 'tokTwo', signatures: expect.any(Object) },
      },
    ]);
    for (const invite of invites) {
      expect(Object.keys(invite.signed.signatures)).toEqual(['is.example.test']);
      expect(Object.keys(invite.signed.signatures['is.example.test']!)).toEqual(['ed25519:0']);
      verifyOurs(invite.signed, t.publicKey);
      expect(() => verifyOurs({ ...invite.signed, mxid: '@mallory:hs.example' }, t.publicKey)).toThrow();
    }

    // rows: the two pending ones sent now (seconds), the old one untouched, the bystander's still pending
    const sent = Math.floor(now / 1000);
    expect(inviteRows('invitee@example.com').map((r) => [r.token, r.sent_ts])).toEqual([
      ['tokOne', sent],
      ['tokTwo', sent],
      ['tokOld', oldSent],
    ]);
    expect(inviteRows('bystander@example.com').map((r) => [r.token, r.sent_ts])).toEqual([['tokBystander', null]]);
  });

  it('the invites stay out of what lookups read: the stored sgAssoc and the unauthenticated v1 lookup of the invitee carry no invites', async () => {
    // Sydent's local push re-signs the association from the local row, so its sgAssoc has no invites; only its
    // shared-dict bug put them there (sydent-behaviour §1.C). Room IDs, inviters and invite tokens are not for anyone
    // who looks the address up.
    const stored = rows<{ sgAssoc: string }>(
      t,
      "SELECT sgAssoc FROM global_threepid_associations WHERE address = 'invitee@example.com'",
    );
    expect(stored).toHaveLength(1);
    const sgAssoc = JSON.parse(stored[0]!.sgAssoc) as Record<string, unknown>;
    expect(sgAssoc).not.toHaveProperty('invites');
    verifyOurs(sgAssoc, t.publicKey);
    const lookup = await lookupV1(t, 'email', 'invitee@example.com');
    expect(lookup.json['mxid']).toBe('@invitee:hs.example');
    expect(lookup.json).not.toHaveProperty('invites');
  });

  it('a bind of another address afterwards carries no invites (no shared state between binds)', async () => {
    const res = await validateAndBindV1('unrelated@example.com', 'invites-2', '@unrelated:hs.example');
    expect(res.json).not.toHaveProperty('invites');
    expectAssociationFields(res.json);
    verifyOurs(res.json, t.publicKey);
    expect((await lookupV1(t, 'email', 'unrelated@example.com')).json).not.toHaveProperty('invites');

    const viaInternal = await internal(t, 'bind', {
      medium: 'email',
      address: 'unrelated2@example.com',
      mxid: '@u2:hs.example',
    });
    expect(viaInternal.status).toBe(200);
    expect(viaInternal.json).not.toHaveProperty('invites');
    const stored = rows<{ sgAssoc: string }>(
      t,
      "SELECT sgAssoc FROM global_threepid_associations WHERE address LIKE 'unrelated%'",
    );
    expect(stored).toHaveLength(2);
    for (const row of stored) expect(JSON.parse(row.sgAssoc)).not.toHaveProperty('invites');
    // the bystander's invite is still waiting for its own bind
    expect(inviteRows('bystander@example.com')[0]!.sent_ts).toBeNull();
  });

  it('binding the invited address again carries no invites: they were sent', async () => {
    const res = await validateAndBindV1('invitee@example.com', 'invites-3', '@invitee:hs.example');
    expect(res.json).not.toHaveProperty('invites');
  });

  it('the invite of a casefolded address is found by a bind typed in another case (Unicode folding)', async () => {
    await insertInvite(t, {
      address: 'strasse@example.com',
      room_id: '!room4:hs.example',
      sender: '@inviter:hs.example',
      token: 'tokStrasse',
    });
    const res = await validateAndBindV1('Straße@Example.com', 'invites-4', '@strasse:hs.example');
    const invites = res.json['invites'] as InviteInAnswer[];
    expect(invites.map((i) => [i.token, i.address, i.mxid])).toEqual([
      ['tokStrasse', 'strasse@example.com', '@strasse:hs.example'],
    ]);
    verifyOurs(invites[0]!.signed, t.publicKey);
    expect(inviteRows('strasse@example.com')[0]!.sent_ts).not.toBeNull();
  });

  it('the bystander gets its own invite when it binds, through the internal API too', async () => {
    const res = await internal(t, 'bind', {
      medium: 'email',
      address: 'Bystander@example.com',
      mxid: '@bystander:hs.example',
    });
    expect(res.status, res.text).toBe(200);
    const invites = res.json['invites'] as InviteInAnswer[];
    expect(invites.map((i) => [i.token, i.room_id, i.mxid])).toEqual([
      ['tokBystander', '!room3:hs.example', '@bystander:hs.example'],
    ]);
    verifyOurs(invites[0]!.signed, t.publicKey);
    expect(inviteRows('bystander@example.com')[0]!.sent_ts).not.toBeNull();
  });
});
