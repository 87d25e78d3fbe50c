/**
 * What the store tells the operator about the database: one log line when writes start failing for a cause (disk
 * full, locked, read-only, file gone), one when the cause changes, one when writes work again; never one per request.
 * And the file's identity, so that a database file removed or replaced under the running server is noticed.
 */
import fs from 'node:fs';
import type { Logger } from '../log.js';
import { describeCause, type UnavailableCause } from './unavailable.js';

export class StoreHealth {
  private cause: UnavailableCause | null = null;

  constructor(
    private readonly log: Logger,
    private readonly file: string,
  ) {}

  failed(cause: UnavailableCause): void {
    if (cause === this.cause || cause === 'closed') return;
    this.cause = cause;
    const line = { cause, db: this.file };
    const message = `database: ${describeCause(cause)}; requests that write answer 503 until this is fixed`;
    // A lock held for a while is the operator's own tool, usually; the other causes need someone to act.
    if (cause === 'busy') this.log.warn(line, message);
    else this.log.error(line, message);
  }

  ok(): void {
    if (this.cause === null) return;
    this.log.warn({ was: this.cause, db: this.file }, 'database: writes work again');
    this.cause = null;
  }
}

interface FileIdentity {
  dev: number;
  ino: number;
}

function fileIdentity(path: string): FileIdentity | null {
  try {
    const { dev, ino } = fs.statSync(path);
    return { dev, ino };
  } catch {
    return null;
  }
}

/** The database file as opened: is it still the file at its path? */
export class DatabaseFile {
  private readonly opened: FileIdentity | null;

  constructor(readonly path: string | null) {
    this.opened = path === null ? null : fileIdentity(path);
  }

  /** null while the path still names the file we have open; else what happened to it. */
  problem(): 'missing' | 'replaced' | null {
    if (this.path === null || this.opened === null) return null;
    const now = fileIdentity(this.path);
    if (now === null) return 'missing';
    if (now.dev !== this.opened.dev || now.ino !== this.opened.ino) return 'replaced';
    return null;
  }
}
