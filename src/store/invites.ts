/**
 * Third-party invites: Sydent's `invite_tokens` (the invite a homeserver stored for an email address) and
 * `ephemeral_public_keys` (the per-invite key pair's public half). Sydent's seconds in the timestamp columns.
 */
import type Database from 'better-sqlite3';
import type { PendingInvite } from './associations.js';

export interface NewInvite {
  medium: string;
  /** casefolded */
  address: string;
  roomId: string;
  sender: string;
  token: string;
  /** URL-safe unpadded base64, as Sydent stores it */
  ephemeralPublicKey: string;
  now: number;
}

export class InviteReads {
  private readonly senderOf: Database.Statement<[string], { sender: string }>;
  private readonly pendingStmt: Database.Statement<[string, string], PendingInvite>;

  constructor(db: Database.Database) {
    this.senderOf = db.prepare('SELECT sender FROM invite_tokens WHERE token = ? ORDER BY id LIMIT 1');
    this.pendingStmt = db.prepare(
      'SELECT id, medium, address, room_id, sender, token FROM invite_tokens WHERE medium = ? AND address = ? AND sent_ts IS NULL ORDER BY id',
    );
  }

  /** The invites of a 3PID not yet handed to a homeserver: a bind signs them into its callback. */
  pending(medium: string, address: string): PendingInvite[] {
    return this.pendingStmt.all(medium, address);
  }

  senderOfToken(token: string): string | undefined {
    return this.senderOf.get(token)?.sender;
  }
}

export class InviteWrites {
  private readonly insertToken: Database.Statement<[string, string, string, string, string, number]>;
  private readonly insertKey: Database.Statement<[string, number]>;
  private readonly deleteToken: Database.Statement<[string]>;
  private readonly deleteKey: Database.Statement<[string]>;
  private readonly countVerify: Database.Statement<[string]>;

  constructor(private readonly db: Database.Database) {
    this.insertToken = db.prepare(
      'INSERT INTO invite_tokens (medium, address, room_id, sender, token, received_ts) VALUES (?, ?, ?, ?, ?, ?)',
    );
    this.insertKey = db.prepare('INSERT INTO ephemeral_public_keys (public_key, persistence_ts) VALUES (?, ?)');
    this.deleteToken = db.prepare('DELETE FROM invite_tokens WHERE token = ?');
    this.deleteKey = db.prepare('DELETE FROM ephemeral_public_keys WHERE public_key = ?');
    this.countVerify = db.prepare(
      'UPDATE ephemeral_public_keys SET verify_count = verify_count + 1 WHERE public_key = ?',
    );
  }

  /** The invite and its key, together. */
  store(invite: NewInvite): void {
    const seconds = Math.floor(invite.now / 1000);
    this.db.transaction(() => {
      this.insertToken.run(invite.medium, invite.address, invite.roomId, invite.sender, invite.token, seconds);
      this.insertKey.run(invite.ephemeralPublicKey, seconds);
    })();
  }

  /** Undoes `store` when the invite mail could not be sent: the homeserver never got the token. */
  discard(token: string, ephemeralPublicKey: string): void {
    this.db.transaction(() => {
      this.deleteToken.run(token);
      this.deleteKey.run(ephemeralPublicKey);
    })();
  }

  /** Whether the key is one of ours; each check is counted, as Sydent does. */
  checkEphemeralKey(publicKey: string): boolean {
    return this.countVerify.run(publicKey).changes > 0;
  }
}
