/**
 * next_link as Sydent carried it: the mailed link holds `nextLink` = next_link with `sid=<sid>` appended (`?` or
 * `&`), quoted as Python's quote() does, and a successful GET submitToken redirects to that same address. The
 * redirect goes only to the session's own next_link; a session Sydent created before the switch has none
 * stored, so for those the http(s) `nextLink` of the link Sydent mailed is followed.
 */
import { describe, expect, it } from 'vitest';
import { call, emailConf, mailLink, mailToken, sameMailbox, sessionOf } from './helpers/email.js';
import { smtpServerForFile, testServerForFile } from './helpers/per-file.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import type { ReceivedMail } from './helpers/smtp.js';
import { sydentDb } from './helpers/sydent-rows.js';

const smtp = smtpServerForFile();
const t = testServerForFile(() => ({ conf: { email: emailConf(smtp.port) } }));

const v1 = (p: string) => t.url(`/_matrix/identity/api/v1${p}`);
const mailTo = (address: string): Promise<ReceivedMail> =>
  smtp.waitForMessage((m) => m.to.some((r) => sameMailbox(r, address)));

async function session(email: string, secret: string, nextLink?: string): Promise<{ sid: string; mail: ReceivedMail }> {
  const res = await call(v1('/validate/email/requestToken'), {
    body: { client_secret: secret, email, send_attempt: 1, ...(nextLink ? { next_link: nextLink } : {}) },
  });
  expect(res.status, res.text).toBe(200);
  return { sid: res.json['sid'] as string, mail: await mailTo(email) };
}

/** Opens a mailed link (it points at client_http_base) on the test server, as a browser would. */
const follow = (link: URL) => call(t.url(link.pathname + link.search));

describe('the mailed link', () => {
  it('carries nextLink = next_link&sid=<sid>, quoted as Sydent did, and following it redirects there', async () => {
    const next = 'https://client.example.org/after/validation?x=1&y=%20z';
    const { sid, mail } = await session('next.query@example.org', 'nextquery', next);
    const token = mailToken(mail);
    const expected = `${next}&sid=${sid}`;
    // Python's quote(): '/' stays, ':', '?', '&', '=' and '%' are encoded
    const quoted = 'https%3A//client.example.org/after/validation%3Fx%3D1%26y%3D%2520z%26sid%3D' + sid;
    expect(mail.raw).toContain(
      `/_matrix/identity/v2/validate/email/submitToken?token=${token}&client_secret=nextquery&sid=${sid}&nextLink=${quoted}\r\n`,
    );
    const link = mailLink(mail);
    expect(link.searchParams.get('nextLink')).toBe(expected);

    const res = await follow(link);
    expect(res.status, res.text).toBe(302);
    expect(res.headers.get('location')).toBe(expected);
    expect(res.text).toContain('Verification successful!');
    expect(sessionOf(t.config.db.dbFile, sid).session?.validated).toBe(1);
  });

  it('a next_link without a query gets ?sid=<sid>', async () => {
    const { sid, mail } = await session('next.plain@example.org', 'nextplain', 'https://client.example.org/done');
    const link = mailLink(mail);
    expect(link.searchParams.get('nextLink')).toBe(`https://client.example.org/done?sid=${sid}`);
    const res = await follow(link);
    expect(res.status, res.text).toBe(302);
    expect(res.headers.get('location')).toBe(`https://client.example.org/done?sid=${sid}`);
  });

  it('a session of ours without next_link: no nextLink in the mail, and one added to the link is not followed', async () => {
    const { sid, mail } = await session('next.none@example.org', 'nextnone');
    const link = mailLink(mail);
    expect(link.searchParams.has('nextLink')).toBe(false);
    link.searchParams.set('nextLink', 'https://evil.example/');
    const res = await follow(link);
    expect(res.status, res.text).toBe(200);
    expect(res.headers.get('location')).toBeNull();
    expect(sessionOf(t.config.db.dbFile, sid).session?.validated).toBe(1);
  });

  it('a session with next_link redirects to its own, whatever nextLink the clicked link carries', async () => {
    const { sid, mail } = await session('next.own@example.org', 'nextown', 'https://client.example.org/own');
    const link = mailLink(mail);
    link.searchParams.set('nextLink', 'https://evil.example/');
    const res = await follow(link);
    expect(res.status, res.text).toBe(302);
    expect(res.headers.get('location')).toBe(`https://client.example.org/own?sid=${sid}`);
  });
});

describe('a session Sydent created before the switch', () => {
  const sydentToken = 'SydentNextLinkToken0123456789abc';

  function sydentSession(server: TestServer, sid: number, secret: string): void {
    const sydent = sydentDb(server.config.db.dbFile);
    sydent.createSession({
      sid,
      address: `sydent.${sid}@example.org`,
      clientSecret: secret,
      token: sydentToken,
      mtime: server.clock.now(),
    });
    sydent.close();
  }

  /** The path and query of the link Sydent mailed: v1 path, its nextLink already holding the sid. */
  const sydentLink = (sid: number, secret: string, nextLink: string) =>
    `/_matrix/identity/api/v1/validate/email/submitToken?token=${sydentToken}&client_secret=${secret}&sid=${sid}&nextLink=${encodeURIComponent(nextLink)}`;

  it('follows the http(s) nextLink of the link Sydent mailed, also after a restart', async () => {
    // a server of its own, to restart on its files (one server per database at a time)
    const first = await startTestServer({ conf: { email: emailConf(smtp.port) } });
    try {
      sydentSession(first, 31337, 'sydentnext');
      const next = 'https://client.example.org/sydent?sid=31337';
      const res = await call(first.url(sydentLink(31337, 'sydentnext', next)));
      expect(res.status, res.text).toBe(302);
      expect(res.headers.get('location')).toBe(next);
      expect(sessionOf(first.config.db.dbFile, 31337).session?.validated).toBe(1);
      await first.server.close();

      // the session now has a row of ours; it is still known to be Sydent's
      const again = await startTestServer({ dir: first.dir, clock: first.clock });
      try {
        const after = await call(again.url(sydentLink(31337, 'sydentnext', next)));
        expect(after.status, after.text).toBe(302);
        expect(after.headers.get('location')).toBe(next);
      } finally {
        await again.server.close();
      }
    } finally {
      await first.close();
    }
  });

  it('but never a nextLink that is not http(s)', async () => {
    sydentSession(t, 31338, 'sydentbad');
    for (const next of ['javascript:alert(1)', 'file:///etc/passwd', '//evil.example/', 'not a url']) {
      const res = await call(t.url(sydentLink(31338, 'sydentbad', next)));
      expect(res.status, `${next}: ${res.text}`).toBe(200);
      expect(res.headers.get('location'), next).toBeNull();
      expect(res.text).toContain('Verification successful!');
    }
  });
});
