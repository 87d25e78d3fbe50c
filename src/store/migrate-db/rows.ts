/**
 * Rows as migrate-db moves them between the engines: checked against the column's type family, encoded for
 * PostgreSQL's COPY, and hashed in one canonical form whichever engine they were read from, so that a table's
 * checksum on SQLite and on PostgreSQL is equal exactly when their rows are.
 */
import { createHash, type Hash } from 'node:crypto';

/** What a column holds on both engines: SQLite's integer or text affinity, PostgreSQL's bigint/integer or text. */
export type Family = 'integer' | 'text';

export interface ColumnSpec {
  /** as PostgreSQL names it (lower case) */
  name: string;
  family: Family;
}

/** A value that cannot go into its PostgreSQL column; its message says where it is. */
export class RowValueError extends Error {
  override readonly name = 'RowValueError';
}

function describe(value: unknown): string {
  if (Buffer.isBuffer(value)) return `a blob of ${value.length} bytes`;
  if (typeof value === 'number') return `the real number ${value}`;
  if (typeof value === 'string') return `the text ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
  return `${typeof value} ${String(value)}`;
}

/**
 * Checks one value read from SQLite (integers as BigInt) against its column; throws RowValueError otherwise.
 * SQLite stores whatever it is given where affinity cannot convert it; PostgreSQL does not.
 */
export function checkValue(value: unknown, column: ColumnSpec, where: () => string): void {
  if (value === null) return;
  if (column.family === 'integer' ? typeof value === 'bigint' : typeof value === 'string') {
    if (typeof value === 'string' && value.includes('\0')) {
      throw new RowValueError(`${where()}: column ${column.name} holds text with a NUL character, which PostgreSQL cannot store`);
    }
    return;
  }
  throw new RowValueError(`${where()}: column ${column.name} holds ${describe(value)}, where PostgreSQL expects ${column.family === 'integer' ? 'an integer' : 'text'}`);
}

const COPY_SPECIAL = /[\\\n\r\t]/;
const COPY_ESCAPES: Record<string, string> = { '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** One value in COPY's text format (values checked by checkValue). */
export function copyText(value: unknown): string {
  if (value === null) return '\\N';
  if (typeof value === 'string') return COPY_SPECIAL.test(value) ? value.replace(/[\\\n\r\t]/g, (c) => COPY_ESCAPES[c]!) : value;
  return String(value);
}

/** One row as a line of COPY's text format. */
export function copyLine(row: readonly unknown[]): string {
  let line = '';
  for (let i = 0; i < row.length; i++) line += (i === 0 ? '' : '\t') + copyText(row[i]);
  return `${line}\n`;
}

/**
 * One value in the checksum's canonical form. Integers come as BigInt (SQLite with safe integers, or pg told so),
 * as a number (pg's int4) or as pg's decimal string for int8 (canonical already: no sign but '-', no leading
 * zeros); all become the same decimal digits.
 */
function canonical(value: unknown, family: Family): string {
  if (value === null || value === undefined) return 'N';
  if (family === 'integer') {
    if (typeof value === 'bigint') return `I${value}`;
    if (typeof value === 'number' && Number.isSafeInteger(value)) return `I${value}`;
    if (typeof value === 'string' && /^-?\d+$/.test(value)) return `I${value}`;
  } else if (typeof value === 'string') {
    return `T${JSON.stringify(value)}`;
  }
  // Never equal to anything the other engine gives for a well-typed value, so a mismatch shows in the checksum.
  return `?${typeof value}:${Buffer.isBuffer(value) ? value.toString('hex') : String(value)}`;
}

/**
 * The checksum of one table: sha256 over its rows in key order, each in canonical form. Both engines' rows must
 * be added in the same order (migrate-db orders by the primary key, text compared bytewise on both sides).
 */
export class TableChecksum {
  private readonly hash: Hash = createHash('sha256');
  private pending = '';
  rows = 0;

  constructor(private readonly families: readonly Family[]) {}

  add(row: readonly unknown[]): void {
    let line = '';
    for (let i = 0; i < this.families.length; i++) line += (i === 0 ? '' : ',') + canonical(row[i], this.families[i]!);
    this.pending += `${line}\n`;
    this.rows++;
    if (this.pending.length > 1 << 16) {
      this.hash.update(this.pending);
      this.pending = '';
    }
  }

  /** hex sha256; the checksum cannot be added to after this */
  digest(): string {
    this.hash.update(this.pending);
    this.pending = '';
    return this.hash.digest('hex');
  }
}
