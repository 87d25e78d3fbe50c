/**
 * The log file (`log.path`), rotated as Sydent's TimedRotatingFileHandler(when="midnight") rotates it: at local
 * midnight the file is renamed `<name>.YYYY-MM-DD` (the day it holds) and a new one is started under the same
 * name; `log.backup_count` rotated files are kept. A file left from a previous day is rotated at start, as Python
 * does from the file's modification time. `reopen()` (SIGHUP) starts a new file under the name, for logrotate.
 *
 * Files are created 0600, or 0640 and of `log.group` when one is configured: log lines carry client addresses.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type * as RotatingFileStreamModule from 'rotating-file-stream';
import type { RotatingFileStream } from 'rotating-file-stream';

// Loaded only when there is a log file: logging to stderr does not pay for it at start-up.
const requireLazily = createRequire(import.meta.url);

interface LogFileOptions {
  path: string;
  /** rotated files kept; 0 keeps all (as Python's backupCount=0) */
  backupCount: number;
  /** group name or id that may read the file; "" = nobody but the owner */
  group: string;
}

interface LogFile {
  write(line: string): boolean;
  /** what the operator should know about the file (it existed readable by others) */
  readonly warnings: string[];
  reopen(): void;
  close(): Promise<void>;
}

export class LogFileError extends Error {}

export function openLogFile(opts: LogFileOptions): LogFile {
  const gid = opts.group === '' ? null : groupId(opts.group);
  const mode = gid === null ? 0o600 : 0o640;
  const warnings = prepare(opts.path, mode, gid);
  const dir = path.dirname(opts.path) + path.sep;
  const name = path.basename(opts.path);

  const { createStream } = requireLazily('rotating-file-stream') as typeof RotatingFileStreamModule;
  const open = (): RotatingFileStream => {
    const stream = createStream((time: Date | number | null, index?: number) => rotatedName(name, time, index), {
      path: dir,
      interval: '1d',
      intervalBoundary: true,
      initialRotation: true,
      mode,
      ...(opts.backupCount > 0 ? { maxFiles: opts.backupCount } : {}),
    });
    // A new file after a rotation gets the group too (the mode is given at creation).
    if (gid !== null) stream.on('open', (file: string) => fs.chown(file, -1, gid, () => undefined));
    stream.on('error', (error: Error) => fallBack(stream, error));
    return stream;
  };

  let current = open();
  let failed = false;
  // The file cannot be written any more (disk full, removed directory): the lines go to stderr rather than nowhere.
  function fallBack(stream: RotatingFileStream, error: Error): void {
    if (stream !== current || failed) return;
    failed = true;
    process.stderr.write(`sydent-ts: log file ${opts.path} failed (${error.message}); logging to stderr\n`);
  }

  return {
    warnings,
    write(line) {
      if (failed) return process.stderr.write(line);
      return current.write(line);
    },
    reopen() {
      const old = current;
      current = open();
      failed = false;
      old.end();
    },
    close: () => new Promise<void>((resolve) => current.end(() => resolve())),
  };
}

/** Python's suffix for a midnight rotation: the date of the day the rotated file holds. */
export function rotatedName(name: string, time: Date | number | null, index = 1): string {
  if (time === null) return name;
  const d = new Date(time);
  const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  return index > 1 ? `${name}.${day}.${index}` : `${name}.${day}`;
}

function pad(n: number): string {
  return String(n).padStart(2, '0');
}

/**
 * Creates the file with its mode and group before the stream opens it, so a path or group that cannot work stops
 * start-up with one line instead of failing later in the background. The directory is not created: a mistyped
 * path is an error, not a new folder.
 */
function prepare(file: string, mode: number, gid: number | null): string[] {
  let fd: number;
  try {
    fd = fs.openSync(file, 'a', mode);
  } catch (error) {
    throw new LogFileError(`log.path ${file}: ${(error as Error).message}`);
  }
  try {
    if (gid !== null) fs.fchownSync(fd, -1, gid);
    const { mode: actual } = fs.fstatSync(fd);
    return actual & 0o007
      ? [`log file ${file} is readable by others (mode ${(actual & 0o777).toString(8)}); chmod ${mode.toString(8)} it`]
      : [];
  } catch (error) {
    throw new LogFileError(`log.group: cannot give ${file} to group ${gid}: ${(error as Error).message}`);
  } finally {
    fs.closeSync(fd);
  }
}

/** A group id, or a group name looked up as the system does (getent: /etc/group, LDAP…). */
function groupId(group: string): number {
  if (/^\d+$/.test(group)) return Number(group);
  let entry: string;
  try {
    entry = execFileSync('getent', ['group', group], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    throw new LogFileError(`log.group: no group named "${group}"`);
  }
  const gid = Number(entry.split(':')[2]);
  if (!Number.isInteger(gid)) throw new LogFileError(`log.group: no group named "${group}"`);
  return gid;
}
