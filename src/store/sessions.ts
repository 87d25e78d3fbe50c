/**
 * Validation sessions: Sydent's `threepid_validation_sessions` and `threepid_token_auths` rows, kept in step
 * with our `session_machines` row (the machine's state and context) in one transaction per change. Sydent can
 * still read every session we write, and sessions Sydent wrote restore into machines.
 */
import { randomInt } from 'node:crypto';
import type Database from 'better-sqlite3';
import type { ReadSnapshot } from './lookup-connection.js';
import { SESSION_MACHINE_VERSION, sessionStateName } from '../machines/validation-session.js';

/** The columns of Sydent's rows that change during a session's life: what Sydent may have moved on. */
export interface SydentColumns {
  validated: number;
  mtime: number;
  token: string | null;
  sendAttemptNumber: number | null;
}

export interface SydentSessionRow extends SydentColumns {
  id: number;
  medium: string;
  address: string;
  clientSecret: string;
}

export function sameSydentColumns(a: SydentColumns, b: SydentColumns): boolean {
  return (
    a.validated === b.validated &&
    a.mtime === b.mtime &&
    a.token === b.token &&
    a.sendAttemptNumber === b.sendAttemptNumber
  );
}

/** Sydent's columns as a save writes them. */
export function sydentColumnsOf(write: SessionWrite): SydentColumns {
  return {
    validated: write.validated ? 1 : 0,
    mtime: write.mtime,
    token: write.token,
    sendAttemptNumber: write.sendAttempt,
  };
}

export interface MachineRow {
  state: string;
  context: string;
  machine_version: number;
  row_version: number;
  history: string;
}

export interface StoredSession {
  sydent: SydentSessionRow;
  machine: MachineRow | null;
}

export interface Transition {
  at: number;
  event: string;
  from: string;
  to: string;
}

/** What every write persists of a session machine. */
export interface SessionWrite {
  sid: number;
  state: string;
  /** JSON of the machine context */
  context: string;
  machineVersion: number;
  /** Sydent's columns, derived from the context; the address is written only when the session is created */
  address: string;
  validated: boolean;
  mtime: number;
  token: string;
  sendAttempt: number;
  history: Transition[];
  now: number;
  /**
   * Sydent's columns as this write's author last saw them (null on creation). Anything else there now was
   * written by someone else (Sydent, after a switch back) and must not be overwritten with older knowledge.
   */
  expectedSydent: SydentColumns | null;
}

/** A session's write as a larger write carries it (a bind): the row and the row version it must still find. */
export interface SessionSave {
  write: SessionWrite;
  /** null: the session has no machine row yet (Sydent made it) */
  expectedVersion: number | null;
}

export class SessionConflictError extends Error {
  constructor(sid: number) {
    super(`session ${sid} was changed by someone else`);
    this.name = 'SessionConflictError';
  }
}

/** The sid a new session was to have is already a session's (Sydent's or ours): pick another. */
export class SidTakenError extends Error {
  constructor(sid: number) {
    super(`session ${sid} exists already`);
    this.name = 'SidTakenError';
  }
}

/** Sydent's sids are random in [0, 2^31]. */
const SYDENT_SID_RANGE = 2 ** 31;
const HOUR_MS = 60 * 60 * 1000;

/**
 * A candidate sid for a new session; the create that uses it refuses one in use (SidTakenError).
 *
 * The hour (since 1970) times 2^31, plus 31 random bits: the random part is all of a Sydent sid, so whoever knows
 * the hour has Sydent's odds of guessing one (and a sid opens nothing without its client secret). The hour in the
 * high bits puts an hour's new sessions side by side at the end of each b-tree keyed by sid (the sessions, their
 * tokens, their machine rows) rather than on random pages of tables of a million rows. Sydent's sids (below 2^31)
 * and ours never meet; ours stay exact in a double until the year 2448.
 */
