/**
 * The homeserver callback outbox (`callback_outbox`): one row per onbind notification, written in the bind's
 * transaction, worked off by the notifier.
 */
import type Database from 'better-sqlite3';

export interface CallbackEnqueue {
  /** the homeserver's server name (the mxid's domain) */
  destination: string;
  /** e.g. `/_matrix/federation/v1/3pid/onbind` */
  path: string;
  /** the JSON body to POST */
  body: unknown;
  medium: string;
  address: string;
  now: number;
}

export class CallbackWrites {
  private readonly insert: Database.Statement<[string, string, string, string, string, number, number]>;

  constructor(db: Database.Database) {
    this.insert = db.prepare(
      `INSERT INTO callback_outbox (destination, path, body, medium, address, next_attempt_ts, created_ts)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    );
  }

  /** Records a callback, due at once. Call inside the transaction that made it necessary. */
  enqueue(c: CallbackEnqueue): number {
    return Number(
      this.insert.run(c.destination, c.path, JSON.stringify(c.body), c.medium, c.address, c.now, c.now).lastInsertRowid,
    );
  }
}
