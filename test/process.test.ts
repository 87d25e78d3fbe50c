import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, ROOT, spawnServer, waitForStart, type ServerProcess } from './helpers/process.js';
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
    expect(await getJson(`${base}/_matrix/identity/v2/pubkey/isvalid?public_key=${encodeURIComponent(key)}`)).toEqual({
      valid: true,
    });

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

  it('a bad config value stops start-up with one line naming the key', { timeout: 60_000 }, async () => {
    const cases: [string, RegExp][] = [
      ['[http]\nclientapi.http.port = 80x\n', /\[http\] clientapi\.http\.port/],
      ['[email]\nemail.tlsmode = SOMETIMES\n', /\[email\] email\.tlsmode/],
      ['[crypto]\ned25519.signingkey = ed25519 0 notakey\n', /\[crypto\] ed25519\.signingkey/],
      ['[general]\naddress_lookup_limit = 0\n', /\[general\] address_lookup_limit/],
      ['[general]\nip.blacklist = 10.0.0.0/33\n', /\[general\] ip\.blacklist/],
    ];
    // side by side: one process each
    await Promise.all(
      cases.map(async ([text, pattern]) => {
        const cwd = dir();
        fs.writeFileSync(path.join(cwd, 'sydent.conf'), text);
        const p = start({ cwd });
        expect(await p.exited).toBe(1);
        const lines = p.stderr().trim().split('\n');
        expect(lines).toHaveLength(1);
        expect(lines[0]).toMatch(pattern);
        expect(fs.existsSync(path.join(cwd, 'sydent.db'))).toBe(false);
      }),
    );
  });
});

/** A config of its own in `cwd` on a free client port; `extra` is appended (sections of its own). */
async function conf(cwd: string, extra = ''): Promise<{ path: string; port: number }> {
  const port = await freePort();
  const file = path.join(cwd, 'sydent.conf');
  fs.writeFileSync(
    file,
    `[general]\nserver.name = proc.example.test\n[http]\nclientapi.http.port = ${port}\nclientapi.http.bind_address = 127.0.0.1\n${extra}`,
  );
  return { path: file, port };
}

/** The lines the command itself wrote to stderr (log lines are JSON, and may land after them). */
function ownLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l !== '' && !l.startsWith('{'));
}

/** The one JSON log line with this message. */
function logLine(stderr: string, msg: string): Record<string, unknown> {
  const lines = stderr.split('\n').filter((l) => l.includes(`"msg":"${msg}"`));
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]!) as Record<string, unknown>;
}

