/**
 * Checks of request fields shared by several endpoints, with the messages clients see. Fastify schemas check
 * presence and JSON types; these check what a schema cannot say clearly.
 */
import { checkEmailAddress } from '../util/email-address.js';
import { errors, MatrixError } from './errors.js';

/** `client_secret` and `sid`: [0-9a-zA-Z.=_-], 1 to 255 characters (spec). */
const OPAQUE_ID = /^[0-9a-zA-Z.=_-]{1,255}$/;

/** Sydent's MAX_EMAIL_ADDRESS_LENGTH */
export const MAX_EMAIL_LENGTH = 500;

export function clientSecret(value: string): string {
  if (!OPAQUE_ID.test(value)) throw errors.invalidParam('Invalid client_secret provided');
  return value;
}

/** Our sids are decimal integers (Sydent's are too); anything else cannot name a session. */
export function sidNumber(value: string | number): number | null {
  const text = String(value);
  if (!OPAQUE_ID.test(text)) throw errors.invalidParam('Invalid sid provided');
  if (!/^\d{1,10}$/.test(text)) return null;
  const n = Number(text);
  return n <= 2 ** 31 ? n : null;
}

/** Sydent accepted `3` and `"3"`; so do we, but nothing that is not a whole number. */
export function sendAttempt(value: unknown): number {
  if (typeof value === 'number' && Number.isSafeInteger(value)) return value;
  if (typeof value === 'string' && /^-?\d{1,15}$/.test(value)) return Number(value);
  throw errors.invalidParam(`send_attempt should be an integer (got ${JSON.stringify(value)})`);
}

/** Only http(s) links: anything else would make the GET submitToken redirect an open door. */
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
  return value;
}

export function emailAddress(value: string): string {
  if (value.length === 0 || value.length > MAX_EMAIL_LENGTH) throw errors.invalidParam('Invalid email provided');
  const check = checkEmailAddress(value);
  if (!check.ok) throw new MatrixError(400, 'M_INVALID_EMAIL', `Invalid email address: ${check.reason}`);
  return value;
}