export function newSid(nowMs: number): number {
  // never 0, which Sydent's clients may take for no sid
  return Math.floor(nowMs / HOUR_MS) * SYDENT_SID_RANGE + randomInt(1, SYDENT_SID_RANGE);
}
const HISTORY_LIMIT = 20;

/** Sydent's rows of the newest session of (medium, address, client secret), its latest token and our machine row. */
export const LATEST_BY_KEY_SQL = `SELECT s.id, s.medium, s.address, s.clientSecret, s.validated, s.mtime, t.token, t.sendAttemptNumber,
       m.state, m.context, m.machine_version, m.row_version, m.history
     FROM threepid_validation_sessions s
     LEFT JOIN threepid_token_auths t ON t.id = (SELECT max(id) FROM threepid_token_auths WHERE validationSession = s.id)
     LEFT JOIN session_machines m ON m.sid = s.id
     WHERE s.medium = ? AND s.address = ? AND s.clientSecret = ?
     ORDER BY s.mtime DESC LIMIT 1`;

/** A row of LATEST_BY_KEY_SQL: the machine's columns are null when the session has no machine row (Sydent's). */
export type SessionJoinRow = SydentSessionRow & { [K in keyof MachineRow]: MachineRow[K] | null };

export function storedSessionOf(row: SessionJoinRow): StoredSession {
  const { state, context, machine_version, row_version, history } = row;
  return {
    sydent: {
      id: row.id,
      medium: row.medium,
      address: row.address,
      clientSecret: row.clientSecret,
      validated: row.validated,
      mtime: row.mtime,
      token: row.token,
      sendAttemptNumber: row.sendAttemptNumber,
    },
    machine:
      state === null || context === null || machine_version === null || row_version === null || history === null
        ? null
        : { state, context, machine_version, row_version, history },
  };
}

export class SessionReads {
  private readonly byKey: Database.Statement<[string, string, string], { id: number }>;
  private readonly latestByKey: Database.Statement<[string, string, string], SessionJoinRow>;
  private readonly byId: Database.Statement<[number], SydentSessionRow>;
  private readonly machineById: Database.Statement<[number], MachineRow>;
  private readonly counts: Database.Statement<[], { state: string; n: number }>;
  private readonly legacyCount: Database.Statement<[], { validated: number; n: number }>;

  /** `snapshot`: as AssociationReads's, reads share one read transaction for a few milliseconds. */
  constructor(
    db: Database.Database,
    private readonly snapshot?: ReadSnapshot,
  ) {
    this.byKey = db.prepare(
      'SELECT id FROM threepid_validation_sessions WHERE medium = ? AND address = ? AND clientSecret = ? ORDER BY mtime DESC LIMIT 1',
    );
    this.latestByKey = db.prepare(LATEST_BY_KEY_SQL);
    this.byId = db.prepare(
      `SELECT s.id, s.medium, s.address, s.clientSecret, s.validated, s.mtime, t.token, t.sendAttemptNumber
       FROM threepid_validation_sessions s
       LEFT JOIN threepid_token_auths t ON t.validationSession = s.id
       WHERE s.id = ? ORDER BY t.id DESC LIMIT 1`,
    );
    this.machineById = db.prepare(
      'SELECT state, context, machine_version, row_version, history FROM session_machines WHERE sid = ?',
    );
    // Kept by triggers as rows change (migration 12): a few rows to read, whatever the number of sessions.
    this.counts = db.prepare('SELECT state, n FROM sydent_ts_machine_counts WHERE n <> 0');
    this.legacyCount = db.prepare('SELECT validated, n FROM sydent_ts_sydent_session_counts WHERE n <> 0');
  }

  findSid(medium: string, address: string, clientSecret: string): number | undefined {
    this.snapshot?.enter();
    return this.byKey.get(medium, address, clientSecret)?.id;
  }

  /** `load(findSid(…))` in one statement: the request repeated by a requestToken, as one read. */
  findLatest(medium: string, address: string, clientSecret: string): StoredSession | undefined {
    this.snapshot?.enter();
    const row = this.latestByKey.get(medium, address, clientSecret);
    return row && storedSessionOf(row);
  }

