import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from './helpers/process.js';
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
    expect(
      value(text, `sydent_http_requests_total{route="/_matrix/identity/versions",method="GET",status="200"}`),
    ).toBe(1);
    // Unknown URLs are one label, not one per URL.
    expect(text).toContain('route="unmatched"');
    expect(text).not.toContain('nothing-here');
    expect(value(text, `sydent_http_request_duration_seconds_count{route="${route}",method="POST"}`)).toBe(1);
    expect(value(text, 'sydent_sessions{state="tokenSent"}')).toBe(1);
    expect(
      value(text, 'sydent_machine_transitions_total{machine="validationSession",from="requested",to="sendingToken"}'),
    ).toBe(1);
    expect(
      value(text, 'sydent_machine_transitions_total{machine="validationSession",from="sendingToken",to="tokenSent"}'),
    ).toBe(1);
    expect(value(text, 'sydent_emails_sent_total')).toBe(1);
    expect(value(text, 'sydent_emails_failed_total')).toBe(0);
    expect(value(text, 'sydent_callbacks_pending')).toBe(0);
    expect(text).toMatch(/^nodejs_eventloop_lag_seconds \d/m);
    expect(text).toContain('# TYPE sydent_sms_sent_total counter');
    expect(text).toContain('# TYPE sydent_sms_failed_total counter');
    // Never an address or a secret in a label.
    expect(text).not.toContain('metrics@example.org');
  });

  it('reports the version as sydent_build_info', async () => {
    const { version } = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const text = await scrape();
    expect(text).toContain('# TYPE sydent_build_info gauge');
    expect(value(text, `sydent_build_info{version="${version}"}`)).toBe(1);
  });

  it("keeps Sydent's names: received requests by servlet and method as Sydent labelled them, process metrics", async () => {
    const before = await scrape();
    const received = (servlet: string, method: string) =>
      value(before, `sydent_http_received_requests_total{servlet="${servlet}",method="b'${method}'"}`) ?? 0;
    const versions = received('VersionsServlet', 'GET');
    const lookupPost = received('LookupV2Servlet', 'POST');
    const lookupOptions = received('LookupV2Servlet', 'OPTIONS');
    const bind = received('AuthenticatedBindThreePidServlet', 'POST');

    expect((await fetch(t.url('/_matrix/identity/versions'))).status).toBe(200);
    // The v2 lookup is answered ahead of fastify (the lookup lane): counted all the same, 401 included, as Sydent did.
    const lookup = await fetch(t.url('/_matrix/identity/v2/lookup'), {
      method: 'POST',
      body: '{}',
      headers: { 'content-type': 'application/json' },
    });
    expect(lookup.status).toBe(401);
    // A browser's CORS preflight reaches the servlet in Sydent.
    const preflight = await fetch(t.url('/_matrix/identity/v2/lookup'), { method: 'OPTIONS' });
    expect(preflight.status).toBe(200);
    const internal = await fetch(t.internalUrl('/_matrix/identity/internal/bind'), {
      method: 'POST',
      body: '{}',
      headers: { 'content-type': 'application/json' },
    });
    expect(internal.status).toBe(400);
    expect((await fetch(t.url('/health'))).status).toBe(200);

    const text = await scrape();
    const now = (servlet: string, method: string) =>
      value(text, `sydent_http_received_requests_total{servlet="${servlet}",method="b'${method}'"}`);
    expect(text).toContain('# TYPE sydent_http_received_requests_total counter');
    expect(now('VersionsServlet', 'GET')).toBe(versions + 1);
    expect(now('LookupV2Servlet', 'POST')).toBe(lookupPost + 1);
    expect(now('LookupV2Servlet', 'OPTIONS')).toBe(lookupOptions + 1);
    expect(now('AuthenticatedBindThreePidServlet', 'POST')).toBe(bind + 1);
    expect(
      value(text, 'sydent_http_requests_total{route="/_matrix/identity/v2/lookup",method="OPTIONS",status="200"}'),
    ).toBe(1);
    // Our own endpoints have no servlet in Sydent: not in its counter.
    expect(text).not.toMatch(/servlet="(null)?"/);
    // prometheus_client's process collector names, which Sydent's dashboards read.
    expect(text).toMatch(/^process_cpu_seconds_total \d/m);
    expect(text).toMatch(/^process_resident_memory_bytes \d/m);
    expect(text).toMatch(/^process_start_time_seconds \d/m);
  });

  it('counts a mail the SMTP server refused as failed, and logs it as one warning line without a stack', async () => {
    const refusing = await startSmtpServer({ rejectAll: true });
    const lines: string[] = [];
    const failing = await startTestServer({
      conf: { email: { 'email.smtphost': '127.0.0.1', 'email.smtpport': String(refusing.port) } },
      adjust: (c) => {
        c.general.prometheusPort = 0;
        c.general.prometheusAddr = '127.0.0.1';
      },
      log: pino({ level: 'info' }, { write: (l: string) => void lines.push(l) }),
    });
    try {
      const res = await fetch(failing.url('/_matrix/identity/api/v1/validate/email/requestToken'), {
        method: 'POST',
        body: JSON.stringify({ client_secret: 'f1', email: 'refused@example.org', send_attempt: 1 }),
      });
      expect(res.status).toBe(500);
      expect(await res.json()).toMatchObject({ errcode: 'M_EMAIL_SEND_ERROR' });
      const text = await (await fetch(`${failing.server.metricsUrl}/metrics`)).text();
      expect(value(text, 'sydent_emails_failed_total')).toBe(1);
      expect(value(text, 'sydent_emails_sent_total')).toBe(0);

      const entries = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      const notSent = entries.filter((e) => e['msg'] === 'mail: not sent');
      expect(notSent).toHaveLength(1);
      expect(notSent[0]).toMatchObject({ level: 40, responseCode: 550 });
      const failed = entries.filter((e) => e['msg'] === 'request failed');
      expect(failed).toHaveLength(1);
      expect(failed[0]).toMatchObject({ level: 40, status: 500, errcode: 'M_EMAIL_SEND_ERROR' });
      // Nothing at error level, no stack trace anywhere, and the refused address not in the log.
      expect(entries.filter((e) => (e['level'] as number) >= 50)).toEqual([]);
      expect(lines.join('')).not.toContain('"stack"');
      expect(lines.join('')).not.toContain('refused@example.org');
    } finally {
      await failing.close();
      await refusing.close();
    }
  });
});
