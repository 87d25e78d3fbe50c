/**
 * The SMS gateway behind the `sms` supervisor: one interface, one implementation per provider (`[sms] provider`).
 * A provider resolves once the gateway has accepted the message, and throws an SmsSendError otherwise.
 */
import type { Originator, SmsProviderName } from '../config/types.js';
import { redactAddress } from '../sessions/redact.js';
import { ProviderUnreachableError, type ProviderAnswer, type ProviderHttp } from './http.js';

export interface SmsMessage {
  /** the destination MSISDN: E.164 digits without `+` */
  to: string;
  body: string;
  originator: Originator;
}

export interface SmsReceipt {
  provider: SmsProviderName;
  /** the provider's id of the message (OpenMarket's ticket id, Twilio's message SID), when it gave one */
  id: string | null;
  /** the provider's request id, for support tickets */
  requestId: string | null;
}

export interface SmsProvider {
  readonly name: SmsProviderName;
  /** `signal` aborts the exchange (the request that asked for it gave up): its connection is closed */
  send(message: SmsMessage, signal?: AbortSignal): Promise<SmsReceipt>;
  /** releases the connection pool */
  close(): Promise<void>;
}

/** A send that did not happen: `status` is the provider's HTTP status, null when there was no answer. */
export class SmsSendError extends Error {
  constructor(
    message: string,
    readonly status: number | null = null,
  ) {
    super(message);
    this.name = 'SmsSendError';
  }
}

/**
 * `http.post` to a provider's API: no answer at all (refused address, DNS, connection, time limit) is an
 * SmsSendError without a status, named after `api`.
 */
export async function postToApi(
  http: ProviderHttp,
  api: string,
  url: string,
  headers: Record<string, string>,
  body: string,
  signal: AbortSignal | undefined,
): Promise<ProviderAnswer> {
  try {
    return await http.post(url, headers, body, signal);
  } catch (error) {
    if (error instanceof ProviderUnreachableError) throw new SmsSendError(`${api} API unreachable: ${error.message}`);
    throw error;
  }
}

/** A response header's value: its first when repeated, null when missing or empty. */
export function header(value: string | string[] | undefined): string | null {
  const v = Array.isArray(value) ? value[0] : value;
  return v === undefined || v === '' ? null : v;
}

/** `Basic base64(user:password)` */
export function basicAuth(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`, 'utf8').toString('base64')}`;
}

/**
 * A provider's error text without the destination number in it (Twilio's messages quote it): errors end up in
 * the session's `lastError`, which the debug endpoint shows.
 */
export function withoutNumber(text: string, msisdn: string): string {
  if (msisdn.length < 3) return text;
  return text.split(`+${msisdn}`).join(redactAddress(msisdn)).split(msisdn).join(redactAddress(msisdn));
}

/** At most `max` characters of something a provider sent, on one line. */
export function excerpt(value: unknown, max = 200): string {
  const text = typeof value === 'string' ? value : (JSON.stringify(value) ?? String(value));
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length > max ? `${line.slice(0, max)}…` : line;
}
