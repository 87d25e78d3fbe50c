import { WebSocket } from 'ws';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { redactForInspection } from '../src/inspect/redact.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let smtp: SmtpTestServer;
let t: TestServer;
beforeAll(async () => {
  smtp = await startSmtpServer();
  t = await startTestServer({
    inspect: true,
    conf: { email: { 'email.smtphost': '127.0.0.1', 'email.smtpport': String(smtp.port) } },
  });
});
afterAll(async () => {
  await t?.close();
  await smtp?.close();
});

describe('--inspect', () => {
  it('is off unless asked for', async () => {
    const plain = await startTestServer();
    try {
      expect(plain.server.inspectUrl).toBeNull();
    } finally {
      await plain.close();
    }
  });

  it('relays actor events on loopback only, with addresses, tokens and secrets removed', async () => {
    expect(t.server.inspectUrl).toMatch(/^ws:\/\/127\.0\.0\.1:\d+$/);
    const received: string[] = [];
    const ws = new WebSocket(t.server.inspectUrl!);
    ws.on('message', (data) =>
      received.push(new TextDecoder().decode(Array.isArray(data) ? Buffer.concat(data) : data)),
    );
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });

    const res = await fetch(t.url('/_matrix/identity/api/v1/validate/email/requestToken'), {
      method: 'POST',
      body: JSON.stringify({
        client_secret: 'inspect-SECRET-1',
        email: 'inspected.person@example.org',
        send_attempt: 1,
      }),
    });
    expect(res.status).toBe(200);
    const mail = await smtp.waitForMessage();
    const token = /token=([0-9A-Za-z]{32})/.exec(mail.raw)![1]!;

    await vi.waitFor(() => expect(received.some((m) => m.includes('tokenSent'))).toBe(true), { timeout: 5000 });
    ws.close();
    const all = received.join('\n');
    expect(all).toContain('validationSession');
    expect(all).toContain('tokenSent');
    expect(all).toContain('REQUEST_TOKEN');
    for (const secret of [
      token,
      'inspect-SECRET-1',
      'inspected.person',
      t.config.crypto.signingKey.seed.length
        ? Buffer.from(t.config.crypto.signingKey.seed).toString('base64').slice(0, 20)
        : 'x',
    ]) {
      expect(all).not.toContain(secret);
    }
  });

  it('redacts by key name at any depth and drops resources', () => {
    const out = redactForInspection({
      context: { token: 't', clientSecret: 's', address: 'a@b.c', sid: '1', nested: [{ sendTo: 'x', ok: 1 }] },
      deps: { db: {} },
      fn: () => 1,
    });
    expect(out).toEqual({
      context: {
        token: '[redacted]',
        clientSecret: '[redacted]',
        address: '[redacted]',
        sid: '1',
        nested: [{ sendTo: '[redacted]', ok: 1 }],
      },
      fn: undefined,
    });
  });

  it("redacts what the supervisors' messages carry: an OpenID token, a binding as stored, a rate limit key", () => {
    const ask = {
      type: 'bind',
      replyTo: '7',
      deadline: 1,
      payload: {
        openIdToken: 'o',
        sgAssoc: '{"address":"a@b.c"}',
        lookupHash: 'h',
        key: '@bob:hs',
        mxid: '@bob:hs',
        inviteIds: [1],
      },
    };
    expect(redactForInspection(ask)).toEqual({
      type: 'bind',
      deadline: 1,
      payload: {
        openIdToken: '[redacted]',
        sgAssoc: '[redacted]',
        lookupHash: '[redacted]',
        key: '[redacted]',
        mxid: '@bob:hs',
        inviteIds: [1],
      },
    });
  });
});
