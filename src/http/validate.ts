/**
 * Checks of request fields shared by several endpoints, with the messages clients see. Fastify schemas check
 * presence and JSON types; these check what a schema cannot say clearly.
 */
import { checkEmailAddress } from '../matrix/index.js';
import { errors, MatrixError } from './errors.js';

/** `client_secret` and `sid`: [0-9a-zA-Z.=_-], 1 to 255 characters (spec). */
const OPAQUE_ID = /^[0-9a-zA-Z.=_-]{1,255}$/;

/** Sydent's MAX_EMAIL_ADDRESS_LENGTH */
const MAX_EMAIL_LENGTH = 500;

export function clientSecret(value: string): string {
  if (!OPAQUE_ID.test(value)) throw errors.invalidParam('Invalid client_secret provided');
  return value;
}

/**
 * Our sids are decimal integers (Sydent's are too), Sydent's below 2^31 and ours (store/sessions.ts `newSid`) up to
 * 2^53; anything else cannot name a session.
 */
export function sidNumber(value: string | number): number | null {
  const text = String(value);
  if (!OPAQUE_ID.test(text)) throw errors.invalidParam('Invalid sid provided');
  return storedSid(text);
}

/** The sid a text names, or null when no session can have it. */
export function storedSid(text: string): number | null {
  if (!/^\d{1,16}$/.test(text)) return null;
  const n = Number(text);
  return n <= Number.MAX_SAFE_INTEGER ? n : null;
}

/**
 * The range of `send_attempt`: a signed 32-bit integer. The spec sets no bound, but a client that sent 2^53-1 could
 * never send a greater one, so its session could never mail again; clients count from 1.
 */
const SEND_ATTEMPT_MIN = -(2 ** 31);
const SEND_ATTEMPT_MAX = 2 ** 31 - 1;

/** Sydent accepted `3` and `"3"`; so do we, but nothing that is not a whole number in range. */
export function sendAttempt(value: unknown): number {
  const n =
    typeof value === 'number' ? value : typeof value === 'string' && /^-?\d{1,15}$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n)) {
    throw errors.invalidParam(`send_attempt should be an integer (got ${JSON.stringify(value)?.slice(0, 40)})`);
  }
  if (n < SEND_ATTEMPT_MIN || n > SEND_ATTEMPT_MAX) {
    throw errors.invalidParam(`send_attempt must be between ${SEND_ATTEMPT_MIN} and ${SEND_ATTEMPT_MAX}`);
  }
  return n;
}

/**
 * Only http(s) links: anything else would make the GET submitToken redirect an open door. Kept as the URL parser
 * writes it (`href`): a line break or NUL typed into the link is dropped or percent-encoded there, so the stored
 * link is always a valid Location header.
 */
export function nextLink(value: unknown): string | null {
  if (value === undefined || value === null || value === '') return null;
  if (typeof value !== 'string') throw errors.invalidParam('next_link must be a string');
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw errors.invalidParam('next_link must be an absolute http or https URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw errors.invalidParam('next_link must be an absolute http or https URL');
  }
  return url.href;
}

/**
 * A session's stored next_link as a redirect target: read again by the rule above, so a link stored before that rule
 * (with a line break that no Location header can carry) is normalised, and one that no longer qualifies is dropped.
 */
export function storedNextLink(value: string | null | undefined): string | null {
  try {
    return nextLink(value);
  } catch {
    return null;
  }
}

export function emailAddress(value: string): string {
  if (value.length === 0 || value.length > MAX_EMAIL_LENGTH) throw errors.invalidParam('Invalid email provided');
  const check = checkEmailAddress(value);
  if (!check.ok) throw new MatrixError(400, 'M_INVALID_EMAIL', `Invalid email address: ${check.reason}`);
  return value;
}

/**
 * A body's fields, checked as a fastify body schema of `type: 'object'` with `required` fields and `strings` typed
 * `string` is checked, with the same errors (toMatrixError in app.ts): not an object, then every missing field named
 * (in `required`'s order), then the first field that is not a string. For a route that both fastify and the fast
 * lane (fast-lane.ts) answer, which must refuse a body alike.
 */
export function bodyFields(
  body: unknown,
  required: readonly string[],
  strings: readonly string[],
): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw errors.notJson('Request body must be a JSON object');
  }
  const fields = body as Record<string, unknown>;
  let missing: string[] | undefined;
  for (const name of required) if (!Object.hasOwn(fields, name)) (missing ??= []).push(name);
  if (missing) throw errors.missingParams(missing);
  for (const name of strings) {
    if (Object.hasOwn(fields, name) && typeof fields[name] !== 'string') {
      throw errors.invalidParam(`${name} must be string`);
    }
  }
  return fields;
}
