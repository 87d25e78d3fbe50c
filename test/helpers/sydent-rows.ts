/**
 * Sydent playing its part in a shared sydent.db: the writes Sydent 2.6.1 makes to its session tables, from a
 * connection of its own (foreign keys off, as Python's sqlite3 has them; Sydent's token table references a table
 * that does not exist). For switching between Sydent and sydent-ts in either direction.
 *
 *   const sydent = sydentDb(t.config.db.dbFile);
 *   sydent.createSession({ sid: 4242, address: 'Mixed@Example.org', clientSecret: 's', token: 'T'.repeat(32) });
 *   sydent.validate(4242);   // what Sydent's submitToken does
 *   sydent.close();
 */
import Database from 'better-sqlite3';

export interface SydentSession {
  sid: number;
  /** 'email' by default */
  medium?: string;
  /** as the client typed it: Sydent kept it so */
  address: string;
  clientSecret: string;
  token: string;
  /** ms; now by default */
  mtime?: number;
  validated?: boolean;
  /** Sydent starts at -1 and, through a bug, never updates it */
  sendAttemptNumber?: number;
}

/** An association as Sydent's addBinding stores it: locally, then pushed into its global table. */
export interface SydentBinding {
  medium: string;
  /** casefolded for email, as Sydent stores it */
  address: string;
  mxid: string;
  ts: number;
  notAfter: number;
  /** sha256 of "<address> <medium> <pepper>" */
  lookupHash: string;
  /** our server.name: Sydent signs with the same key and name */
  originServer: string;
  /** the association signed as Sydent signs it, minus the local id it gets here */
  sgAssoc: object;
}

export interface SydentDb {
  /** getOrCreateTokenSession for a new session: the session row and its token row */
  createSession(s: SydentSession): void;
  /** submitToken with the right token: `validated = 1`, mtime unchanged */
  validate(sid: number): void;
  /** requestToken on an existing session: `mtime = now` (Sydent keeps the token and mails it again) */
  touch(sid: number, mtime: number): void;
  /** the token row's token (a token Sydent issued for the session) */
  setToken(sid: number, token: string): void;
  /** a send attempt recorded on the token row */
  setSendAttempt(sid: number, n: number): void;
  /** 3pid/bind: INSERT OR REPLACE of the local row (a new id), and the global row the local push makes of it */
  bind(b: SydentBinding): void;
  close(): void;
}

export function sydentDb(dbFile: string): SydentDb {
  const db = new Database(dbFile, { fileMustExist: true });
  db.pragma('foreign_keys = OFF');
  db.pragma('busy_timeout = 5000');
  return {
    createSession(s) {
      db.prepare(
        'INSERT INTO threepid_validation_sessions (id, medium, address, clientSecret, validated, mtime) VALUES (?, ?, ?, ?, ?, ?)',
      ).run(s.sid, s.medium ?? 'email', s.address, s.clientSecret, s.validated ? 1 : 0, s.mtime ?? Date.now());
      db.prepare('INSERT INTO threepid_token_auths (validationSession, token, sendAttemptNumber) VALUES (?, ?, ?)').run(
        s.sid,
        s.token,
        s.sendAttemptNumber ?? -1,
      );
    },
    validate(sid) {
      db.prepare('UPDATE threepid_validation_sessions SET validated = 1 WHERE id = ?').run(sid);
    },
    touch(sid, mtime) {
      db.prepare('UPDATE threepid_validation_sessions SET mtime = ? WHERE id = ?').run(mtime, sid);
    },
    setToken(sid, token) {
      db.prepare('UPDATE threepid_token_auths SET token = ? WHERE validationSession = ?').run(token, sid);
    },
    setSendAttempt(sid, n) {
      db.prepare('UPDATE threepid_token_auths SET sendAttemptNumber = ? WHERE validationSession = ?').run(n, sid);
    },
    bind(b) {
      const id = db
        .prepare(
          'INSERT OR REPLACE INTO local_threepid_associations (medium, address, lookup_hash, mxid, ts, notBefore, notAfter) VALUES (?, ?, ?, ?, ?, ?, ?)',
        )
        .run(b.medium, b.address, b.lookupHash, b.mxid, b.ts, b.ts, b.notAfter).lastInsertRowid;
      db.prepare(
        `INSERT INTO global_threepid_associations
         (medium, address, lookup_hash, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(
        b.medium,
        b.address,
        b.lookupHash,
        b.mxid,
        b.ts,
        b.ts,
        b.notAfter,
        b.originServer,
        id,
        JSON.stringify(b.sgAssoc),
      );
    },
    close() {
      db.close();
    },
  };
}
