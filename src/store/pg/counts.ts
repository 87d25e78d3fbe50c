/**
 * The state counts of migration 12 (sessions by machine state, Sydent's sessions without a machine row by
 * `validated`, callbacks by state), kept on PostgreSQL by the writes themselves where SQLite keeps them by triggers.
 *
 * A write notes what it changed here as it goes, and the counts are written in one statement at the end of its
 * transaction (or within its last one: a bind's append to the replication log); a write that is one statement moves
 * them in a CTE that runs after its other writes (`movedCountsCte`). Last, because a count row is locked from its
 * update until the commit: updated early, it would make every transaction touching the same state wait for the
 * previous one to commit. Rows are updated in one fixed order (table by table, key by key), so two transactions
 * never hold one count row each while waiting for the other's.
 */

interface CountTable {
  name: string;
  key: string;
  type: 'text' | 'bigint';
}

const TABLES = {
  machine: { name: 'sydent_ts_machine_counts', key: 'state', type: 'text' },
  sydent: { name: 'sydent_ts_sydent_session_counts', key: 'validated', type: 'bigint' },
  callback: { name: 'sydent_ts_callback_counts', key: 'state', type: 'text' },
} as const satisfies Record<string, CountTable>;

type Kind = keyof typeof TABLES;
const ORDER: readonly Kind[] = ['machine', 'sydent', 'callback'];

/** What a CTE list adds to a statement: its text (`name AS (…), …`), its parameters, and the name of its last CTE. */
export interface CountsCte {
  sql: string;
  values: unknown[];
  last: string;
}

/**
 * A CTE named `counted` that moves the counts of `kind` for each row of `source` (a CTE of the same statement that
 * writes the rows counted): one off `from`, one on `to` (SQL over the source's columns). It reads `source`, so it
 * runs after it, with the rows it locked; its count rows are updated in key order, as `cte` does.
 */
export function movedCountsCte(kind: 'machine' | 'callback', source: string, from: string, to: string): string {
  const t = TABLES[kind];
  return `counted AS (
    INSERT INTO ${t.name} AS c (${t.key}, n)
    SELECT k, sum(d) FROM (SELECT ${from}, -1 FROM ${source} UNION ALL SELECT ${to}, 1 FROM ${source}) AS moved (k, d)
    GROUP BY k HAVING sum(d) <> 0 ORDER BY k
    ON CONFLICT (${t.key}) DO UPDATE SET n = c.n + EXCLUDED.n
  )`;
}

export class CountDeltas {
  private readonly deltas: Record<Kind, Map<string | number, number>> = {
    machine: new Map(),
    sydent: new Map(),
    callback: new Map(),
  };

  /** A session's machine row came (+1) or went (-1) in `state`. */
  machine(state: string, delta: number): void {
    this.add('machine', state, delta);
  }

  /** A session without a machine row came or went, counted by its `validated` column as SQLite's migration does. */
  sydent(validated: number | null, delta: number): void {
    this.add('sydent', validated ? 1 : 0, delta);
  }

  callback(state: string, delta: number): void {
    this.add('callback', state, delta);
  }

  /** A row moved from one state to another. */
  moved(kind: 'machine' | 'callback', from: string, to: string): void {
    if (from === to) return;
    this.add(kind, from, -1);
    this.add(kind, to, 1);
  }

  get empty(): boolean {
    return ORDER.every((k) => this.nonZero(k).length === 0);
  }

  /**
   * The count updates as CTEs, their parameters numbered from `firstParam`; each runs after `after` (a CTE of the
   * same statement, e.g. the one taking a lock) and after the one before it. Clears what it wrote out.
   */
  cte(firstParam: number, after?: string): CountsCte | null {
    const parts: string[] = [];
    const values: unknown[] = [];
    let prev = after;
    for (const kind of ORDER) {
      const rows = this.nonZero(kind).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      if (rows.length === 0) continue;
      const t = TABLES[kind];
      const k = firstParam + values.length;
      values.push(
        rows.map(([key]) => key),
        rows.map(([, n]) => n),
      );
      const name = `count_${kind}`;
      // The join with the CTE before makes that one run (and take its locks) first.
      const before = prev ? `(SELECT count(*) FROM ${prev}) AS before_this, ` : '';
      parts.push(`${name} AS (
        INSERT INTO ${t.name} AS c (${t.key}, n)
        SELECT u.k, u.d FROM ${before}unnest($${k}::${t.type}[], $${k + 1}::bigint[]) AS u (k, d) ORDER BY u.k
        ON CONFLICT (${t.key}) DO UPDATE SET n = c.n + EXCLUDED.n
        RETURNING 1
      )`);
      prev = name;
      this.deltas[kind].clear();
    }
    return prev && parts.length ? { sql: parts.join(',\n'), values, last: prev } : null;
  }

  private add(kind: Kind, key: string | number, delta: number): void {
    const map = this.deltas[kind];
    map.set(key, (map.get(key) ?? 0) + delta);
  }

  private nonZero(kind: Kind): [string | number, number][] {
    return [...this.deltas[kind]].filter(([, n]) => n !== 0);
  }
}
