/**
 * `sydent-ts peers add|list|remove`: Sydent's peer rows and `[peer.NAME]` sections without SQL, run as the real
 * command (a process, as an operator runs it) and through its function for the finer cases.
 */
import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { encodeBase64, generateSeed, publicKeyFromSeed } from '../src/crypto/index.js';
import { peersMain } from '../src/replication/cli.js';
import { PeerUrls, removePeerSectionFromText } from '../src/replication/peer-config.js';
import { spawnServer } from './helpers/process.js';
import { tempDir } from './helpers/tmp.js';
import { rows } from './helpers/rows.js';

let dir: string;
let cleanup: () => void;
let confPath: string;
let dbPath: string;

const confText = (db: string, seed: string) => `# my sydent config
[general]
server.name = a.test

[db]
db.file = ${db}

# replication
[http]
replication.https.port = 4434

[crypto]
ed25519.signingkey = ed25519 0 ${seed}
`;
let CONF: (db: string) => string;

beforeEach(() => {
  ({ dir, cleanup } = tempDir('sydent-ts-peers-'));
  confPath = path.join(dir, 'sydent.conf');
  dbPath = path.join(dir, 'data', 'sydent.db');
  fs.mkdirSync(path.dirname(dbPath));
  const seed = encodeBase64(generateSeed());
  CONF = (db) => confText(db, seed);
  fs.writeFileSync(confPath, CONF(dbPath));
});

afterEach(() => cleanup());

const key = () => encodeBase64(publicKeyFromSeed(generateSeed()));

/** runs the real command in `dir`; resolves with its exit code and output */
async function run(args: string[], env: Record<string, string> = {}, cwd = dir) {
  const p = spawnServer({ cwd, args, env });
  let stdout = '';
  p.child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  const code = await p.exited;
  return { code, stdout, stderr: p.stderr() };
}

async function call(words: string[], cwd = dir, env: Record<string, string> = {}) {
  let stdout = '';
  let stderr = '';
  const code = await peersMain(words, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t), env, cwd });
  return { code, stdout, stderr };
}

function peerRows() {
  return {
    peers: rows(dbPath, 'SELECT name, port, lastSentVersion, lastPokeSucceededAt, active FROM peers ORDER BY name'),
    keys: rows(dbPath, 'SELECT peername, alg, key FROM peer_pubkeys ORDER BY peername'),
  };
}

