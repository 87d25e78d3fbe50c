import { afterAll, beforeAll, expect, it } from 'vitest';
import { lookupHash, publicKeyFromSeed, verifySignedJson } from '../src/crypto/index.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let smtp: SmtpTestServer;
let t: TestServer;
beforeAll(async () => {
  smtp = await startSmtpServer();
  t = await startTestServer({ conf: { email: { 'email.smtphost': '127.0.0.1', 'email.smtpport': String(smtp.port) } } });
});
afterAll(async () => {
  await t?.close();
  await smtp?.close();
});

const v1 = (p: string) => t.url(`/_matrix/identity/api/v1${p}`);
const post = async (url: string, body: unknown) => {
  const res = await fetch(url, { method: 'POST', body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as any };
};

it('smoke: validate, bind over v1, look up by v1 and bulk; internal bind', async () => {
  const { json } = await post(v1('/validate/email/requestToken'), { client_secret: 's1', email: 'Bob@Example.com', send_attempt: 1 });
  const mail = await smtp.waitForMessage();
  const token = /token=([0-9A-Za-z]{32})/.exec(mail.raw)![1];
  expect((await post(v1('/validate/email/submitToken'), { sid: json.sid, client_secret: 's1', token })).json).toEqual({ success: true });
  const bind = await post(v1('/3pid/bind'), { sid: json.sid, client_secret: 's1', mxid: '@bob:hs.example' });
  expect(bind.status, JSON.stringify(bind.json)).toBe(200);
  expect(bind.json).toMatchObject({ medium: 'email', address: 'bob@example.com', mxid: '@bob:hs.example' });
  verifySignedJson(bind.json, 'is.example.test', 'ed25519:0', publicKeyFromSeed(t.config.crypto.signingKey.seed));

  const lookup = await (await fetch(v1('/lookup?medium=email&address=BOB@example.com'))).json();
  expect(lookup).toMatchObject({ mxid: '@bob:hs.example' });
  const bulk = await post(v1('/bulk_lookup'), { threepids: [['email', 'bob@example.com'], ['email', 'nobody@example.com']] });
  expect(bulk.json).toEqual({ threepids: [['email', 'bob@example.com', '@bob:hs.example']] });

  const internal = await post(t.internalUrl('/_matrix/identity/internal/bind'), { medium: 'email', address: 'carol@example.com', mxid: '@carol:hs.example' });
  expect(internal.status).toBe(200);
  const pepper = t.server.ctx.reads.associations.pepper();
  const hits = t.server.ctx.reads.associations.lookupHashes([lookupHash('carol@example.com', 'email', pepper), 'nope'], Date.now());
  expect([...hits]).toEqual([[lookupHash('carol@example.com', 'email', pepper), '@carol:hs.example']]);
  expect((await post(t.internalUrl('/_matrix/identity/internal/unbind'), { medium: 'email', address: 'carol@example.com', mxid: '@carol:hs.example' })).json).toEqual({});
  expect(await (await fetch(v1('/lookup?medium=email&address=carol@example.com'))).json()).toEqual({});
});
