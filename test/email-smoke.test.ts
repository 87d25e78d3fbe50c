import { afterAll, beforeAll, expect, it } from 'vitest';
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

it('smoke: requestToken, mail, submitToken, getValidated3pid over v1', async () => {
  const res = await fetch(t.url('/_matrix/identity/api/v1/validate/email/requestToken'), {
    method: 'POST',
    body: JSON.stringify({ client_secret: 'secret1', email: 'Alice@Example.com', send_attempt: 1 }),
  });
  const body = (await res.json()) as Record<string, string>;
  expect(res.status, JSON.stringify(body)).toBe(200);
  const mail = await smtp.waitForMessage();
  const token = /token=([0-9A-Za-z]{32})/.exec(mail.raw)?.[1];
  expect(token).toBeDefined();
  const submit = await fetch(t.url('/_matrix/identity/api/v1/validate/email/submitToken'), {
    method: 'POST',
    body: JSON.stringify({ sid: body['sid'], client_secret: 'secret1', token }),
  });
  expect(await submit.json()).toEqual({ success: true });
  const v = await fetch(t.url(`/_matrix/identity/api/v1/3pid/getValidated3pid?sid=${body['sid']}&client_secret=secret1`));
  expect(await v.json()).toMatchObject({ medium: 'email', address: 'alice@example.com' });
});