describe('sydent-ts peers (the command)', () => {
  it('add, list and remove, with the config found in the working directory', async () => {
    const pubkey = key();
    const added = await run([
      'peers',
      'add',
      'b.test',
      '--pubkey',
      pubkey,
      '--url',
      'https://b-internal.test:4434',
      '--port',
      '4434',
    ]);
    expect(added.stderr).toBe('');
    expect(added.code).toBe(0);
    expect(added.stdout).toBe(
      'added peer b.test: pushes go to https://b-internal.test:4434/_matrix/identity/replicate/v1/push\n',
    );
    expect(peerRows()).toEqual({
      peers: [{ name: 'b.test', port: 4434, lastSentVersion: null, lastPokeSucceededAt: null, active: 1 }],
      keys: [{ peername: 'b.test', alg: 'ed25519', key: pubkey }],
    });
    const conf = fs.readFileSync(confPath, 'utf8');
    // only the peer's section is added; the operator's comments stay
    expect(conf).toBe(`${CONF(dbPath)}\n[peer.b.test]\nbase_replication_url = https://b-internal.test:4434\n`);

    const listed = await run(['peers', 'list', '--json'], { SYDENT_CONF: confPath }, path.dirname(dir));
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual([
      {
        name: 'b.test',
        active: true,
        port: 4434,
        url: 'https://b-internal.test:4434/_matrix/identity/replicate/v1/push',
        pubkey,
        lastSentVersion: null,
        lastPokeSucceededAt: null,
      },
    ]);

    const removed = await run(['--config', confPath, 'peers', 'remove', 'b.test'], {}, path.dirname(dir));
    expect(removed.code).toBe(0);
    expect(removed.stdout).toBe('removed peer b.test and its [peer.b.test] section\n');
    expect(peerRows()).toEqual({ peers: [], keys: [] });
    expect(fs.readFileSync(confPath, 'utf8')).toBe(`${CONF(dbPath)}\n`);
  }, 30_000);

  it('add writes the URL before the peer row, so a running server never pushes to the default address first', async () => {
    expect((await call(['peers', 'list'])).code).toBe(0);
    // The test holds the write lock: the command's row waits for it, what comes before the row does not.
    const lock = new Database(dbPath);
    lock.exec('BEGIN IMMEDIATE');
    const adding = run(['peers', 'add', 'b.test', '--pubkey', key(), '--url', 'https://b-internal.test:4434']);
    try {
      const deadline = Date.now() + 15_000;
      while (!fs.readFileSync(confPath, 'utf8').includes('base_replication_url = https://b-internal.test:4434')) {
        if (Date.now() > deadline) throw new Error('the URL was not written while the row waited');
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(lock.prepare('SELECT name FROM peers').all()).toEqual([]);
    } finally {
      lock.exec('ROLLBACK');
      lock.close();
    }
    const added = await adding;
    expect(added.code).toBe(0);
    expect(peerRows().peers.map((p) => p.name)).toEqual(['b.test']);
  }, 30_000);

  it('refuses a bad key with a usage error, and writes nothing', async () => {
    const res = await run(['peers', 'add', 'b.test', '--pubkey', 'not a key!']);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('--pubkey: not an ed25519 public key');
    expect(fs.existsSync(dbPath)).toBe(false);
    expect(fs.readFileSync(confPath, 'utf8')).toBe(CONF(dbPath));
  }, 30_000);
});

describe('sydent-ts peers (the function)', () => {
  it('add again updates the key and port, keeps the cursor, and makes the peer active', async () => {
    expect((await call(['peers', 'add', 'b.test', '--pubkey', key()])).code).toBe(0);
    const db = new Database(dbPath);
    db.prepare("UPDATE peers SET lastSentVersion = 7, active = 0 WHERE name = 'b.test'").run();
    db.close();
    const seed = generateSeed();
    const hex = Buffer.from(publicKeyFromSeed(seed)).toString('hex');
    const res = await call(['peers', 'add', 'b.test', '--pubkey', hex, '--port=9000']);
    expect(res).toMatchObject({
      code: 0,
      stdout: 'updated peer b.test: pushes go to https://b.test:9000/_matrix/identity/replicate/v1/push\n',
    });
    expect(peerRows()).toEqual({
      peers: [{ name: 'b.test', port: 9000, lastSentVersion: 7, lastPokeSucceededAt: null, active: 1 }],
      // hex (Sydent's legacy form) is stored as base64
      keys: [{ peername: 'b.test', alg: 'ed25519', key: encodeBase64(publicKeyFromSeed(seed)) }],
    });
  });

  it('list as a table; an empty list says so', async () => {
    expect(await call(['peers', 'list'])).toMatchObject({ code: 0, stdout: 'no peers\n' });
    await call(['peers', 'add', 'b.test', '--pubkey', key()]);
    const out = (await call(['peers', 'list'])).stdout.split('\n');
    expect(out[0]).toMatch(/^NAME\s+ACTIVE\s+CURSOR\s+LAST SUCCESS\s+URL\s+ED25519 KEY$/);
    expect(out[1]).toMatch(
      /^b\.test\s+yes\s+0\s+-\s+https:\/\/b\.test:1001\/_matrix\/identity\/replicate\/v1\/push\s+\S{43}$/,
    );
  });

  it('usage errors: missing name, missing key, bad url, bad port, unknown command', async () => {
    for (const words of [
      ['peers', 'add', '--pubkey', key()],
      ['peers', 'add', 'b.test'],
      ['peers', 'add', 'b.test', '--pubkey', key(), '--url', 'b.test:4434'],
      ['peers', 'add', 'b.test', '--pubkey', key(), '--port', '70000'],
      ['peers', 'add', 'b test', '--pubkey', key()],
      ['peers', 'frobnicate'],
      ['peers', 'remove'],
    ]) {
      const res = await call(words);
      expect(res.code, words.join(' ')).toBe(2);
      expect(res.stderr).toContain('usage: sydent-ts');
    }
    expect(fs.existsSync(dbPath)).toBe(false);
  });

  it('a missing config or an unknown peer is an error', async () => {
    const missing = await call(['--config', path.join(dir, 'nope.conf'), 'peers', 'list']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('no config file at');
    expect(fs.existsSync(path.join(dir, 'nope.conf'))).toBe(false);
    expect(await call(['peers', 'remove', 'x.test'])).toMatchObject({ code: 1, stderr: 'sydent-ts: no peer x.test\n' });
  });

  it('removing a section leaves the other sections, comments and continuation lines alone', () => {
    const text =
      '[general]\nserver.name = a\n\n# peers\n[peer.b]\nbase_replication_url = https://b\n  continued\n\n[peer.c]\nbase_replication_url = https://c\n';
    expect(removePeerSectionFromText(text, 'b')).toBe(
      '[general]\nserver.name = a\n\n# peers\n\n[peer.c]\nbase_replication_url = https://c\n',
    );
    expect(removePeerSectionFromText(text, 'z')).toBe(text);
  });
});

describe('the running server sees what the command wrote', () => {
  it('a new URL of the same length, written within the same file-time tick, is picked up', async () => {
    const urls = new PeerUrls({ peers: {}, configPath: confPath });
    await call(['peers', 'add', 'b.test', '--pubkey', key(), '--url', 'https://127.0.0.1:10001']);
    fs.chmodSync(confPath, 0o600);
    // the kernel's coarse file clock can give two writes one mtime: both are given the same one here
    const tick = 1_790_000_000;
    fs.utimesSync(confPath, tick, tick);
    const before = fs.statSync(confPath);
    urls.refresh();
    expect(urls.get('b.test')).toBe('https://127.0.0.1:10001');

    await call(['peers', 'add', 'b.test', '--pubkey', key(), '--url', 'https://127.0.0.1:10002']);
    fs.utimesSync(confPath, tick, tick);
    const after = fs.statSync(confPath);
    expect([after.size, after.mtimeMs]).toEqual([before.size, before.mtimeMs]);
    urls.refresh();
    expect(urls.get('b.test')).toBe('https://127.0.0.1:10002');
    // the file was replaced whole, keeping its mode: a reader never meets it truncated
    expect(after.ino).not.toBe(before.ino);
    expect(after.mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(dir).sort()).toEqual(['data', 'sydent.conf']);
  });
});
