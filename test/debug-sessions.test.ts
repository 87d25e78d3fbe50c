import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

async function requestToken(email: string, secret: string): Promise<string> {
  const res = await fetch(t.url('/_matrix/identity/api/v1/validate/email/requestToken'), {
    method: 'POST',
    body: JSON.stringify({ client_secret: secret, email, send_attempt: 1, next_link: 'https://app.example/after?token=leak' }),
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { sid: string }).sid;
}

describe('session debug endpoints (internal listener)', () => {
  it('shows one session: state, redacted context, transitions; never token, secret or address', async () => {
    const sid = await requestToken('carol.secret@example.org', 'client-SECRET-value');
    const mail = await smtp.waitForMessage((m) => m.to.includes('carol.secret@example.org'));
    const token = /token=([0-9A-Za-z]{32})/.exec(mail.raw)![1]!;

    const res = await fetch(t.internalUrl(`/_sydent/debug/sessions/${sid}`));
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, any>;
    expect(body['state']).toBe('tokenSent');
    expect(body['context']).toMatchObject({ sid, medium: 'email', address: 'c…@e…', sendAttempt: 1, nextLink: 'https://app.example' });
    expect(body['transitions'].map((x: any) => `${x.from}>${x.to}`)).toEqual(['new>sendingToken', 'sendingToken>tokenSent']);
    const text = JSON.stringify(body);
    for (const secret of [token, 'client-SECRET-value', 'carol.secret', 'example.org', 'leak']) expect(text).not.toContain(secret);

    const tree = (await (await fetch(t.internalUrl('/_sydent/debug/actors'))).json()) as {
      actors: { systemId: string; children: { id: string; state: string }[] }[];
    };
    expect(tree.actors.find((a) => a.systemId === 'sessions')?.children).toContainEqual({ id: `session:${sid}`, state: 'tokenSent' });
    expect(tree.actors.find((a) => a.systemId === 'root')?.children.map((c) => c.id)).toEqual([
      'store', 'mailer', 'sms', 'notifier', 'replication', 'sessions',
    ]);

    const counts = (await (await fetch(t.internalUrl('/_sydent/debug/sessions'))).json()) as { byState: Record<string, number> };
    expect(counts.byState['tokenSent']).toBeGreaterThanOrEqual(1);
  });

  it('counts move when a session is validated', async () => {
    const before = ((await (await fetch(t.internalUrl('/_sydent/debug/sessions'))).json()) as { byState: Record<string, number> }).byState;
    const sid = await requestToken('dan@example.org', 'secret2');
    const mail = await smtp.waitForMessage((m) => m.to.includes('dan@example.org'));
    const token = /token=([0-9A-Za-z]{32})/.exec(mail.raw)![1]!;
    await fetch(t.url('/_matrix/identity/api/v1/validate/email/submitToken'), {
      method: 'POST',
      body: JSON.stringify({ sid, client_secret: 'secret2', token }),
    });
    const after = ((await (await fetch(t.internalUrl('/_sydent/debug/sessions'))).json()) as { byState: Record<string, number> }).byState;
    expect(after['validated'] ?? 0).toBe((before['validated'] ?? 0) + 1);
  });

  it('an unknown sid is 404, and the endpoints are not on the client listener', async () => {
    expect((await fetch(t.internalUrl('/_sydent/debug/sessions/12345'))).status).toBe(404);
    expect((await fetch(t.internalUrl('/_sydent/debug/sessions/abc'))).status).toBe(404);
    expect((await fetch(t.url('/_sydent/debug/sessions'))).status).toBe(404);
  });
});
