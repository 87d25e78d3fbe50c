/**
 * Readiness, for load balancers and orchestrators (`GET /ready`): the database answers and is still the file it was
 * opened from, every supervisor runs, and the server is not draining (SIGTERM received, listeners about to close).
 */
import fs from 'node:fs';
import type { ActorSystem } from './actors/system.js';
import { isMemoryPath, type SqliteDatabase } from './store/database.js';

export interface ReadinessReport {
  ready: boolean;
  /** `ready`, `draining` or `not ready` */
  status: string;
  /** `ok`, or what is wrong (without paths: the answer is public) */
  database: string;
  /** supervisor → actor status */
  supervisors: Record<string, string>;
}

export class Readiness {
  private draining = false;
  private readonly probe;
  private readonly file: { dev: number; ino: number } | null;

  constructor(
    private readonly db: SqliteDatabase,
    private readonly dbPath: string,
    private readonly system: ActorSystem,
  ) {
    // Reads the schema page: answered from the file (or its WAL), not from a constant.
    this.probe = db.prepare('SELECT count(*) FROM sqlite_master');
    this.file = isMemoryPath(dbPath) ? null : fileIdentity(dbPath);
  }

  /** From now on the server reports itself not ready: called on SIGTERM, before the listeners close. */
  drain(): void {
    this.draining = true;
  }

  report(): ReadinessReport {
    const database = this.databaseState();
    const supervisors = this.system.supervisorStatuses();
    const running = Object.values(supervisors).every((s) => s === 'active');
    const ready = !this.draining && database === 'ok' && running;
    const status = this.draining ? 'draining' : ready ? 'ready' : 'not ready';
    return { ready, status, database, supervisors };
  }

  private databaseState(): string {
    try {
      this.probe.get();
    } catch {
      return 'unreachable';
    }
    if (this.file) {
      // A file replaced or removed under a running server (a restore copied over it, a volume gone) would take
      // writes nobody reads again.
      const now = fileIdentity(this.dbPath);
      if (now === null) return 'file missing';
      if (now.dev !== this.file.dev || now.ino !== this.file.ino) return 'file replaced';
    }
    return 'ok';
  }
}

function fileIdentity(path: string): { dev: number; ino: number } | null {
  try {
    const { dev, ino } = fs.statSync(path);
    return { dev, ino };
  } catch {
    return null;
  }
}
