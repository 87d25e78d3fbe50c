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

function encode(value: unknown, path: string, ancestors: Set<object>): string {
  switch (typeof value) {
    case 'string':
      // JSON.stringify escapes exactly what the spec grammar wants escaped.
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isSafeInteger(value)) {
        throw new CanonicalJsonError(`${path}: ${value} is not an integer in [-(2**53)+1, 2**53-1]`);
      }
      // String(-0) is "0", which is what the spec wants for -0.
      return String(value);
    case 'object':
      break;
    default:
      throw new CanonicalJsonError(`${path}: ${typeof value} cannot be encoded as JSON`);
  }
  if (value === null) return 'null';
  if (ancestors.has(value)) throw new CanonicalJsonError(`${path}: circular reference`);
  ancestors.add(value);
  let out: string;
  if (Array.isArray(value)) {
    const parts: string[] = [];
    for (let i = 0; i < value.length; i++) {
      parts.push(encode(value[i], `${path}[${i}]`, ancestors));
    }
    out = `[${parts.join(',')}]`;
  } else if (isPlainObject(value)) {
    const keys = Object.keys(value).sort(compareCodePoints);
    const parts = keys.map((k) => `${JSON.stringify(k)}:${encode(value[k], `${path}.${k}`, ancestors)}`);
    out = `{${parts.join(',')}}`;
  } else {
    // Dates, Maps, typed arrays etc. have no single obvious JSON form; refuse
    // rather than sign something the peer will encode differently.
    throw new CanonicalJsonError(`${path}: ${value.constructor?.name ?? 'object'} is not plain JSON`);
  }
  ancestors.delete(value);
  return out;
}

/** Matrix canonical JSON (spec appendix "Canonical JSON"). */
export function canonicalJson(value: unknown): string {
  return encode(value, '$', new Set());
}

export function canonicalJsonBytes(value: unknown): Uint8Array {
  return new TextEncoder().encode(canonicalJson(value));
}
