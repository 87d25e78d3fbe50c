/**
 * Where a peer is pushed to. As Sydent: `[peer.NAME] base_replication_url` in sydent.conf when set, else
 * `https://NAME:<peers.port or 1001>`; then `_matrix/identity/replicate/v1/push` below it.
 *
 * The URLs stay in sydent.conf (not in the database) so that the same config keeps working for Sydent. The
 * running server re-reads the `[peer.*]` sections when the file changes, so `sydent-ts peers add --url` takes
 * effect without a restart, like the `peers` rows it writes.
 */
import { readFileSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

import writeFileAtomic from 'write-file-atomic';

import { setOptionInText } from '../config/ini-edit.js';
import { IniReader, parseIni, splitLines } from '../config/ini.js';
import { PEER_SECTION_PREFIX } from '../config/known-keys.js';
import { readPeers } from '../config/sections/peers.js';
import type { PeerConfig, SydentConfig } from '../config/types.js';

const PUSH_PATH = '_matrix/identity/replicate/v1/push';
/** Sydent's port when `peers.port` is NULL */
const DEFAULT_PEER_PORT = 1001;

/** The push URL of a peer. */
export function pushUrl(name: string, port: number | null, baseReplicationUrl: string | undefined): string {
  let base = baseReplicationUrl ?? `https://${name}:${port ?? DEFAULT_PEER_PORT}`;
  if (!base.endsWith('/')) base += '/';
  return base + PUSH_PATH;
}

/** Reads the `[peer.*]` sections of a config file's text. ConfigError on a bad file or value. */
export function peersFromText(
  text: string,
  cwd: string,
  warn: (message: string) => void = () => undefined,
): Record<string, PeerConfig> {
  return readPeers(new IniReader(parseIni(text)), { cwd, warn });
}

/**
 * `[peer.NAME] base_replication_url` of the running server: the parsed config's at start, then the file's
 * whenever it changes (the replication worker calls `refresh()` on each wake-up and tick: one stat). A file that
 * no longer parses keeps the last good URLs.
 *
 * A change is told by inode, size and mtime together: file times tick with the kernel's coarse clock, so two
 * writes within a few milliseconds can share an mtime, and the `peers` command replaces the file (a new inode).
 */
export class PeerUrls {
  private urls: Record<string, PeerConfig>;
  private version: string | null;

  constructor(
    private readonly config: Pick<SydentConfig, 'peers' | 'configPath'>,
    private readonly onError: (message: string) => void = () => undefined,
  ) {
    this.urls = config.peers;
    this.version = this.stat();
  }

  get(name: string): string | undefined {
    return Object.hasOwn(this.urls, name) ? this.urls[name]?.baseReplicationUrl : undefined;
  }

  /** `[peer.NAME] push_batch_size`, when set. */
  batchSize(name: string): number | undefined {
    return Object.hasOwn(this.urls, name) ? this.urls[name]?.pushBatchSize : undefined;
  }

  /** Re-reads the peer sections when sydent.conf changed since the last look. */
  refresh(): void {
    const version = this.stat();
    if (version === null || version === this.version) return;
    this.version = version;
    try {
      this.urls = peersFromText(readFileSync(this.config.configPath, 'utf8'), dirname(this.config.configPath));
    } catch (err) {
      this.onError(`could not re-read the [peer.*] sections of ${this.config.configPath}: ${(err as Error).message}`);
    }
  }

  private stat(): string | null {
    try {
      const { ino, size, mtimeMs } = statSync(this.config.configPath);
      return `${ino}:${size}:${mtimeMs}`;
    } catch {
      return null;
    }
  }
}

// ---- editing sydent.conf (the `peers` command) ----

/**
 * The edited file replaces the old one whole (a temporary file renamed over it, keeping its mode and owner): a
 * running server that reads it meanwhile sees the old text or the new, never a truncated file.
 */
function replaceFile(path: string, text: string): void {
  writeFileAtomic.sync(path, text);
}

/** Sets `[peer.NAME] base_replication_url` in the file, touching only that line (or adding the section). */
export function setPeerUrlInFile(path: string, name: string, url: string): void {
  const text = readFileSync(path, 'utf8');
  replaceFile(path, setOptionInText(text, PEER_SECTION_PREFIX + name, 'base_replication_url', url));
}

/**
 * Removes the `[peer.NAME]` section from the text: its header and its options with their continuation lines.
 * Comments and blank lines around it stay. Returns the text unchanged when there is no such section.
 */
export function removePeerSectionFromText(text: string, name: string): string {
  const doc = parseIni(text);
  const section = doc.sections.get(PEER_SECTION_PREFIX + name);
  if (!section) return text;
  const lines = splitLines(text);
  const drop = new Set<number>([section.line]);
  for (const option of section.options.values()) {
    for (let i = option.line; i <= option.endLine; i++) drop.add(i);
  }
  const kept = lines.filter((_, i) => !drop.has(i));
  return kept.map((l) => l.content + l.eol).join('');
}

export function removePeerSectionFromFile(path: string, name: string): boolean {
  const text = readFileSync(path, 'utf8');
  const updated = removePeerSectionFromText(text, name);
  if (updated === text) return false;
  replaceFile(path, updated);
  return true;
}
