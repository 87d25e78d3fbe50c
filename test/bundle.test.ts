/**
 * The server as `npm start` and the installed command run it: src/ bundled by scripts/bundle.mjs into one file (and
 * a chunk per command loaded on demand), laid out as in the package (dist/bundle/ two levels below config/ and
 * package.json). What the bundle could lose: the shipped templates and the version (found from the bundle's own
 * place), the dependencies loaded on first use from node_modules (nodemailer, nunjucks), the chunks (migrate-db and the
 * PostgreSQL client), CommonJS dependencies bundled into an ES module, and those left out of it (write-file-atomic).
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, emailConf, mailToken, sameMailbox } from './helpers/email.js';
import { freePort, ROOT, spawnServer, waitForStart, type ServerProcess } from './helpers/process.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';
import { tempDir } from './helpers/tmp.js';

const run = promisify(execFile);
const tmp = tempDir('sydent-ts-bundle-');
const servers: ServerProcess[] = [];
let smtp: SmtpTestServer;
let main: string;

beforeAll(async () => {
  const outdir = path.join(tmp.dir, 'package', 'dist', 'bundle');
  await run(process.execPath, [path.join(ROOT, 'scripts', 'bundle.mjs'), '--outdir', outdir]);
  // the package's files beside the bundle, and its installed dependencies
  for (const name of ['config', 'package.json', 'node_modules'])
    fs.symlinkSync(path.join(ROOT, name), path.join(tmp.dir, 'package', name));
  main = path.join(outdir, 'main.mjs');
  smtp = await startSmtpServer();
}, 120_000);
afterAll(async () => {
  for (const s of servers) s.child.kill('SIGKILL');
  await smtp?.close();
  tmp.cleanup();
});

/** A folder with a config of its own (mail to the loopback SMTP server), as an operator's working directory. */
async function site(name: string): Promise<{ dir: string; conf: string; port: number }> {
  const dir = path.join(tmp.dir, name);
  fs.mkdirSync(dir);
  const port = await freePort();
  const conf = path.join(dir, 'sydent.conf');
  fs.writeFileSync(
    conf,
    [
      '[general]',
      'server.name = is.example.test',
      '[http]',
      'clientapi.http.bind_address = 127.0.0.1',
      `clientapi.http.port = ${port}`,
      'client_http_base = https://is.example.test',
      '[email]',
      ...Object.entries(emailConf(smtp.port)).map(([k, v]) => `${k} = ${v}`),
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  return { dir, conf, port };
}

describe('the bundled server', () => {
  it('prints the package version', async () => {
    const { version } = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const { stdout } = await run(process.execPath, [main, '--version']);
    expect(stdout).toBe(`sydent-ts ${version}\n`);
  });

  it('serves, mails a token from the shipped templates, validates it, and stops on SIGTERM', async () => {
    const { dir, conf, port } = await site('serve');
    const server = spawnServer({ cwd: dir, bin: main, args: ['--config', conf] });
    servers.push(server);
    await waitForStart(server);
    const base = `http://127.0.0.1:${port}/_matrix/identity/api/v1`;

    const versions = await call(`http://127.0.0.1:${port}/_matrix/identity/versions`);
    expect(versions.status).toBe(200);
    expect(versions.json['versions']).toContain('v1.1');

    const email = 'bundle@example.org';
    const res = await call(`${base}/validate/email/requestToken`, {
      body: { client_secret: 'bundlesecret', email, send_attempt: 1 },
    });
    expect(res.status, res.text).toBe(200);
    const mail = await smtp.waitForMessage((m) => m.to.some((r) => sameMailbox(r, email)));
    // the shipped matrix-org template (Jinja2: nunjucks, loaded on first use from node_modules)
    expect(mail.raw).toContain('Subject: Verify your email address on Matrix');
    const ok = await call(`${base}/validate/email/submitToken`, {
      body: { sid: res.json['sid'], client_secret: 'bundlesecret', token: mailToken(mail) },
    });
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json).toEqual({ success: true });
    expect(server.stderr()).not.toContain('does not exist');

    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
  });

  it('runs a command from its own chunk: migrate-db reaches the PostgreSQL client', async () => {
    const { dir, conf } = await site('migrate');
    const server = spawnServer({ cwd: dir, bin: main, args: ['--config', conf] });
    servers.push(server);
    await waitForStart(server);
    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);

    // nothing listens on port 1: the client connects, is refused, and the command says so in one line
    const refused = await run(
      process.execPath,
      [main, '--config', conf, 'migrate-db', '--to', 'postgresql://u@127.0.0.1:1/db'],
      {
        cwd: dir,
      },
    ).then(
      () => null,
      (error: { code: number; stderr: string }) => error,
    );
    expect(refused?.code).toBe(1);
    expect(refused?.stderr).toContain('cannot connect to PostgreSQL at 127.0.0.1:1/db: connection refused');
  });

  it('peers add writes the URL into sydent.conf (the file replaced whole) and the peer into the database', async () => {
    const { dir, conf } = await site('peers');
    const pubkey = Buffer.alloc(32, 7).toString('base64').replace(/=+$/, '');
    const added = await run(
      process.execPath,
      [main, '--config', conf, 'peers', 'add', 'b.test', '--pubkey', pubkey, '--url', 'https://b-internal.test:4434'],
      { cwd: dir },
    );
    expect(added.stdout).toBe(
      'added peer b.test: pushes go to https://b-internal.test:4434/_matrix/identity/replicate/v1/push\n',
    );
    expect(fs.readFileSync(conf, 'utf8')).toContain(
      '[peer.b.test]\nbase_replication_url = https://b-internal.test:4434\n',
    );
    expect(fs.statSync(conf).mode & 0o777).toBe(0o600);
    const listed = await run(process.execPath, [main, '--config', conf, 'peers', 'list', '--json'], { cwd: dir });
    expect(JSON.parse(listed.stdout)).toMatchObject([{ name: 'b.test', pubkey }]);
  });
});
