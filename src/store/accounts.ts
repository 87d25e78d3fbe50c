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
 * Every authenticated request checks its token: known tokens are remembered for a moment. Logout and terms
 * acceptance through this process forget them at once; a change made by another process (another node) is seen
 * within TOKEN_CACHE_MS. Unknown tokens are never cached, so junk cannot fill it. One cache serves the reads (on the
 * read connection) and the writes (on the write connection) of a store.
 */
const TOKEN_CACHE_MS = 2000;
const TOKEN_CACHE_MAX = 10_000;

export class TokenCache {
  private readonly entries = new Map<string, { account: Account; at: number }>();

  get(token: string, now: number): Account | undefined {
    const hit = this.entries.get(token);
    return hit && now - hit.at < TOKEN_CACHE_MS ? hit.account : undefined;
  }

  set(token: string, account: Account, now: number): void {
    if (this.entries.size >= TOKEN_CACHE_MAX) this.entries.clear();
    this.entries.set(token, { account, at: now });
  }

  forget(token: string): void {
    this.entries.delete(token);
  }

  clear(): void {
    this.entries.clear();
  }
}

/** Reads, on the request path (token checks happen on every authenticated request). */
export class AccountReads {
  private readonly byToken: Database.Statement<[string], AccountRow>;
  private readonly urls: Database.Statement<[string], { url: string }>;

  constructor(
    db: Database.Database,
    private readonly cache: TokenCache = new TokenCache(),
  ) {
    this.byToken = db.prepare(
      'SELECT a.user_id, a.created_ts, a.consent_version FROM tokens t JOIN accounts a ON a.user_id = t.user_id WHERE t.token = ?',
    );
    this.urls = db.prepare('SELECT url FROM accepted_terms_urls WHERE user_id = ?');
  }

  accountByToken(token: string): Account | undefined {
    const now = Date.now();
    const hit = this.cache.get(token, now);
    if (hit) return hit;
    const row = this.byToken.get(token);
    if (!row) {
      this.cache.forget(token);
      return undefined;
    }
    const account = toAccount(row);
    this.cache.set(token, account, now);
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

  constructor(
    private readonly db: Database.Database,
    private readonly cache: TokenCache = new TokenCache(),
  ) {
    this.insertAccount = db.prepare(
      'INSERT OR IGNORE INTO accounts (user_id, created_ts, consent_version) VALUES (?, ?, NULL)',
    );
    this.insertToken = db.prepare('INSERT INTO tokens (token, user_id) VALUES (?, ?)');
    this.deleteToken = db.prepare('DELETE FROM tokens WHERE token = ?');
    this.insertUrl = db.prepare('INSERT OR IGNORE INTO accepted_terms_urls (user_id, url) VALUES (?, ?)');
    this.setConsent = db.prepare('UPDATE accounts SET consent_version = ? WHERE user_id = ?');
    this.reads = new AccountReads(db, cache);
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
    this.cache.forget(token);
    return this.deleteToken.run(token).changes > 0;
  }

  /**
   * Adds to what the user accepted before (never replaces), then records consent to `masterVersion` when the
   * accumulated URLs cover every document: `documents` lists each document's URLs (one per language), any one of
   * which accepts it.
   */
  acceptTerms(
    userId: string,
    urls: string[],
    masterVersion: string | null,
    documents: string[][],
  ): { consented: boolean } {
    return this.db.transaction(() => {
      for (const url of urls) this.insertUrl.run(userId, url);
      const accepted = new Set(this.reads.acceptedUrls(userId));
      const consented = documents.every((languages) => languages.some((url) => accepted.has(url)));
      if (consented) {
        this.setConsent.run(masterVersion, userId);
        // The cached accounts still carry the old consent.
        this.cache.clear();
      }
      return { consented };
    })();
  }
}
