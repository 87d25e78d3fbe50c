/**
 * Brands: `?brand=` picks a folder of `templates.path` for the verification mail and the GET submitToken page.
 * Templates are Sydent's: a whole RFC 5322 message as a `.eml.j2` (Jinja2, autoescaped) or a legacy `.eml`
 * (`%(name)s`), and the page's `%(message)s`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, emailConf, hasOnlyCrlf, mailToken, type Reply } from './helpers/email.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { startSmtpServer, type ReceivedMail, type SmtpTestServer } from './helpers/smtp.js';
import { tempDir } from './helpers/tmp.js';

const JINJA = (brand: string) => `Date: {{ date|safe }}
From: {{ from|safe }}
To: {{ to|safe }}
Message-ID: {{ messageid|safe }}
Subject: Brand ${brand}
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="{{ multipart_boundary|safe }}"

--{{ multipart_boundary|safe }}
Content-Type: text/plain; charset=UTF-8

brand=${brand}
link={{ link|safe }}
escaped={{ link }}
token={{ token }}
ip={{ ipaddress }}
to={{ to }}
--{{ multipart_boundary|safe }}--
`;

const LEGACY = `Date: %(date)s
From: %(from)s
To: %(to)s
Message-ID: %(messageid)s
Subject: Brand C
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8

brand=C
link=%(link)s
token=%(token)s
ip=%(ipaddress)s
100%% legacy
`;

const PAGE = (brand: string) => `<!DOCTYPE html>
<html><body class="brand-${brand}"><p>%(message)s</p></body></html>
`;

let smtp: SmtpTestServer;
let t: TestServer;
let templates: { dir: string; cleanup: () => void };

beforeAll(async () => {
  templates = tempDir('sydent-ts-brands-');
  const write = (brand: string, name: string, text: string) => {
    fs.mkdirSync(path.join(templates.dir, brand), { recursive: true });
    fs.writeFileSync(path.join(templates.dir, brand, name), text);
  };
  write('brand-a', 'verification_template.eml.j2', JINJA('A'));
  write('brand-a', 'verify_response_template.html', PAGE('A'));
  write('brand-b', 'verification_template.eml.j2', JINJA('B'));
  write('brand-b', 'verify_response_template.html', PAGE('B'));
  write('brand-c', 'verification_template.eml', LEGACY);
  write('brand-c', 'verify_response_template.html', PAGE('C'));

  smtp = await startSmtpServer();
  t = await startTestServer({
    conf: {
      general: { 'templates.path': templates.dir, 'brand.default': 'brand-a' },
      email: emailConf(smtp.port),
    },
  });
});
afterAll(async () => {
  await t?.close();
  await smtp?.close();
  templates?.cleanup();
});

const v1 = (p: string) => t.url(`/_matrix/identity/api/v1${p}`);

async function requestWithBrand(
  email: string,
  brandQuery: string,
  form = false,
): Promise<{ res: Reply; mail: ReceivedMail }> {
  const res = await call(v1(`/validate/email/requestToken${brandQuery}`), {
    body: { client_secret: 'brandsecret', email, send_attempt: '1' },
    form,
  });
  expect(res.status, res.text).toBe(200);
  const mail = await smtp.waitForMessage((m) => m.to.includes(email));
  return { res, mail };
}

const bodyLine = (mail: ReceivedMail, key: string) => new RegExp(`^${key}=(.*)\r$`, 'm').exec(mail.raw)?.[1];

describe('the verification mail', () => {
  it('uses brand.default without ?brand=', async () => {
    const { mail } = await requestWithBrand('default.brand@example.org', '');
    expect(mail.raw).toMatch(/^Subject: Brand A\r$/m);
    expect(bodyLine(mail, 'brand')).toBe('A');
  });

  it('?brand= picks that brand’s .eml.j2, rendered with every Sydent variable and autoescaped', async () => {
    const { res, mail } = await requestWithBrand('brand.b@example.org', '?brand=brand-b');
    const sid = res.json['sid'] as string;
    const { raw } = mail;
    expect(hasOnlyCrlf(raw)).toBe(true);
    expect(raw).toMatch(/^Subject: Brand B\r$/m);
    expect(bodyLine(mail, 'brand')).toBe('B');
    expect(raw).toMatch(/^From: Example IS <noreply@is\.example\.test>\r$/m);
    expect(raw).toMatch(/^To: brand\.b@example\.org\r$/m);
    expect(raw).toMatch(/^Message-ID: <\d+[A-Za-z]{16}@mail\.is\.example\.test>\r$/m);
    expect(raw).toMatch(/^Date: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} -0000\r$/m);

    const token = mailToken(mail);
    const link = `https://is.example.test/_matrix/identity/v2/validate/email/submitToken?token=${token}&client_secret=brandsecret&sid=${sid}`;
    expect(bodyLine(mail, 'link')).toBe(link);
    expect(bodyLine(mail, 'escaped')).toBe(link.replaceAll('&', '&amp;'));
    expect(bodyLine(mail, 'token')).toBe(token);
    expect(bodyLine(mail, 'ip')).toBe('127.0.0.1');
    expect(bodyLine(mail, 'to')).toBe('brand.b@example.org');

    const boundary = /boundary="([0-9A-Za-z]{32})"/.exec(raw)?.[1];
    expect(boundary).toBeDefined();
    expect(raw).toContain(`\r\n--${boundary}\r\n`);
    expect(raw).toContain(`\r\n--${boundary}--\r\n`);
  });

  it('a legacy .eml brand is rendered with %(name)s and %%', async () => {
    const { res, mail } = await requestWithBrand('brand.c@example.org', '?brand=brand-c');
    const token = mailToken(mail);
    expect(hasOnlyCrlf(mail.raw)).toBe(true);
    expect(mail.raw).toMatch(/^Subject: Brand C\r$/m);
    expect(mail.raw).toMatch(/^To: brand\.c@example\.org\r$/m);
    expect(bodyLine(mail, 'link')).toBe(
      `https://is.example.test/_matrix/identity/v2/validate/email/submitToken?token=${token}&client_secret=brandsecret&sid=${String(res.json['sid'])}`,
    );
    expect(bodyLine(mail, 'token')).toBe(token);
    expect(bodyLine(mail, 'ip')).toBe('127.0.0.1');
    expect(mail.raw).toContain('\r\n100% legacy\r\n');
  });

  it('?brand= also works with a form-urlencoded body', async () => {
    const { mail } = await requestWithBrand('brand.form@example.org', '?brand=brand-b', true);
    expect(bodyLine(mail, 'brand')).toBe('B');
  });

  it('an unknown brand, or one that is not a folder name, falls back to brand.default', async () => {
    for (const [i, brand] of ['nope', '../brand-b', 'brand-b/', '', '.'].entries()) {
      const { mail } = await requestWithBrand(`fallback${i}@example.org`, `?brand=${encodeURIComponent(brand)}`);
      expect(bodyLine(mail, 'brand'), brand).toBe('A');
    }
  });
});

describe('the GET submitToken page', () => {
  it('is the brand’s verify_response_template.html with the message', async () => {
    const { res, mail } = await requestWithBrand('page.b@example.org', '?brand=brand-b');
    const q = `sid=${String(res.json['sid'])}&client_secret=brandsecret&token=${mailToken(mail)}`;

    const failed = await call(
      v1(
        `/validate/email/submitToken?sid=${String(res.json['sid'])}&client_secret=brandsecret&token=wrong&brand=brand-c`,
      ),
    );
    expect(failed.status).toBe(400);
    expect(failed.headers.get('content-type')).toMatch(/^text\/html/);
    expect(failed.text).toBe(
      PAGE('C').replace('%(message)s', 'Verification failed: you may need to request another verification email'),
    );

    const ok = await call(v1(`/validate/email/submitToken?${q}&brand=brand-b`));
    expect(ok.status).toBe(200);
    expect(ok.headers.get('content-type')).toMatch(/^text\/html/);
    expect(ok.text).toBe(
      PAGE('B').replace('%(message)s', 'Verification successful! Please return to your Matrix client to continue.'),
    );

    const plain = await call(v1(`/validate/email/submitToken?${q}`));
    expect(plain.status).toBe(200);
    expect(plain.text).toContain('class="brand-A"');
    const unknown = await call(v1(`/validate/email/submitToken?${q}&brand=nope`));
    expect(unknown.text).toContain('class="brand-A"');
  });
});
