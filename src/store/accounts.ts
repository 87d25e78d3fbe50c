/**
 * Sydent's `accounts`, `tokens` and `accepted_terms_urls` tables: v2 accounts made from OpenID tokens,
 * their access tokens, and the terms URLs each user accepted.
 */
import type Database from 'better-sqlite3';

export interface Account {
  userId: string;
  createdTs: number;
  consentVersion: string | null;
}

interface AccountRow {
  user_id: string;
  created_ts: number;
  consent_version: string | null;
}

const toAccount = (row: AccountRow): Account => ({
  userId: row.user_id,
  createdTs: row.created_ts,
  consentVersion: row.consent_version,
});

/**
 * Every authenticated request checks its token: known tokens are remembered for a moment, per database.
 * Logout and terms acceptance through this process forget them at once; a change made by another process
 * (another node) is seen within TOKEN_CACHE_MS. Unknown tokens are never cached, so junk cannot fill it.
 */
const TOKEN_CACHE_MS = 2000;
const TOKEN_CACHE_MAX = 10_000;
const tokenCaches = new WeakMap<Database.Database, Map<string, { account: Account; at: number }>>();

function tokenCache(db: Database.Database): Map<string, { account: Account; at: number }> {
  let cache = tokenCaches.get(db);
  if (!cache) tokenCaches.set(db, (cache = new Map()));
  return cache;
}

/** Reads, used directly on the request path (token checks happen on every authenticated request). */
export class AccountReads {
  private readonly byToken: Database.Statement<[string], AccountRow>;
  private readonly urls: Database.Statement<[string], { url: string }>;
  private readonly cache: Map<string, { account: Account; at: number }>;

  constructor(db: Database.Database) {
    this.cache = tokenCache(db);
    this.byToken = db.prepare(
      'SELECT a.user_id, a.created_ts, a.consent_version FROM tokens t JOIN accounts a ON a.user_id = t.user_id WHERE t.token = ?',
    );
    this.urls = db.prepare('SELECT url FROM accepted_terms_urls WHERE user_id = ?');
  }

  accountByToken(token: string): Account | undefined {
    const now = Date.now();
    const hit = this.cache.get(token);
    if (hit && now - hit.at < TOKEN_CACHE_MS) return hit.account;
    const row = this.byToken.get(token);
    if (!row) {
      this.cache.delete(token);
      return undefined;
    }
    const account = toAccount(row);
    if (this.cache.size >= TOKEN_CACHE_MAX) this.cache.clear();
    this.cache.set(token, { account, at: now });
    return account;
  }

  acceptedUrls(userId: string): string[] {
    return this.urls.all(userId).map((r) => r.url);
  }
}

/** Writes: run only inside the store actor. */
export class AccountWrites {
  private readonly insertAccount: Database.Statement<[string, number]>;
  private readonly insertToken: Database.Statement<[string, string]>;
  private readonly deleteToken: Database.Statement<[string]>;
  private readonly insertUrl: Database.Statement<[string, string]>;
  private readonly setConsent: Database.Statement<[string | null, string]>;
  private readonly reads: AccountReads;

  constructor(private readonly db: Database.Database) {
    this.insertAccount = db.prepare(
      'INSERT OR IGNORE INTO accounts (user_id, created_ts, consent_version) VALUES (?, ?, NULL)',
    );
    this.insertToken = db.prepare('INSERT INTO tokens (token, user_id) VALUES (?, ?)');
    this.deleteToken = db.prepare('DELETE FROM tokens WHERE token = ?');
    this.insertUrl = db.prepare('INSERT OR IGNORE INTO accepted_terms_urls (user_id, url) VALUES (?, ?)');
    this.setConsent = db.prepare('UPDATE accounts SET consent_version = ? WHERE user_id = ?');
    this.reads = new AccountReads(db);
  }

  /** Creates the account if it is new, and a new token for it (Sydent issues one per registration). */
  register(userId: string, token: string, nowMs: number): void {
    this.db.transaction(() => {
      this.insertAccount.run(userId, nowMs);
      this.insertToken.run(token, userId);
    })();
  }

  /** true when the token existed */
  logout(token: string): boolean {
    tokenCache(this.db).delete(token);
    return this.deleteToken.run(token).changes > 0;
  }

  /**
   * Adds to what the user accepted before (never replaces), then records consent to `masterVersion` when
   * `isComplete` says the accumulated URLs cover every document.
   */
  acceptTerms(
    userId: string,
    urls: string[],
    masterVersion: string | null,
    isComplete: (accepted: string[]) => boolean,
  ): { consented: boolean } {
    return this.db.transaction(() => {
      for (const url of urls) this.insertUrl.run(userId, url);
      const consented = isComplete(this.reads.acceptedUrls(userId));
      if (consented) {
        this.setConsent.run(masterVersion, userId);
        // The cached accounts still carry the old consent.
        tokenCache(this.db).clear();
      }
      return { consented };
    })();
  }
}
