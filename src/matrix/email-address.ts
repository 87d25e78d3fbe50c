/**
 * A strict check that a string is one bare email address: an RFC 5322 addr-spec, with the UTF-8 extension of
 * RFC 6532 (non-ASCII allowed in the local part and the domain).
 *
 *   addr-spec     = local-part "@" domain
 *   local-part    = dot-atom / quoted-string
 *   domain        = dot-atom / domain-literal
 *   dot-atom      = 1*atext *("." 1*atext)
 *   atext         = ALPHA / DIGIT / "!#$%&'*+-/=?^_`{|}~" / UTF8-non-ascii
 *   quoted-string = DQUOTE *(qtext / quoted-pair / SP / HTAB) DQUOTE
 *   qtext         = %d33 / %d35-91 / %d93-126 / UTF8-non-ascii
 *   quoted-pair   = "\" (VCHAR / SP / HTAB)
 *   domain-literal= "[" *dtext "]"      dtext = %d33-90 / %d94-126 / UTF8-non-ascii
 *
 * The obsolete syntax (comments, folding white space, obs-local-part) is refused. Stricter than RFC 5322:
 * a comma and angle brackets are refused everywhere, even quoted (Sydent refused them, and mail software splits
 * address lists on commas and takes `<…>` for a display name's address), and so is any control character or any
 * Unicode white space other than a quoted space or tab.
 * Lengths (RFC 5321): local part at most 64 octets, the whole address at most 254 octets, in UTF-8.
 *
 * Sydent used `email.utils.parseaddr(addr)[1] == addr`, which depends on the Python version and lets through
 * `foo` and `a b@c`; this is the explicit check that replaces it (sydent-behaviour.md §12 item 22).
 */
export type EmailAddressCheck = { ok: true } | { ok: false; reason: string };

export const MAX_LOCAL_PART_OCTETS = 64;
export const MAX_ADDRESS_OCTETS = 254;

const ATEXT = "A-Za-z0-9!#$%&'*+\\-/=?^_`{|}~\\u0080-\\u{10FFFF}";
const DOT_ATOM = new RegExp(`^[${ATEXT}]+(?:\\.[${ATEXT}]+)*$`, 'u');
// inside the quotes: qtext, quoted pairs, space and tab (the comma is excluded on purpose)
const QUOTED_STRING = /^"(?:[\x21\x23-\x2b\x2d-\x5b\x5d-\x7e\u0080-\u{10FFFF} \t]|\\[\x21-\x7e \t])*"$/u;
const DOMAIN_LITERAL = /^\[[\x21-\x2b\x2d-\x5a\x5e-\x7e\u0080-\u{10FFFF}]*\]$/u;

// C0 (but the tab), DEL, C1 controls, and the Unicode line and paragraph separators
// eslint-disable-next-line no-control-regex -- matching control characters is this regex's job
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]/u;
// white space other than the space and tab, which are only allowed inside quotes
const OTHER_WHITESPACE = /(?![ \t])\p{White_Space}/u;
const LONE_SURROGATE = /\p{Surrogate}/u;

const utf8Length = (s: string): number => Buffer.byteLength(s, 'utf8');

export function checkEmailAddress(s: string): EmailAddressCheck {
  const fail = (reason: string): EmailAddressCheck => ({ ok: false, reason });

  if (s.length === 0) return fail('the address is empty');
  if (/[\r\n]/.test(s)) return fail('the address contains a line break');
  if (CONTROL.test(s)) return fail('the address contains a control character');
  if (LONE_SURROGATE.test(s)) return fail('the address is not valid Unicode');
  if (OTHER_WHITESPACE.test(s)) return fail('the address contains white space');
  if (s.includes('<') || s.includes('>'))
    return fail('angle brackets (a display name) are not allowed: give the bare address');
  if (s.includes(',')) return fail('the address contains a comma: give one address');
  if (utf8Length(s) > MAX_ADDRESS_OCTETS) return fail(`the address is longer than ${MAX_ADDRESS_OCTETS} octets`);

  const split = splitAtSign(s);
  if (typeof split === 'string') return fail(split);
  const { local, domain } = split;

  if (local === '') return fail('the local part (before the @) is empty');
  if (domain === '') return fail('the domain (after the @) is empty');

  if (local.startsWith('"')) {
    if (!QUOTED_STRING.test(local)) return fail('the quoted local part is malformed');
  } else {
    const problem = dotAtomProblem(local, 'local part');
    if (problem) return fail(problem);
  }
  if (utf8Length(local) > MAX_LOCAL_PART_OCTETS) {
    return fail(`the local part is longer than ${MAX_LOCAL_PART_OCTETS} octets`);
  }

  if (domain.startsWith('[')) {
    if (!DOMAIN_LITERAL.test(domain)) return fail('the domain literal is malformed');
  } else {
    const problem = dotAtomProblem(domain, 'domain');
    if (problem) return fail(problem);
  }
  return { ok: true };
}

/** Finds the one unquoted `@`: the local part may be a quoted string, which can contain `@`. */
function splitAtSign(s: string): { local: string; domain: string } | string {
  let i = 0;
  if (s.startsWith('"')) {
    // skip to the closing quote, over quoted pairs
    i = 1;
    while (i < s.length && s[i] !== '"') i += s[i] === '\\' ? 2 : 1;
    if (i >= s.length) return 'the quoted local part is not closed';
    i++;
    if (s[i] !== '@') return s.includes('@', i) ? 'text between the quoted local part and the @' : 'there is no @';
  }
  const at = s.indexOf('@', i);
  if (at === -1) return 'there is no @';
  const domain = s.slice(at + 1);
  if (domain.includes('@')) return 'there is more than one @';
  return { local: s.slice(0, at), domain };
}

function dotAtomProblem(part: string, what: string): string | null {
  if (DOT_ATOM.test(part)) return null;
  if (part.startsWith('.')) return `the ${what} starts with a dot`;
  if (part.endsWith('.')) return `the ${what} ends with a dot`;
  if (part.includes('..')) return `the ${what} contains two dots in a row`;
  if (/[ \t]/.test(part)) return `the ${what} contains white space (only allowed in a quoted local part)`;
  if (part.includes('"')) return `the ${what} contains a stray double quote`;
  const bad = [...part].find((c) => !new RegExp(`[${ATEXT}.]`, 'u').test(c));
  return `the ${what} contains a character that is not allowed: ${JSON.stringify(bad ?? '')}`;
}
