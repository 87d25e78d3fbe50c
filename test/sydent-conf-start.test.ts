/**
 * Sydent's own sydent.conf, started from another working directory: `templates.path = res` (relative, as every
 * config Sydent writes) is not found there, and `client_http_base` is unset. sydent-ts warns about both, naming
 * what it uses instead, starts, and its mails and invites carry https://<server.name> links.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { call, emailConf, mailLink } from './helpers/email.js';
import { inviteBody } from './helpers/invites.js';
import { freePort, spawnServer, waitForStart, type ServerProcess } from './helpers/process.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';
import { tempDir } from './helpers/tmp.js';

let smtp: SmtpTestServer;
const cleanups: (() => void)[] = [];
beforeAll(async () => {
  smtp = await startSmtpServer();
});
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});
afterAll(async () => {
  await smtp?.close();
});

function dir(prefix: string): string {
  const t = tempDir(prefix);
  cleanups.push(t.cleanup);
  return t.dir;
}

describe("Sydent's sydent.conf from another working directory", () => {
  it('warns about templates.path = res and the unset client_http_base, starts, and links to https://<server.name>', async () => {
    const installation = dir('sydent-ts-installation-');
    const elsewhere = dir('sydent-ts-elsewhere-');
    const port = await freePort();
    const confPath = path.join(installation, 'sydent.conf');
    fs.writeFileSync(
      confPath,
      [
        '[general]',
        'server.name = is.example.test',
        'templates.path = res',
        'brand.default = matrix-org',
        `pidfile.path = ${path.join(installation, 'sydent.pid')}`,
        '[db]',
        `db.file = ${path.join(installation, 'sydent.db')}`,
        '[http]',
        'clientapi.http.bind_address = 127.0.0.1',
        `clientapi.http.port = ${port}`,
        '[email]',
        ...Object.entries(emailConf(smtp.port)).map(([k, v]) => `${k} = ${v}`),
        '',
      ].join('\n'),
    );

    const p: ServerProcess = spawnServer({ cwd: elsewhere, args: ['--config', confPath] });
    cleanups.push(() => p.child.kill('SIGKILL'));
    await waitForStart(p);
    const stderr = p.stderr();
    expect(stderr).toContain(
      `config: [general] templates.path ${path.join(elsewhere, 'res')} is not a folder; using the templates shipped`,
    );
    expect(stderr).toContain(
      'config: [http] client_http_base is not set; links in emails and key_validity_url will use https://is.example.test,',
    );

    const base = `http://127.0.0.1:${port}/_matrix/identity/api/v1`;
    const res = await call(`${base}/validate/email/requestToken`, {
      body: { client_secret: 'elsewhere', email: 'elsewhere@example.org', send_attempt: 1 },
    });
    expect(res.status, res.text).toBe(200);
    const mail = await smtp.waitForMessage((m) => m.to.includes('elsewhere@example.org'));
    // the shipped matrix-org template, and a link under the public name rather than the listener's address
    expect(mail.raw).toMatch(/^Subject: Verify your email address on Matrix\r$/m);
    const link = mailLink(mail);
    expect(link.origin).toBe('https://is.example.test');
    expect(link.pathname).toBe('/_matrix/identity/v2/validate/email/submitToken');
    expect(link.searchParams.get('sid')).toBe(String(res.json['sid']));

    const invite = await call(`${base}/store-invite`, {
      body: inviteBody({ address: 'elsewhere.invitee@example.org' }),
    });
    expect(invite.status, invite.text).toBe(200);
    expect((invite.json['public_keys'] as { key_validity_url: string }[]).map((k) => k.key_validity_url)).toEqual([
      'https://is.example.test/_matrix/identity/v2/pubkey/isvalid',
      'https://is.example.test/_matrix/identity/v2/pubkey/ephemeral/isvalid',
    ]);
    const inviteMail = await smtp.waitForMessage((m) => m.to.includes('elsewhere.invitee@example.org'));
    expect(inviteMail.raw).not.toContain(`127.0.0.1:${port}`);

    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
  });
});
