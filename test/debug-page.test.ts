/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
import fs from 'node:fs';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SESSION_STATES } from '../src/machines/validation-session.js';
import { makeCa } from './helpers/certs.js';
import { launchChromium } from './helpers/chromium.js';
import { ROOT } from './helpers/process.js';
import { bind, replicationView, startMesh, waitFor } from './helpers/replication.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const VERSION = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

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

/** A page of one Chromium for the file (launched in the first test that needs it, so a missing one fails that test). */
async function newPage(): Promise<Page> {
  browser ??= await launchChromium();
  return browser.newPage({ viewport: { width: 1280, height: 900 } });
}

const text = (page: Page, key: string) => page.locator(`[data-k="${key}"]`).first().textContent();

/** How many labels (states, arrows, boxes) the diagrams have, and those whose boxes intersect another's. */
function labelOverlaps(page: Page): Promise<{ labels: number; overlaps: string[] }> {
  return page.evaluate(() => {
    const overlaps: string[] = [];
    let count = 0;
    for (const svg of document.querySelectorAll('#machines svg')) {
      const labels = [...svg.querySelectorAll('g.node g.label text, g.edgeLabel text, g.cluster-label text')]
        .map((e) => ({ text: e.textContent ?? '', box: e.getBoundingClientRect() }))
        .filter((l) => l.text.trim() && l.box.width > 0 && l.box.height > 0);
      count += labels.length;
      for (const [i, a] of labels.entries()) {
        for (const b of labels.slice(i + 1)) {
          const x = Math.min(a.box.right, b.box.right) - Math.max(a.box.left, b.box.left);
          const y = Math.min(a.box.bottom, b.box.bottom) - Math.max(a.box.top, b.box.top);
          if (x > 0.5 && y > 0.5) overlaps.push(`${svg.closest('figure')?.id}: "${a.text}" / "${b.text}"`);
        }
      }
    }
    return { labels: count, overlaps };
  });
}

