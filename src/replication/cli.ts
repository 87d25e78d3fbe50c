/**
 * `sydent-ts peers …`: the replication peers, without SQL (Sydent's operators wrote the rows by hand).
 *
 *   sydent-ts [--config PATH] peers add NAME --pubkey KEY [--url URL] [--port N]
 *   sydent-ts [--config PATH] peers list [--json]
 *   sydent-ts [--config PATH] peers remove NAME
 *
 * The config is found as the server finds it (--config, then SYDENT_CONF, then ./sydent.conf) and must exist.
 * `add` writes Sydent's rows: `peers` (active = 1, the port; the cursor of an existing peer is kept) and
 * `peer_pubkeys` (alg `ed25519`, the key in standard unpadded base64); `--url` goes where Sydent reads it,
 * `[peer.NAME] base_replication_url` in sydent.conf (only that line is written). `remove` deletes both rows and
 * that section. A running server picks the changes up within a second (on SQLite its store sees another process's
 * commit in `PRAGMA data_version`; on PostgreSQL by NOTIFY). On PostgreSQL (`[db] db.engine =
 * postgresql`) the rows are written in the database of db.url, which every node reads.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

import { ConfigError, loadConfig } from '../config/index.js';
import { isHttpUrl } from '../config/sections/http.js';
import { encodeBase64 } from '../crypto/index.js';
import type { SydentConfig } from '../config/types.js';
import { closeDatabase, openDatabase } from '../store/database.js';
import { PeerReads, PeerWrites, PEER_KEY_ALG, type PeerRow, type PeerUpsert } from '../store/peers.js';
import { PgConnectError } from '../store/pg/url.js';
import { decodePeerKey, PeerKeyError } from './keys.js';
import { peersFromText, pushUrl, removePeerSectionFromFile, setPeerUrlInFile } from './peer-config.js';
import { errorMessage } from '../util/error-message.js';

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: Record<string, string | undefined>;
  cwd: string;
}

const PEERS_USAGE = [
  'usage: sydent-ts [--config PATH] peers add NAME --pubkey KEY [--url URL] [--port N]',
  '       sydent-ts [--config PATH] peers list [--json]',
  '       sydent-ts [--config PATH] peers remove NAME',
].join('\n');

class UsageError extends Error {}
class CommandError extends Error {}

/** The command line's words without `--config PATH` (wherever it is), and that path. */
export function splitConfig(argv: string[]): { configPath: string | undefined; rest: string[] } {
  let configPath: string | undefined;
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--config' || arg === '-c') {
      const value = argv[++i];
      if (!value) throw new UsageError(`${arg} needs a path`);
      configPath = value;
    } else if (arg.startsWith('--config=')) {
      configPath = arg.slice('--config='.length);
    } else {
      rest.push(arg);
    }
  }
  return { configPath, rest };
}

interface AddOptions {
  name: string;
  /** standard unpadded base64, whatever form it was given in (as Sydent documents it) */
  pubkey: string;
  url: string | undefined;
  port: number | null;
}

function parseAdd(words: string[]): AddOptions {
  let name: string | undefined;
  let pubkey: string | undefined;
  let url: string | undefined;
  let port: number | null = null;
  for (let i = 0; i < words.length; i++) {
    const word = words[i]!;
    const eq = word.startsWith('--') ? word.indexOf('=') : -1;
    const flag = eq > 0 ? word.slice(0, eq) : word;
    const value = (): string => {
      const v = eq > 0 ? word.slice(eq + 1) : words[++i];
      if (v === undefined || v === '') throw new UsageError(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--pubkey':
        pubkey = value();
        break;
      case '--url':
        url = value();
        break;
      case '--port': {
        const v = value();
        if (!/^\d{1,5}$/.test(v) || Number(v) < 1 || Number(v) > 65535)
          throw new UsageError(`--port: not a port number: ${v}`);
        port = Number(v);
        break;
      }
      default:
        if (word.startsWith('-')) throw new UsageError(`unknown option: ${word}`);
        if (name !== undefined) throw new UsageError(`unexpected argument: ${word}`);
        name = word;
    }
  }
  if (name === undefined) throw new UsageError('peers add needs the peer NAME');
  if (pubkey === undefined) throw new UsageError('peers add needs --pubkey KEY');
  checkName(name);
  if (url !== undefined && !isHttpUrl(url))
    throw new UsageError(`--url: not an absolute http:// or https:// URL: ${url}`);
  let key: string;
  try {
    key = encodeBase64(decodePeerKey(pubkey).bytes);
  } catch (err) {
    if (err instanceof PeerKeyError) throw new UsageError(`--pubkey: not an ed25519 public key: ${err.message}`);
    throw err;
  }
  return { name, pubkey: key, url, port };
}

/** The name is the peer's server name and its certificate's common name. */
function checkName(name: string): void {
  if (name.length > 255 || !/^[^\s[\]/]+$/.test(name)) {
    throw new UsageError(`not a peer name (the peer's server name, as in its certificate): ${JSON.stringify(name)}`);
  }
}

function oneName(words: string[], command: string): string {
  if (words.length !== 1 || words[0]!.startsWith('-'))
    throw new UsageError(`peers ${command} needs exactly one peer NAME`);
  checkName(words[0]!);
  return words[0]!;
}

/** Runs `peers …` (argv: everything after the program name). Resolves with the exit code. */
export async function peersMain(argv: string[], io: CliIo): Promise<number> {
  try {
    const { configPath, rest } = splitConfig(argv);
    if (rest[0] !== 'peers') throw new UsageError('not a peers command');
    const [command, ...words] = rest.slice(1);
    if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
      io.stdout(`${PEERS_USAGE}\n`);
      return command === undefined ? 2 : 0;
    }
    // validate the words before touching any file
    const action =
      command === 'add'
        ? { kind: 'add' as const, add: parseAdd(words) }
        : command === 'remove'
          ? { kind: 'remove' as const, name: oneName(words, 'remove') }
          : command === 'list'
            ? { kind: 'list' as const, json: parseList(words) }
            : null;
    if (!action) throw new UsageError(`unknown peers command: ${command}`);

    const path = resolve(io.cwd, configPath || io.env['SYDENT_CONF'] || 'sydent.conf');
    if (!existsSync(path)) throw new CommandError(`no config file at ${path} (give --config PATH or set SYDENT_CONF)`);
    const { config } = loadConfig({ configPath: path, env: io.env, cwd: io.cwd });
    const peers = await openPeerRows(config);
    try {
      switch (action.kind) {
        case 'add':
          await add(action.add, path, peers, io);
          break;
        case 'remove':
          await remove(action.name, path, peers, io);
          break;
        case 'list':
          await list(path, peers, io, action.json);
          break;
      }
    } finally {
      await peers.close();
    }
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr(`sydent-ts: ${err.message}\n${PEERS_USAGE}\n`);
      return 2;
    }
    if (err instanceof CommandError || err instanceof ConfigError || err instanceof PgConnectError) {
      io.stderr(`sydent-ts: ${err.message}\n`);
      return 1;
    }
    io.stderr(`sydent-ts: ${errorMessage(err)}\n`);
    return 1;
  }
}

