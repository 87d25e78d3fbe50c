export class CanonicalJsonError extends Error {
  override name = 'CanonicalJsonError';
}

/**
 * Orders strings by Unicode code point. Plain `<` compares UTF-16 code units,
 * which puts astral characters (surrogates, 0xD800-0xDFFF) before U+E000-U+FFFF;
 * shifting the two ranges past each other at the first difference fixes that.
 */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return fixup(x) - fixup(y);
  }
  return a.length - b.length;
}

function fixup(unit: number): number {
  if (unit >= 0xd800 && unit <= 0xdfff) return unit + 0x2000;
  if (unit >= 0xe000) return unit - 0x800;
  return unit;
}

function isPlainObject(value: object): value is Record<string, unknown> {
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/** Code units at which UTF-16 order and code point order part (surrogates and what sorts after them). */
const HIGH_UNIT = /[\ud800-\uffff]/;

/**
 * The keys in code point order. Below U+D800 UTF-16 code unit order is code point order, so the built-in sort (no
 * comparator called per pair) is used unless a key holds a higher unit.
 */
function sortedKeys(value: Record<string, unknown>): string[] {
  const keys = Object.keys(value);
  for (const k of keys) if (HIGH_UNIT.test(k)) return keys.sort(compareCodePoints);
  return keys.sort();
}

/** Where a value sits, for error messages only: built into a string when one is thrown. */
interface PathStep {
  up: PathStep | null;
  key: string | number;
}

function pathOf(step: PathStep | null): string {
  let path = '';
  for (let s = step; s !== null; s = s.up) path = (typeof s.key === 'number' ? `[${s.key}]` : `.${s.key}`) + path;
  return `$${path}`;
}

function encode(value: unknown, at: PathStep | null, ancestors: Set<object>): string {
  switch (typeof value) {
    case 'string':
      // JSON.stringify escapes exactly what the spec grammar wants escaped.
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isSafeInteger(value)) {
        throw new CanonicalJsonError(`${pathOf(at)}: ${value} is not an integer in [-(2**53)+1, 2**53-1]`);
      }
      // String(-0) is "0", which is what the spec wants for -0.
      return String(value);
    case 'object':
      break;
    default:
      throw new CanonicalJsonError(`${pathOf(at)}: ${typeof value} cannot be encoded as JSON`);
  }
  if (value === null) return 'null';
  if (ancestors.has(value)) throw new CanonicalJsonError(`${pathOf(at)}: circular reference`);
  ancestors.add(value);
  let out: string;
  if (Array.isArray(value)) {
    out = '[';
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ',';
      out += encode(value[i], { up: at, key: i }, ancestors);
    }
    out += ']';
  } else if (isPlainObject(value)) {
    const keys = sortedKeys(value);
    out = '{';
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i]!;
      if (i > 0) out += ',';
      out += `${JSON.stringify(k)}:${encode(value[k], { up: at, key: k }, ancestors)}`;
    }
    out += '}';
  } else {
    // Dates, Maps, typed arrays etc. have no single obvious JSON form; refuse
    // rather than sign something the peer will encode differently.
    throw new CanonicalJsonError(`${pathOf(at)}: ${value.constructor?.name ?? 'object'} is not plain JSON`);
  }
  ancestors.delete(value);
  return out;
}

/** Matrix canonical JSON (spec appendix "Canonical JSON"). */
export function canonicalJson(value: unknown): string {
  return encode(value, null, new Set());
}

const utf8 = new TextEncoder();

export function canonicalJsonBytes(value: unknown): Uint8Array {
  return utf8.encode(canonicalJson(value));
}