  load(sid: number): StoredSession | undefined {
    this.snapshot?.enter();
    const sydent = this.byId.get(sid);
    if (!sydent) return undefined;
    return { sydent, machine: this.machineById.get(sid) ?? null };
  }

  /** Sessions by machine state; Sydent's own sessions (no machine row yet) count as validated or tokenSent. */
  countByState(): Record<string, number> {
    const out: Record<string, number> = {};
    // The column holds the machine's value, and its shape says which version wrote it: JSON is the nested states of
    // today's machine, a plain name an older version's (or `expired`, a top-level state in every version).
    for (const { state, n } of this.counts.all()) {
      const name = sessionStateName(state, state.startsWith('{') ? SESSION_MACHINE_VERSION : 1);
      out[name] = (out[name] ?? 0) + n;
    }
    for (const { validated, n } of this.legacyCount.all()) {
      const state = validated ? 'validated' : 'tokenSent';
      out[state] = (out[state] ?? 0) + n;
    }
    return out;
  }
}

export class SessionWrites {
  private readonly insertSession: Database.Statement<[number, string, string, string, number]>;
  private readonly insertToken: Database.Statement<[number, string, number]>;
  private readonly updateSession: Database.Statement<[number, number, number]>;
  private readonly sydentColumns: Database.Statement<[number], SydentColumns>;
  private readonly updateToken: Database.Statement<[string, number, number]>;
  private readonly insertMachine: Database.Statement<[number, string, string, number, string, number]>;
  private readonly updateMachine: Database.Statement<[string, string, number, string, number, number, number]>;
  private readonly versionOf: Database.Statement<[number], { row_version: number }>;
  private readonly sidExists: Database.Statement<[number], { id: number }>;
  private readonly expiredTokens: Database.Statement<[number, number]>;
  private readonly expiredSessions: Database.Statement<[number, number]>;
  private readonly createRows: (medium: string, clientSecret: string, write: SessionWrite) => void;
  private readonly saveRows: (write: SessionWrite, expectedVersion: number | null) => number;