function parseList(words: string[]): boolean {
  if (words.length === 0) return false;
  if (words.length === 1 && words[0] === '--json') return true;
  throw new UsageError(`peers list takes only --json, not ${words.join(' ')}`);
}

/** The peers' rows in the configured database, whichever its engine. */
interface PeerRows {
  upsert(peer: PeerUpsert): Promise<boolean>;
  remove(name: string): Promise<boolean>;
  all(): Promise<PeerRow[]>;
  close(): Promise<void>;
}

async function openPeerRows(config: SydentConfig): Promise<PeerRows> {
  if (config.db.engine === 'postgresql') {
    // Not the SQLite file named by db.file: on PostgreSQL that would make a new, unused sydent.db.
    if (!config.db.url) throw new CommandError('[db] db.engine = postgresql needs db.url (or SYDENT_DB_URL)');
    // The driver is loaded only when configured, as the server does.
    const { openPgPeerAdmin } = await import('../store/pg/peer-admin.js');
    return openPgPeerAdmin(config.db.url);
  }
  const db = openDatabase(config.db.dbFile);
  return {
    upsert: (peer) => Promise.resolve(new PeerWrites(db).upsert(peer)),
    remove: (name) => Promise.resolve(new PeerWrites(db).remove(name)),
    all: () => Promise.resolve(new PeerReads(db).all()),
    close: () => {
      closeDatabase(db);
      return Promise.resolve();
    },
  };
}

async function add(opts: AddOptions, configPath: string, peers: PeerRows, io: CliIo): Promise<void> {
  // The URL first: a running server starts pushing to a peer as soon as it sees its row (at once on PostgreSQL,
  // told by NOTIFY), and would push to the default https://NAME:port if the row came before the URL.
  if (opts.url !== undefined) setPeerUrlInFile(configPath, opts.name, opts.url);
  const added = await peers.upsert({ name: opts.name, key: opts.pubkey, port: opts.port });
  const url = pushUrl(opts.name, opts.port, opts.url ?? urlsOf(configPath)[opts.name]);
  io.stdout(`${added ? 'added' : 'updated'} peer ${opts.name}: pushes go to ${url}\n`);
}

async function remove(name: string, configPath: string, peers: PeerRows, io: CliIo): Promise<void> {
  const removedRows = await peers.remove(name);
  const removedSection = removePeerSectionFromFile(configPath, name);
  if (!removedRows && !removedSection) throw new CommandError(`no peer ${name}`);
  io.stdout(`removed peer ${name}${removedSection ? ` and its [peer.${name}] section` : ''}\n`);
}

function urlsOf(configPath: string): Record<string, string | undefined> {
  const peers = peersFromText(readFileSync(configPath, 'utf8'), dirname(configPath));
  return Object.fromEntries(Object.entries(peers).map(([name, p]) => [name, p.baseReplicationUrl]));
}

async function list(configPath: string, peers: PeerRows, io: CliIo, json: boolean): Promise<void> {
  const urls = urlsOf(configPath);
  const rows = (await peers.all()).map((p) => ({
    name: p.name,
    active: p.active,
    port: p.port,
    url: pushUrl(p.name, p.port, urls[p.name]),
    pubkey: p.keys[PEER_KEY_ALG] ?? null,
    lastSentVersion: p.lastSentVersion,
    lastPokeSucceededAt: p.lastPokeSucceededAt,
  }));
  if (json) {
    io.stdout(`${JSON.stringify(rows, null, 2)}\n`);
    return;
  }
  if (rows.length === 0) {
    io.stdout('no peers\n');
    return;
  }
  const table = [
    ['NAME', 'ACTIVE', 'CURSOR', 'LAST SUCCESS', 'URL', 'ED25519 KEY'],
    ...rows.map((r) => [
      r.name,
      r.active ? 'yes' : 'no',
      String(r.lastSentVersion ?? 0),
      r.lastPokeSucceededAt ? new Date(r.lastPokeSucceededAt).toISOString() : '-',
      r.url,
      r.pubkey ?? '(none)',
    ]),
  ];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  for (const row of table)
    io.stdout(`${row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')}\n`);
}
