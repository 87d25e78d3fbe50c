/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium } from './helpers/chromium.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let smtp: SmtpTestServer;
let t: TestServer;
let browser: Browser | undefined;

beforeAll(async () => {
  smtp = await startSmtpServer();
  t = await startTestServer({
    conf: {
      email: { 'email.smtphost': '127.0.0.1', 'email.smtpport': String(smtp.port) },
      http: { 'internalapi.admin_token': 'letmein' },
    },
  });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await t?.close();
  await smtp?.close();
});

describe('debug page', () => {
  it('draws each machine, fills the tables, and a count changes after a requestToken', { timeout: 60_000 }, async () => {
    browser = await launchChromium();
    const page = await browser.newPage();
    const requested: string[] = [];
    page.on('request', (r) => requested.push(r.url()));
    await page.goto(t.internalUrl('/_sydent/debug/?access_token=letmein'));
    await page.waitForSelector('#machine-validation-session svg', { timeout: 20_000 });
    await page.waitForSelector('#machine-callback svg', { timeout: 20_000 });
    await page.waitForFunction(() => document.getElementById('status')?.textContent?.startsWith('updated'));
    expect(await page.locator('#actors tbody tr').count()).toBe(7);
    const svgText = await page.locator('#machine-validation-session svg').textContent();
    for (const state of ['requested', 'sendingToken', 'tokenSent', 'validated', 'bound', 'expired', 'sendFailed']) {
      expect(svgText).toContain(state);
    }

    const res = await fetch(t.url('/_matrix/identity/api/v1/validate/email/requestToken'), {
      method: 'POST',
      body: JSON.stringify({ client_secret: 'page1', email: 'page@example.org', send_attempt: 1 }),
    });
    expect(res.status).toBe(200);
    await page.waitForFunction(
      () => JSON.parse(document.getElementById('machine-validation-session')?.dataset['counts'] ?? '{}').tokenSent === 1,
      undefined,
      { timeout: 10_000 },
    );
    await page.waitForFunction(() =>
      [...document.querySelectorAll('#sessions tbody tr')].some((tr) => tr.textContent === 'tokenSent1'),
    );
    // Everything the page loaded came from the internal listener.
    const origin = new URL(t.internalUrl('/')).origin;
    expect(requested.length).toBeGreaterThan(3);
    for (const url of requested) expect(url.startsWith(origin)).toBe(true);
    await page.close();
  });

  it('the debug endpoints need the admin token when one is configured', async () => {
    expect((await fetch(t.internalUrl('/_sydent/debug/actors'))).status).toBe(401);
    expect((await fetch(t.internalUrl('/_sydent/debug/actors'), { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    expect((await fetch(t.internalUrl('/_sydent/debug/actors'), { headers: { authorization: 'Bearer letmein' } })).status).toBe(200);
    expect((await fetch(t.internalUrl('/_sydent/debug/callbacks?access_token=letmein'))).status).toBe(200);
    const body = (await (await fetch(t.internalUrl('/_sydent/debug/callbacks?access_token=letmein'))).json()) as Record<string, unknown>;
    expect(body).toMatchObject({ counts: expect.any(Object), rows: expect.any(Array) });
  });
});
