/**
 * Query strings and form bodies, read strictly: every parameter of this API takes one value, so a name given twice
 * is refused rather than guessed at (which of two `token`s did the client mean?); percent-encoding must be valid and
 * decode to UTF-8 (Sydent: "Parameter %s and its value must be valid UTF-8"); and no value may hold a NUL, which no
 * field of this API can carry and which would otherwise reach the store and the mails.
 */
import { isUtf8 } from 'node:buffer';
import { errors, type MatrixError } from './errors.js';

type ParsedParams = { ok: true; params: Record<string, string> } | { ok: false; error: MatrixError };

/** Characters a component can hold as they are: no decoding needed. */
const PLAIN = /^[A-Za-z0-9._~!$'()*,;:@/?=-]*$/;

/** `a=1&b=2` (query string or form body, as the request sent it) as names and values, or the Matrix error to answer. */
export function parseParams(text: string): ParsedParams {
  const params = Object.create(null) as Record<string, string>;
  if (text.length === 0) return { ok: true, params };
  for (const pair of text.split('&')) {
    if (pair.length === 0) continue;
    const eq = pair.indexOf('=');
    const name = decodeComponent(eq < 0 ? pair : pair.slice(0, eq));
    const value = decodeComponent(eq < 0 ? '' : pair.slice(eq + 1));
    if (name === null || value === null) {
      return refuse('Parameters must be valid percent-encoded UTF-8');
    }
    if (name.includes('\0') || value.includes('\0')) return refuse(`Parameter ${printable(name)} must not contain NUL`);
    if (Object.hasOwn(params, name)) return refuse(`Parameter ${printable(name)} is given more than once`);
    params[name] = value;
  }
  return { ok: true, params };
}

function refuse(message: string): ParsedParams {
  return { ok: false, error: errors.invalidParam(message) };
}

/**
 * One name or value: `+` is a space, `%XX` a byte; the bytes must be UTF-8. Characters of the raw text above
 * U+007F are the bytes Node read (it decodes a request line as Latin-1), so they are judged as bytes too.
 */
function decodeComponent(raw: string): string | null {
  if (PLAIN.test(raw)) return raw;
  const bytes = Buffer.allocUnsafe(raw.length);
  let n = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c === 0x25 /* % */) {
      const hi = hexValue(raw.charCodeAt(i + 1));
      const lo = hexValue(raw.charCodeAt(i + 2));
      if (hi < 0 || lo < 0) return null;
      bytes[n++] = hi * 16 + lo;
      i += 2;
    } else if (c === 0x2b /* + */) {
      bytes[n++] = 0x20;
    } else if (c <= 0xff) {
      bytes[n++] = c;
    } else {
      return null;
    }
  }
  const decoded = bytes.subarray(0, n);
  return isUtf8(decoded) ? decoded.toString('utf8') : null;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

/** A parameter name as an error message may show it. */
function printable(name: string): string {
  return JSON.stringify(name.length > 64 ? `${name.slice(0, 64)}…` : name);
}
