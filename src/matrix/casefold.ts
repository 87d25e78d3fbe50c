import { CASEFOLD_TABLE } from './casefold-table.js';

/**
 * Full Unicode case folding, the same as Python's `str.casefold()` (which Sydent applies to email addresses):
 * `Strauß` → `strauss`, `ΣΑΣ` → `σασ`, `ς` → `σ`, `İ` → `i̇`. Unlike `toLowerCase()` it is locale-independent
 * and maps some characters to several (`ß` → `ss`, `ﬁ` → `fi`). Lone surrogates are kept as they are.
 */
export function casefold(s: string): string {
  if (ASCII.test(s)) return s.toLowerCase(); // toLowerCase of pure ASCII only touches A-Z
  const table = foldTable();
  let out = '';
  for (const ch of s) {
    const cp = ch.codePointAt(0) ?? 0;
    out += cp < 0x80 ? (cp >= 0x41 && cp <= 0x5a ? String.fromCharCode(cp + 32) : ch) : (table.get(cp) ?? ch);
  }
  return out;
}

// eslint-disable-next-line no-control-regex -- the ASCII range, NUL included, is what this test is about
const ASCII = /^[\x00-\x7f]*$/;

let table: Map<number, string> | null = null;

/** The generated table, parsed on first use of a non-ASCII string. */
function foldTable(): Map<number, string> {
  if (table) return table;
  const map = new Map<number, string>();
  for (const entry of CASEFOLD_TABLE.split(';')) {
    const [from, to] = entry.split(':');
    if (from === undefined || to === undefined) throw new Error(`casefold table: bad entry ${entry}`);
    map.set(parseInt(from, 16), String.fromCodePoint(...to.split(' ').map((h) => parseInt(h, 16))));
  }
  table = map;
  return map;
}
