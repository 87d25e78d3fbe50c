import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, spawnServer, waitForStart, type ServerProcess } from './helpers/process.js';
import { tempDir } from './helpers/tmp.js';

const running: ServerProcess[] = [];
const dirs: (() => void)[] = [];
afterEach(() => {
  for (const p of running.splice(0)) p.child.kill('SIGKILL');
  for (const c of dirs.splice(0)) c();
});

function dir(): string {
  const t = tempDir();
  dirs.push(t.cleanup);
  return t.dir;
}

function start(opts: Parameters<typeof spawnServer>[0]): ServerProcess {
  const p = spawnServer(opts);
  running.push(p);
  return p;
}

async function getJson(url: string): Promise<Record<string, unknown>> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, unknown>;
}

describe('sydent-ts as a process', () => {
  it('starts in an empty directory on the defaults, writes config, key, db and pid, and stops cleanly on SIGTERM', async () => {
    const cwd = dir();
    const p = start({ cwd });
    await waitForStart(p);
    const conf = fs.readFileSync(path.join(cwd, 'sydent.conf'), 'utf8');
    expect(conf).toMatch(/^ed25519\.signingkey = ed25519 0 [A-Za-z0-9+/]{43}$/m);
    for (const section of ['general', 'db', 'http', 'email', 'sms', 'crypto']) expect(conf).toContain(`[${section}]`);
    expect(fs.existsSync(path.join(cwd, 'sydent.db'))).toBe(true);
    expect(fs.readFileSync(path.join(cwd, 'sydent.pid'), 'utf8')).toBe(`${p.child.pid}\n`);

    const base = 'http://127.0.0.1:8090';
    expect((await getJson(`${base}/_matrix/identity/versions`))['versions']).toContain('v1.1');
    expect(await getJson(`${base}/_matrix/identity/v2`)).toEqual({});
    expect(await getJson(`${base}/_matrix/identity/api/v1`)).toEqual({});
    const key = (await getJson(`${base}/_matrix/identity/v2/pubkey/ed25519:0`))['public_key'] as string;
    expect(await getJson(`${base}/_matrix/identity/v2/pubkey/isvalid?public_key=${encodeURIComponent(key)}`)).toEqual({ valid: true });

    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
    expect(fs.existsSync(path.join(cwd, 'sydent.pid'))).toBe(false);

    // A restart reuses the key written the first time.
    const again = start({ cwd });
    await waitForStart(again);
    expect((await getJson(`${base}/_matrix/identity/v2/pubkey/ed25519:0`))['public_key']).toBe(key);
    expect(fs.readFileSync(path.join(cwd, 'sydent.conf'), 'utf8')).toBe(conf);
    again.child.kill('SIGINT');
    expect(await again.exited).toBe(0);
    expect(fs.existsSync(path.join(cwd, 'sydent.pid'))).toBe(false);
  });

  it('honours SYDENT_CONF, SYDENT_DB_PATH, SYDENT_PID_FILE and SYDENT_SERVER_NAME when it writes the config', async () => {
    const cwd = dir();
    const data = path.join(cwd, 'data');
    fs.mkdirSync(data);
    const port = await freePort();
    const confPath = path.join(data, 'custom.conf');
    // The port is the one thing set by hand so the test can run beside others.
    fs.writeFileSync(confPath, `[http]\nclientapi.http.port = ${port}\nclientapi.http.bind_address = 127.0.0.1\n`);
    const p = start({
      cwd,
      env: {
        SYDENT_CONF: confPath,
        SYDENT_DB_PATH: path.join(data, 'my.db'),
        SYDENT_PID_FILE: path.join(data, 'my.pid'),
        SYDENT_SERVER_NAME: 'id.example.org',
      },
    });
    await waitForStart(p);
    expect(fs.existsSync(path.join(data, 'my.db'))).toBe(true);
    expect(fs.readFileSync(path.join(data, 'my.pid'), 'utf8')).toBe(`${p.child.pid}\n`);
    expect(fs.existsSync(path.join(cwd, 'sydent.db'))).toBe(false);
    expect(fs.readFileSync(confPath, 'utf8')).toMatch(/^ed25519\.signingkey = ed25519 0 /m);
    expect(p.stderr()).toContain('id.example.org');
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
    expect(fs.existsSync(path.join(data, 'my.pid'))).toBe(false);
  });

  it('--config PATH names the config file', async () => {
    const cwd = dir();
    const port = await freePort();
    const confPath = path.join(cwd, 'elsewhere.conf');
    fs.writeFileSync(
      confPath,
      `[general]\npidfile.path =\n[db]\ndb.file = ${path.join(cwd, 'x.db')}\n[http]\nclientapi.http.port = ${port}\nclientapi.http.bind_address = 127.0.0.1\n`,
    );
    const p = start({ cwd, args: ['--config', confPath] });
    await waitForStart(p);
    expect(await getJson(`http://127.0.0.1:${port}/_matrix/identity/v2`)).toEqual({});
    expect(fs.existsSync(path.join(cwd, 'x.db'))).toBe(true);
    expect(fs.existsSync(path.join(cwd, 'sydent.conf'))).toBe(false);
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
  });

  it('a bad config value stops start-up with one line naming the key', async () => {
    const cases: [string, RegExp][] = [
      ['[http]\nclientapi.http.port = 80x\n', /\[http\] clientapi\.http\.port/],
      ['[email]\nemail.tlsmode = SOMETIMES\n', /\[email\] email\.tlsmode/],
      ['[crypto]\ned25519.signingkey = ed25519 0 notakey\n', /\[crypto\] ed25519\.signingkey/],
      ['[general]\ntemplates.path = /does/not/exist\n', /\[general\] templates\.path/],
      ['[general]\nip.blacklist = 10.0.0.0/33\n', /\[general\] ip\.blacklist/],
    ];
    for (const [text, pattern] of cases) {
      const cwd = dir();
      fs.writeFileSync(path.join(cwd, 'sydent.conf'), text);
      const p = start({ cwd });
      expect(await p.exited).toBe(1);
      const lines = p.stderr().trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(pattern);
      expect(fs.existsSync(path.join(cwd, 'sydent.db'))).toBe(false);
    }
  });
});