describe('debug page', () => {
  it(
    'reads top to bottom: a summary, the tables (empty ones say why), then every machine at one scale',
    { timeout: 60_000 },
    async () => {
      const page = await newPage();
      const requested: string[] = [];
      page.on('request', (r) => requested.push(r.url()));
      await page.goto(t.internalUrl('/_sydent/debug/?access_token=letmein'));
      for (const m of ['validation-session', 'callback', 'peer'])
        await page.waitForSelector(`#machine-${m} svg`, { timeout: 20_000 });
      await page.waitForFunction(() => document.getElementById('status')?.textContent?.startsWith('updated'));

      // Who this is.
      expect(await text(page, 'server-name')).toBe('is.example.test');
      expect(await text(page, 'version')).toBe(VERSION);
      expect(await text(page, 'node')).toContain(`pid ${process.pid}`);
      expect(await text(page, 'uptime')).toMatch(/^\d+ s$/);
      // The numbers, before anything happened.
      expect(await text(page, 'sessions-total')).toBe('0');
      expect(await text(page, 'callbacks-pending')).toBe('0');
      expect(await text(page, 'actor-mailer-queue')).toBe('0 queued, 0 running');
      expect(await text(page, 'replication-status')).toBe('off: replication.https.certfile is not set');

      // Empty tables say so in words, with the reason.
      expect(await page.locator('#sessions table').count()).toBe(0);
      expect(await page.locator('#sessions p.empty').textContent()).toContain('No validation sessions');
      expect(await page.locator('#callbacks p.empty').textContent()).toContain('No homeserver callbacks recorded');
      expect(await page.locator('#peers p.empty').textContent()).toBe(
        'Replication is off: replication.https.certfile is not set.',
      );
      expect(await page.locator('#actors tbody tr').count()).toBe(7);

      // The order: summary, then tables (on the first screen), then the diagrams.
      const top = async (selector: string) => (await page.locator(selector).boundingBox())!.y;
      const summaryBox = (await page.locator('#summary').boundingBox())!;
      expect(summaryBox.y).toBeLessThan(120);
      expect(await top('#tables')).toBeGreaterThanOrEqual(summaryBox.y + summaryBox.height);
      expect(await top('#tables')).toBeLessThan(900);
      expect(await top('#machines')).toBeGreaterThan(await top('#tables'));

      // One scale: every diagram is drawn at its natural size, and its states' text at the same size.
      const scales = await page.evaluate(() =>
        [...document.querySelectorAll('#machines svg')].map((svg) => ({
          ratio: svg.getBoundingClientRect().width / (svg as SVGSVGElement).viewBox.baseVal.width,
          font: getComputedStyle(svg.querySelector('g.node g.label text')!).fontSize,
        })),
      );
      expect(scales).toHaveLength(3);
      for (const s of scales) expect(s.ratio).toBeCloseTo(1, 2);
      expect(new Set(scales.map((s) => s.font)).size).toBe(1);
      const drawn = await labelOverlaps(page);
      expect(drawn.labels).toBeGreaterThan(30);
      expect(drawn.overlaps).toEqual([]);
      // Each diagram is read whole, without scrolling sideways; the session machine as a statechart, its live states
      // in one box (and the two that await a token in a box inside it).
      const fits = await page.evaluate(() =>
        [...document.querySelectorAll('#machines figure')].map((f) => f.scrollWidth <= f.clientWidth),
      );
      expect(fits).toEqual([true, true, true]);
      const boxes = await page.locator('#machine-validation-session g.cluster-label').allTextContents();
      expect(boxes.sort()).toEqual(['awaitingToken', 'live']);

      // Everything the page loaded came from the internal listener.
      const origin = new URL(t.internalUrl('/')).origin;
      expect(requested.length).toBeGreaterThan(3);
      for (const url of requested) expect(url.startsWith(origin)).toBe(true);
      await page.close();
    },
  );

  it(
    'the numbers move after a requestToken, and the state holding the session is highlighted',
    { timeout: 60_000 },
    async () => {
      const page = await newPage();
      await page.goto(t.internalUrl('/_sydent/debug/?access_token=letmein'));
      await page.waitForSelector('#machine-validation-session svg', { timeout: 20_000 });
      await page.waitForFunction(() => document.getElementById('status')?.textContent?.startsWith('updated'));
      const before = Number(await text(page, 'sessions-total'));
      const handledBefore = Number(await page.locator('#actors tr[data-row="mailer"] td').nth(4).textContent());

      const res = await fetch(t.url('/_matrix/identity/api/v1/validate/email/requestToken'), {
        method: 'POST',
        body: JSON.stringify({ client_secret: 'page1', email: 'page@example.org', send_attempt: 1 }),
      });
      expect(res.status).toBe(200);
      await smtp.waitForMessage((m) => m.to.includes('page@example.org'));

      await page.waitForFunction(
        (n) => document.querySelector('[data-k="sessions-total"]')?.textContent === String(n + 1),
        before,
        { timeout: 10_000 },
      );
      expect(await text(page, 'sessions-tokenSent')).toBe(String(before + 1));
      expect(await page.locator('#sessions tr[data-row="tokenSent"] td').allTextContents()).toEqual([
        'tokenSent',
        String(before + 1),
      ]);
      await page.waitForFunction(
        (n) => Number(document.querySelectorAll('#actors tr[data-row="mailer"] td')[4]?.textContent) > n,
        handledBefore,
      );

      // The diagram is redrawn with the count, and only the state holding the session is highlighted.
      await page.waitForFunction(
        () =>
          JSON.parse(document.getElementById('machine-validation-session')?.dataset['drawn'] ?? '{}').tokenSent >= 1,
      );
      const nodes = await page.evaluate(() =>
        [...document.querySelectorAll('#machine-validation-session g.node')].map((n) => ({
          label: n.querySelector('g.label')?.textContent ?? '',
          live: n.classList.contains('live'),
          fill: getComputedStyle(n.querySelector('rect, path')!).fill,
        })),
      );
      const tokenSent = nodes.find((n) => n.label.startsWith('tokenSent ('));
      expect(tokenSent).toMatchObject({ label: `tokenSent (${before + 1})`, live: true, fill: 'rgb(255, 233, 168)' });
      const others = nodes.filter((n) => /^\w+ \(0\)/.test(n.label));
      expect(others.map((n) => n.label.split(' ')[0]).sort()).toEqual(
        SESSION_STATES.filter((s) => s !== 'tokenSent').sort(),
      );
      for (const n of others) expect(n).toMatchObject({ live: false });
      expect(new Set(others.map((n) => n.fill)).has('rgb(255, 233, 168)')).toBe(false);
      const drawn = await labelOverlaps(page);
      expect(drawn.labels).toBeGreaterThan(30);
      expect(drawn.overlaps).toEqual([]);

      await page.close();
    },
  );

  it(
    "each peer's state and backlog: a peer that is down is shown backing off, behind by what it has not received",
    { timeout: 90_000 },
    async () => {
      const ca = await makeCa();
      const mesh = await startMesh(ca, ['a.test', 'b.test']);
      try {
        const a = mesh.byName('a.test');
        await mesh.byName('b.test').stop();
        await bind(a.server, 'peer-page@example.org', '@peer:hs.test');
        await waitFor(
          () => replicationView(a.server),
          // A backoff with more than 5 s to run outlasts the page's load: the page sees it, not the next push.
          (v) => v.peers[0]?.state === 'backingOff' && (v.peers[0].nextRetryTs ?? 0) - Date.now() > 5_000,
          15_000,
        );

        const page = await newPage();
        await page.goto(a.server.internalUrl('/_sydent/debug/'));
        await page.waitForSelector('#machine-peer svg', { timeout: 20_000 });
        await page.waitForFunction(() => document.getElementById('status')?.textContent?.startsWith('updated'));
        expect(await text(page, 'replication-status')).toBe('on, 1 peer(s)');
        expect(await page.locator('#summary-replication li').allTextContents()).toEqual(['b.test: backingOff1 behind']);
        expect(await page.locator('#peers tr[data-row="b.test"] td').nth(1).textContent()).toBe('backingOff');
        expect(await page.locator('#peers tr[data-row="b.test"] td').nth(3).textContent()).toBe('1');
        const backingOff = page.locator('#machine-peer g.node.live');
        expect(await backingOff.count()).toBe(1);
        expect(await backingOff.locator('g.label').textContent()).toBe('backingOff (1)');
        await page.close();
      } finally {
        await mesh.close();
      }
    },
  );

  it('the README shows the page', () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const image = /!\[[^\]]*debug page[^\]]*\]\((docs\/[^)]+\.png)\)/i.exec(readme);
    expect(image, 'README links a screenshot of the debug page').not.toBeNull();
    expect(fs.statSync(path.join(ROOT, image![1]!)).size).toBeGreaterThan(10_000);
  });

  it('the debug endpoints need the admin token when one is configured', async () => {
    expect((await fetch(t.internalUrl('/_sydent/debug/actors'))).status).toBe(401);
    expect((await fetch(t.internalUrl('/_sydent/debug/summary'))).status).toBe(401);
    expect(
      (await fetch(t.internalUrl('/_sydent/debug/actors'), { headers: { authorization: 'Bearer wrong' } })).status,
    ).toBe(401);
    expect(
      (await fetch(t.internalUrl('/_sydent/debug/actors'), { headers: { authorization: 'Bearer letmein' } })).status,
    ).toBe(200);
    expect((await fetch(t.internalUrl('/_sydent/debug/callbacks?access_token=letmein'))).status).toBe(200);
    const body = (await (await fetch(t.internalUrl('/_sydent/debug/callbacks?access_token=letmein'))).json()) as Record<
      string,
      unknown
    >;
    expect(body).toMatchObject({ counts: expect.any(Object), rows: expect.any(Array) });
  });
});