  constructor(private readonly db: Database.Database) {
    this.insertSession = db.prepare(
      'INSERT INTO threepid_validation_sessions (id, medium, address, clientSecret, validated, mtime) VALUES (?, ?, ?, ?, 0, ?)',
    );
    this.insertToken = db.prepare(
      'INSERT INTO threepid_token_auths (validationSession, token, sendAttemptNumber) VALUES (?, ?, ?)',
    );
    // Never the address: the row keeps the address it was created with (Sydent's as typed, ours canonical).
    this.updateSession = db.prepare('UPDATE threepid_validation_sessions SET validated = ?, mtime = ? WHERE id = ?');
    this.sydentColumns = db.prepare(
      `SELECT s.validated, s.mtime, t.token, t.sendAttemptNumber
       FROM threepid_validation_sessions s
       LEFT JOIN threepid_token_auths t ON t.validationSession = s.id
       WHERE s.id = ? ORDER BY t.id DESC LIMIT 1`,
    );
    this.updateToken = db.prepare(
      'UPDATE threepid_token_auths SET token = ?, sendAttemptNumber = ? WHERE validationSession = ?',
    );
    this.insertMachine = db.prepare(
      'INSERT INTO session_machines (sid, state, context, machine_version, row_version, history, updated_ts) VALUES (?, ?, ?, ?, 1, ?, ?)',
    );
    this.updateMachine = db.prepare(
      `UPDATE session_machines SET state = ?, context = ?, machine_version = ?, history = ?, row_version = row_version + 1, updated_ts = ?
       WHERE sid = ? AND row_version = ?`,
    );
    this.versionOf = db.prepare('SELECT row_version FROM session_machines WHERE sid = ?');
    this.sidExists = db.prepare('SELECT id FROM threepid_validation_sessions WHERE id = ?');
    // The sweep deletes a slice of expired sessions (the oldest first, through the mtime index) and, before them,
    // their token rows by session id: its cost is the slice's, whatever the size of the tables. Both statements
    // select the same sessions, the sessions table being unchanged until the last one. Machine rows go with their
    // session (a trigger, migration 12).
    const expired = 'SELECT id FROM threepid_validation_sessions WHERE mtime < ? ORDER BY mtime LIMIT ?';
    this.expiredTokens = db.prepare(`DELETE FROM threepid_token_auths WHERE validationSession IN (${expired})`);
    this.expiredSessions = db.prepare(`DELETE FROM threepid_validation_sessions WHERE id IN (${expired})`);
    // Each made once: better-sqlite3 builds a transaction's wrappers anew at every db.transaction() call.
    this.createRows = db.transaction((medium: string, clientSecret: string, write: SessionWrite) => {
      if (this.sidExists.get(write.sid)) throw new SidTakenError(write.sid);
      this.insertSession.run(write.sid, medium, write.address, clientSecret, write.mtime);
      this.insertToken.run(write.sid, write.token, write.sendAttempt);
      this.insertMachine.run(
        write.sid,
        write.state,
        write.context,
        write.machineVersion,
        historyJson(write.history),
        write.now,
      );
    });

    this.saveRows = db.transaction((write: SessionWrite, expectedVersion: number | null): number => {
      const current = this.sydentColumns.get(write.sid);
      // Gone (swept since it was read) or changed: the caller reads the row again, and finds it gone.
      if (!current || (write.expectedSydent && !sameSydentColumns(current, write.expectedSydent))) {
        throw new SessionConflictError(write.sid);
      }
      if (expectedVersion === null) {
        if (this.versionOf.get(write.sid)) throw new SessionConflictError(write.sid);
        this.insertMachine.run(
          write.sid,
          write.state,
          write.context,
          write.machineVersion,
          historyJson(write.history),
          write.now,
        );
      } else {
        const res = this.updateMachine.run(
          write.state,
          write.context,
          write.machineVersion,
          historyJson(write.history),
          write.now,
          write.sid,
          expectedVersion,
        );
        if (res.changes !== 1) throw new SessionConflictError(write.sid);
      }
      const sydent = sydentColumnsOf(write);
      // Most changes (a send's end, a wrong token) leave Sydent's columns as they are: their rows and indexes are
      // then not rewritten.
      if (!sameSydentColumns(current, sydent)) {
        this.updateSession.run(sydent.validated, sydent.mtime, write.sid);
        this.updateToken.run(write.token, write.sendAttempt, write.sid);
      }
      return (expectedVersion ?? 0) + 1;
    });
  }

  /**
   * Creates Sydent's rows and the machine row together, under the sid the caller picked (newSid); returns the row
   * version (1). A sid in use is refused with SidTakenError, nothing written.
   */
  create(medium: string, clientSecret: string, write: SessionWrite): number {
    this.createRows(medium, clientSecret, write);
    return 1;
  }

  /**
   * Saves a transition if nobody else saved one since `expectedVersion` (null: the session has no machine row
   * yet, as for sessions Sydent created) and Sydent's columns are still as `write.expectedSydent` says. Returns
   * the new row version.
   */
  save(write: SessionWrite, expectedVersion: number | null): number {
    return this.saveRows(write, expectedVersion);
  }

  /**
   * Sydent's clean-up, a slice at a time: at most `limit` of the sessions untouched since before `cutoffMs`, with
   * their tokens and machine rows. Returns how many sessions it deleted (fewer than `limit`: none are left).
   */
  deleteExpired(cutoffMs: number, limit: number): number {
    return this.db.transaction(() => {
      this.expiredTokens.run(cutoffMs, limit);
      return this.expiredSessions.run(cutoffMs, limit).changes;
    })();
  }
}

function historyJson(history: Transition[]): string {
  return JSON.stringify(history.slice(-HISTORY_LIMIT));
}