describe('start-up that cannot hurt', () => {
  it(
    'a second instance on the same database stops before touching it; the first keeps its pid file and serves',
    { timeout: 60_000 },
    async () => {
      const cwd = dir();
      const { port } = await conf(cwd);
      const first = start({ cwd });
      await waitForStart(first);
      const pidFile = path.join(cwd, 'sydent.pid');
      expect(fs.readFileSync(pidFile, 'utf8')).toBe(`${first.child.pid}\n`);

      const second = start({ cwd });
      expect(await second.exited).toBe(1);
      expect(ownLines(second.stderr())).toEqual([
        `sydent-ts: another sydent-ts (pid ${first.child.pid}, from ${pidFile}) is running on ${path.join(cwd, 'sydent.db')} ([db] db.file): stop it first`,
      ]);
      expect(fs.readFileSync(pidFile, 'utf8')).toBe(`${first.child.pid}\n`);
      expect((await fetch(`http://127.0.0.1:${port}/_matrix/identity/versions`)).status).toBe(200);

      // The lock goes with the process, however it ends: after a SIGKILL the next start takes over.
      first.child.kill('SIGKILL');
      await first.exited;
      const third = start({ cwd });
      await waitForStart(third);
      expect(fs.readFileSync(pidFile, 'utf8')).toBe(`${third.child.pid}\n`);
      third.child.kill('SIGTERM');
      expect(await third.exited).toBe(0);
      expect(fs.existsSync(pidFile)).toBe(false);
    },
  );

  it(
    'a port in use: one line naming the listener and its keys, and a pid file it did not write stays',
    { timeout: 60_000 },
    async () => {
      const net = await import('node:net');
      const busy = net.createServer();
      await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
      const busyPort = (busy.address() as AddressInfo).port;
      try {
        const client = dir();
        await conf(client);
        fs.writeFileSync(
          path.join(client, 'sydent.conf'),
          fs.readFileSync(path.join(client, 'sydent.conf'), 'utf8').replace(/port = \d+/, `port = ${busyPort}`),
        );
        fs.writeFileSync(path.join(client, 'sydent.pid'), '4242\n');
        const p = start({ cwd: client });
        expect(await p.exited).toBe(1);
        expect(ownLines(p.stderr())).toEqual([
          `sydent-ts: the client listener cannot listen on 127.0.0.1:${busyPort}: the address is already in use (another process listens there); see [http] clientapi.http.bind_address, clientapi.http.port`,
        ]);
        expect(fs.readFileSync(path.join(client, 'sydent.pid'), 'utf8')).toBe('4242\n');

        const internal = dir();
        await conf(internal, `internalapi.http.port = ${busyPort}\n`);
        const q = start({ cwd: internal });
        expect(await q.exited).toBe(1);
        expect(ownLines(q.stderr())).toEqual([
          `sydent-ts: the internal listener cannot listen on 127.0.0.1:${busyPort}: the address is already in use (another process listens there); see [http] internalapi.http.bind_address, internalapi.http.port`,
        ]);
      } finally {
        busy.close();
      }
    },
  );

  it('typos stop start-up with "did you mean", before any database or listener', { timeout: 60_000 }, async () => {
    const cases: [string, string][] = [
      ['[htpp]\nclientapi.http.port = 1\n', 'unknown section [htpp]: did you mean [http]?'],
      [
        '[http]\nclientapi.http.prot = 1\n',
        '[http] clientapi.http.prot: unknown key, did you mean clientapi.http.port?',
      ],
    ];
    for (const [text, message] of cases) {
      const cwd = dir();
      fs.writeFileSync(path.join(cwd, 'sydent.conf'), text);
      const p = start({ cwd });
      expect(await p.exited).toBe(1);
      const lines = p.stderr().trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(message);
      expect(fs.readdirSync(cwd)).toEqual(['sydent.conf']);
    }
  });

  it(
    'an explicit --config that is not there is an error; --generate-config writes it; the database directory is never made',
    { timeout: 60_000 },
    async () => {
      const cwd = dir();
      const missing = path.join(cwd, 'tpyo.conf');
      const p = start({ cwd, args: ['--config', missing] });
      expect(await p.exited).toBe(1);
      expect(p.stderr().trim()).toBe(
        `config error: ${missing} does not exist (sydent-ts --config ${missing} --generate-config writes a new one)`,
      );
      expect(fs.readdirSync(cwd)).toEqual([]);

      const g = start({ cwd, args: ['--config', missing, '--generate-config'] });
      expect(await g.exited).toBe(0);
      expect(g.stdout()).toBe(`sydent-ts: wrote ${missing} with every default and a fresh signing key\n`);
      expect(fs.readFileSync(missing, 'utf8')).toMatch(/^ed25519\.signingkey = ed25519 0 [A-Za-z0-9+/]{43}$/m);
      expect(fs.readdirSync(cwd)).toEqual(['tpyo.conf']);

      // A db.file in a directory that is not there (here: mistyped) names the key and creates nothing.
      const port = await freePort();
      const badDb = path.join(cwd, 'dta', 'sydent.db');
      const edited = fs
        .readFileSync(missing, 'utf8')
        .replace(/^db\.file = .*$/m, `db.file = ${badDb}`)
        .replace(/^clientapi\.http\.port = .*$/m, `clientapi.http.port = ${port}`);
      fs.writeFileSync(missing, edited);
      const d = start({ cwd, args: ['--config', missing] });
      expect(await d.exited).toBe(1);
      expect(ownLines(d.stderr())).toEqual([
        `sydent-ts: the directory ${path.dirname(badDb)} of [db] db.file (${badDb}) does not exist; sydent-ts does not create it`,
      ]);
      expect(fs.readdirSync(cwd)).toEqual(['tpyo.conf']);
    },
  );

  it(
    "logs the version, the config and database paths and every listener's real address when it starts",
    { timeout: 60_000 },
    async () => {
      const cwd = dir();
      const internalPort = await freePort();
      const metricsPort = await freePort();
      const { path: confPath, port } = await conf(cwd, `internalapi.http.port = ${internalPort}\n`);
      fs.writeFileSync(
        confPath,
        fs
          .readFileSync(confPath, 'utf8')
          .replace('[general]\n', `[general]\nprometheus_port = ${metricsPort}\nprometheus_addr = 127.0.0.1\n`),
      );
      const p = start({ cwd });
      await waitForStart(p);
      const started = logLine(p.stderr(), 'sydent-ts started');
      const { version } = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
      expect(started).toMatchObject({
        version,
        config: confPath,
        db: path.join(cwd, 'sydent.db'),
        clientUrl: `http://127.0.0.1:${port}`,
        internalUrl: `http://127.0.0.1:${internalPort}`,
        metricsUrl: `http://127.0.0.1:${metricsPort}`,
        replicationUrl: null,
      });
      p.child.kill('SIGTERM');
      expect(await p.exited).toBe(0);
    },
  );
});

describe('the command line', () => {
  it(
    '--version prints the package version; --help lists every command, option and environment variable on stdout',
    { timeout: 60_000 },
    async () => {
      const cwd = dir();
      const v = start({ cwd, args: ['--version'] });
      expect(await v.exited).toBe(0);
      const { version } = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
      expect(v.stdout()).toBe(`sydent-ts ${version}\n`);

      const h = start({ cwd, args: ['--help'] });
      expect(await h.exited).toBe(0);
      expect(h.stderr()).toBe('');
      const lines = h.stdout().split('\n');
      const entries = [
        'peers add NAME --pubkey KEY',
        'peers list',
        'peers remove NAME',
        'rotate-pepper',
        'migrate-db --to postgresql://…',
        'migrate-db --to sqlite:PATH',
        '-c, --config PATH',
        '--generate-config',
        '--inspect[=PORT]',
        '-V, --version',
        '-h, --help',
      ];
      // Every SYDENT_ variable the code reads from the environment.
      const sources = fs
        .readdirSync(path.join(ROOT, 'src'), { recursive: true, encoding: 'utf8' })
        .filter((f) => f.endsWith('.ts'));
      const reads = (f: string) =>
        [...fs.readFileSync(path.join(ROOT, 'src', f), 'utf8').matchAll(/env(?:\.|\[')(SYDENT_[A-Z_]+)/g)].map(
          (m) => m[1]!,
        );
      const variables = new Set(sources.flatMap(reads));
      expect([...variables].sort()).toEqual([
        'SYDENT_CONF',
        'SYDENT_DB_PATH',
        'SYDENT_DB_URL',
        'SYDENT_PID_FILE',
        'SYDENT_SERVER_NAME',
      ]);
      for (const entry of [...entries, ...variables]) {
        expect(
          lines.filter((l) => l.trimStart().startsWith(`${entry} `) || l.trimStart().startsWith(`${entry}\t`)),
          entry,
        ).toHaveLength(1);
      }
      expect(fs.readdirSync(cwd)).toEqual([]);
    },
  );
});
