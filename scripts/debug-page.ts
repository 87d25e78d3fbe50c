/**
 * `npm run debug-page`: the screenshot of the debug page the README shows (docs/debug-page.png). Starts a server
 * on loopback with an SMTP sink, gives it some sessions in several states and a homeserver callback that cannot
 * be delivered, and photographs the page in Debian's Chromium (CHROMIUM_PATH to use another).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchChromium } from '../test/helpers/chromium.js';
import { startSmtpServer } from '../test/helpers/smtp.js';
import { startTestServer } from '../test/helpers/server.js';

const OUT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../docs/debug-page.png');
const V1 = '/_matrix/identity/api/v1';

const smtp = await startSmtpServer();
const t = await startTestServer({
  conf: {
    email: {
      'email.smtphost': '127.0.0.1',
      'email.smtpport': String(smtp.port),
      'email.ratelimit_sender.burst': '100',
    },
  },
});
try {
  const post = async (p: string, body: object) => {
    const res = await fetch(t.url(`${V1}${p}`), { method: 'POST', body: JSON.stringify(body) });
    if (!res.ok) throw new Error(`${p}: ${res.status} ${await res.text()}`);
    return (await res.json()) as Record<string, unknown>;
  };
  const validate = async (n: number) => {
    const email = `user${n}@example.org`;
    const { sid } = (await post('/validate/email/requestToken', {
      client_secret: `s${n}`,
      email,
      send_attempt: 1,
    })) as { sid: string };
    const mail = await smtp.waitForMessage((m) => m.to.includes(email));
    const token = /token=([0-9A-Za-z]{32})/.exec(mail.raw)?.[1];
    return { sid, token: token ?? '' };
  };
  for (let n = 1; n <= 4; n++) await validate(n);
  for (let n = 5; n <= 6; n++) {
    const { sid, token } = await validate(n);
    await post('/validate/email/submitToken', { sid, client_secret: `s${n}`, token });
  }
  const { sid, token } = await validate(7);
  await post('/validate/email/submitToken', { sid, client_secret: 's7', token });
  // A user on a homeserver that does not exist: the callback waits to be retried.
  await post('/3pid/bind', { sid, client_secret: 's7', mxid: '@alice:hs.invalid' });

  const browser = await launchChromium();
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(t.internalUrl('/_sydent/debug/'));
  await page.waitForSelector('#machine-peer svg', { timeout: 30_000 });
  // Two refreshes, so the callback's first attempt has been recorded.
  await page.waitForTimeout(4500);
  await page.screenshot({ path: OUT, fullPage: true });
  await browser.close();
  console.log(`written: ${path.relative(process.cwd(), OUT)}`);
} finally {
  await t.close();
  await smtp.close();
}
