/**
 * Python's and Jinja2's quoting, byte for byte, so links and HTML in mail match what Sydent produced.
 */

const UNRESERVED = /[A-Za-z0-9_.\-~]/;
const HEX = '0123456789ABCDEF';
const encoder = new TextEncoder();

/**
 * Python's `urllib.parse.quote(s, safe)`: UTF-8, every byte outside `A-Za-z0-9_.-~` and `safe` becomes `%XX`
 * (uppercase hex). The default `safe` is `/`, as in Python: `quote('https://a b')` is `https%3A//a%20b`.
 * Unlike `encodeURIComponent`, `!'()*` are encoded. Lone surrogates (which Python refuses to encode) become
 * U+FFFD.
 */
export function pyQuote(s: string, safe = '/'): string {
  let out = '';
  for (const byte of encoder.encode(s)) {
    const ch = String.fromCharCode(byte);
    if (byte < 0x80 && (UNRESERVED.test(ch) || safe.includes(ch))) out += ch;
    else out += `%${HEX[byte >> 4]}${HEX[byte & 15]}`;
  }
  return out;
}

/** Python's `urllib.parse.quote(s, safe='')`: also encodes `/`. */
export function pyQuoteAll(s: string): string {
  return pyQuote(s, '');
}

/** Python's `quote_plus`-like form Jinja2 uses inside query strings: nothing safe, spaces as `+`. */
export function pyQuoteForQuery(s: string): string {
  return pyQuote(s, '').replaceAll('%20', '+');
}

const PY_HTML: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#x27;' };

/** Python's `html.escape(s, quote=True)`: `& < > " '` → `&amp; &lt; &gt; &quot; &#x27;`. Sydent's `_forhtml`. */
export function pyHtmlEscape(s: string): string {
  return s.replace(/[&<>"']/g, (c) => PY_HTML[c] ?? c);
}

const MARKUPSAFE: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&#34;', "'": '&#39;' };

/** markupsafe's `escape` (Jinja2's autoescape): `& < > " '` → `&amp; &lt; &gt; &#34; &#39;`. */
export function markupEscape(s: string): string {
  return s.replace(/[&<>"']/g, (c) => MARKUPSAFE[c] ?? c);
}
