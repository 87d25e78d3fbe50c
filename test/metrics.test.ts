import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let smtp: SmtpTestServer;
let t: TestServer;
beforeAll(async () => {
  smtp = await startSmtpServer();
  t = await startTestServer({
    conf: { email: { 'email.smtphost': '127.0.0.1', 'email.smtpport': String(smtp.port) } },
    adjust: (c) => {
      c.general.prometheusPort = 0;
      c.general.prometheusAddr = '127.0.0.1';
    },
  });
});
afterAll(async () => {
  await t?.close();
  await smtp?.close();
});

async function scrape(): Promise<string> {
  const res = await fetch(`${t.server.metricsUrl}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('text/plain');
  return res.text();
}

function value(text: string, metric: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${metric} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('Prometheus metrics', () => {
  it('is off unless both prometheus_port and prometheus_addr are set', async () => {
    const plain = await startTestServer();
    try {
      expect(plain.server.metricsUrl).toBeNull();
    } finally {
      await plain.close();
    }
  });

  it('counts requests by route and status, sessions by state, transitions, mails, and reports event-loop lag', async () => {
    const res = await fetch(t.url('/_matrix/identity/api/v1/validate/email/requestToken'), {
      method: 'POST',
      body: JSON.stringify({ client_secret: 'm1', email: 'metrics@example.org', send_attempt: 1 }),
    });
    expect(res.status).toBe(200);
    await fetch(t.url('/_matrix/identity/v2/nothing-here'));
    await fetch(t.url('/_matrix/identity/versions'));

    const text = await scrape();
    const route = '/_matrix/identity/api/v1/validate/email/requestToken';
    expect(value(text, `sydent_http_requests_total{route="${route}",method="POST",status="200"}`)).toBe(1);
    expect(value(text, `sydent_http_requests_total{route="/_matrix/identity/versions",method="GET",status="200"}`)).toBe(1);
    // Unknown URLs are one label, not one per URL.
    expect(text).toContain('route="unmatched"');
    expect(text).not.toContain('nothing-here');
    expect(value(text, `sydent_http_request_duration_seconds_count{route="${route}",method="POST"}`)).toBe(1);
    expect(value(text, 'sydent_sessions{state="tokenSent"}')).toBe(1);
    expect(value(text, 'sydent_machine_transitions_total{machine="validationSession",from="requested",to="sendingToken"}')).toBe(1);
    expect(value(text, 'sydent_machine_transitions_total{machine="validationSession",from="sendingToken",to="tokenSent"}')).toBe(1);
    expect(value(text, 'sydent_emails_sent')).toBeGreaterThanOrEqual(1);
    expect(value(text, 'sydent_callbacks_pending')).toBe(0);
    expect(text).toMatch(/^sydent_nodejs_eventloop_lag_seconds \d/m);
    expect(text).toContain('# TYPE sydent_sms_sent_total counter');
    expect(text).toContain('# TYPE sydent_sms_failed_total counter');
    // Never an address or a secret in a label.
    expect(text).not.toContain('metrics@example.org');
  });
});
