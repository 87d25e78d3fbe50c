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
  if (typeof value === 'string')
    return `the text ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
  return `${typeof value} ${String(value)}`;
}

/**
 * Checks one value read from SQLite (integers as BigInt) against its column; throws RowValueError otherwise.
 * SQLite stores whatever it is given where affinity cannot convert it; PostgreSQL does not.
 */
export function checkValue(value: unknown, column: ColumnSpec, where: string): void {
  if (isGood(value, column.family)) return;
  if (typeof value === 'string' && column.family === 'text') {
    throw new RowValueError(
      `${where}: column ${column.name} holds text with a NUL character, which PostgreSQL cannot store`,
    );
  }
  throw new RowValueError(
    `${where}: column ${column.name} holds ${describe(value)}, where PostgreSQL expects ${column.family === 'integer' ? 'an integer' : 'text'}`,
  );
}

function isGood(value: unknown, family: Family): boolean {
  if (value === null) return true;
  if (family === 'integer') return typeof value === 'bigint';
  return typeof value === 'string' && !value.includes('\0');
}

/** The index of the first of a row's values that checkValue refuses, or -1 (the hot path: no message built). */
export function firstBadValue(row: readonly unknown[], columns: readonly ColumnSpec[]): number {
  for (let i = 0; i < columns.length; i++) if (!isGood(row[i], columns[i]!.family)) return i;
  return -1;
}

// The characters PostgreSQL's COPY TO escapes in text format (copyto.c), escaped the same way, so that a row's line
// here is byte for byte the line PostgreSQL writes for the same values (migrate-db's checksums compare the two).
const COPY_SPECIAL = /[\\\b\f\n\r\t\v]/;
const COPY_SPECIAL_ALL = /[\\\b\f\n\r\t\v]/g;
const COPY_ESCAPES: Record<string, string> = {
  '\\': '\\\\',
  '\b': '\\b',
  '\f': '\\f',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
  '\v': '\\v',
};

/** One value in COPY's text format, as PostgreSQL writes it (values checked by checkValue). */
export function copyText(value: unknown): string {
  if (value === null) return '\\N';
  if (typeof value === 'string')
    return COPY_SPECIAL.test(value) ? value.replace(COPY_SPECIAL_ALL, (c) => COPY_ESCAPES[c]!) : value;
  return scalarText(value, 'utf8');
}

/**
 * The text of any other value the drivers return (SQLite: an integer, a real or a blob; pg: an int4): the digits,
 * a blob's bytes in `blobs` encoding.
 */
function scalarText(value: unknown, blobs: 'utf8' | 'hex'): string {
  if (typeof value === 'bigint' || typeof value === 'number') return String(value);
  if (Buffer.isBuffer(value)) return value.toString(blobs);
  if (typeof value === 'string') return value;
  throw new RowValueError(`not a value a database driver returns: ${typeof value}`);
}

/** The first `n` values of a row (all by default) as a line of COPY's text format. */
export function copyLine(row: readonly unknown[], n = row.length): string {
  let line = copyText(row[0]);
  for (let i = 1; i < n; i++) line += `\t${copyText(row[i])}`;
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
    // Length-prefixed: no separator inside a value can be mistaken for the end of it.
    return `T${value.length}:${value}`;
  }
  // Never equal to anything the other engine gives for a well-typed value, so a mismatch shows in the checksum.
  return `?${typeof value}:${scalarText(value, 'hex')}`;
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

  /** the row's first values, one per family (a row may carry more, e.g. its rowid, which are not part of it) */
  add(row: readonly unknown[]): void {
    let line = canonical(row[0], this.families[0]!);
    for (let i = 1; i < this.families.length; i++) line += `,${canonical(row[i], this.families[i]!)}`;
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
