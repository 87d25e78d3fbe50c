/**
 * A lookup's mappings (hash → mxid) as the UTF-8 text of a JSON object, built in pieces.
 *
 * Why pieces: a string past V8's large-object size (128 KiB) is allocated in pages of its own, fresh from the kernel
 * each time; the answer of a lookup of thousands of hashes would be several of them (its text, then the flattened
 * text, then its bytes). Pieces of a few tens of KiB stay in the young generation, and their bytes are joined once
 * (bench/README.md, "Code shaped by measurements"). The lookup workers (lookup-pool.ts) build theirs the same way.
 */
import type { HashRow } from './associations.js';

/** A piece's text is turned into bytes once it is this long (UTF-16 units). */
export const PIECE_CHARS = 32_768;

/** The members (`"key":"value",…`) of a JSON object, in the order added, as UTF-8 pieces. */
export class JsonMembers {
  private readonly pieces: Buffer[] = [];
  private text = '';
  private empty = true;

  add(key: string, value: string): void {
    this.text += (this.empty ? '' : ',') + JSON.stringify(key) + ':' + JSON.stringify(value);
    this.empty = false;
    if (this.text.length >= PIECE_CHARS) {
      this.pieces.push(Buffer.from(this.text));
      this.text = '';
    }
  }

  /** The members' bytes, in pieces (none when nothing was added). */
  finish(): Buffer[] {
    if (this.text !== '') this.pieces.push(Buffer.from(this.text));
    this.text = '';
    return this.pieces;
  }
}

/**
 * Adds to `out` the newest (largest ts, then id) of each hash's rows, in the order the hashes come; the rows of one
 * hash must come together, as BY_SORTED_HASHES_SQL gives them.
 */
export function addNewestMembers(rows: readonly HashRow[], out: JsonMembers): void {
  let hash: string | undefined;
  let mxid = '';
  let ts = 0;
  let id = 0;
  for (const [h, m, t, i] of rows) {
    if (h === hash) {
      if (t > ts || (t === ts && i > id)) {
        mxid = m;
        ts = t;
        id = i;
      }
      continue;
    }
    if (hash !== undefined) out.add(hash, mxid);
    hash = h;
    mxid = m;
    ts = t;
    id = i;
  }
  if (hash !== undefined) out.add(hash, mxid);
}

const OPEN = Buffer.from('{');
const COMMA = Buffer.from(',');
const CLOSE = Buffer.from('}');

/** One JSON object of several parts' members (each part's bytes, as JsonMembers.finish gives them; none when empty). */
export function objectOfParts(parts: ReadonlyArray<readonly Buffer[]>): Buffer {
  const all: Buffer[] = [OPEN];
  let first = true;
  for (const pieces of parts) {
    if (!pieces.some((piece) => piece.length > 0)) continue;
    if (!first) all.push(COMMA);
    first = false;
    all.push(...pieces);
  }
  all.push(CLOSE);
  return Buffer.concat(all);
}

/** `found` as the text of a JSON object, its keys in the map's order. */
export function objectJson(found: ReadonlyMap<string, string>): string {
  let json = '{';
  let separator = '';
  for (const [key, value] of found) {
    json += separator + JSON.stringify(key) + ':' + JSON.stringify(value);
    separator = ',';
  }
  return json + '}';
}
