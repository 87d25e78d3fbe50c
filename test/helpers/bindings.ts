/**
 * What the bind tests share: a server that mails its tokens to a loopback SMTP server, a session validated and
 * bound in one call, the checks of what a bind answers and stores, and what every lookup then finds.
 *
 *   const t = await startMailingServer();   // t.smtp, t.publicKey; t.close() closes both
 *   const res = await validateAndBind(t, t.smtp, { email: 'a@example.com', clientSecret: 's', api: 'v1', mxid });
 *   expectAssociationMadeAt(res.json, { medium: 'email', address: 'a@example.com', mxid }, now);
 */
import { expect } from 'vitest';
import { call, emailConf, type Reply } from './email.js';
import {
  HUNDRED_YEARS_MS,
  SERVER_NAME,
  apiUrl,
  associationRows,
  bulkLookup,
  lookupV1,
  lookupV2,
  serverPublicKey,
  sha256Of,
  validateEmail,
  type ValidateEmailOptions,
} from './flows.js';
import { startTestServer, type TestServer } from './server.js';
import { startSmtpServer, type SmtpTestServer } from './smtp.js';

export interface MailingServer extends TestServer {
  smtp: SmtpTestServer;
  /** the server's long-term key, fetched as a client does, to verify what it signs */
  publicKey: Uint8Array;
}

/** A test server whose mail goes to a loopback SMTP server of its own; its `close` closes both. */
export async function startMailingServer(): Promise<MailingServer> {
  const smtp = await startSmtpServer();
  let t: TestServer | undefined;
  const close = async (): Promise<void> => {
    await t?.close();
    await smtp.close();
  };
  try {
    t = await startTestServer({ conf: { email: emailConf(smtp.port) } });
    return { ...t, smtp, publicKey: await serverPublicKey(t), close };
  } catch (err) {
    // the test's afterAll gets nothing to close: what did start would outlive the file
    await close();
    throw err;
  }
}

/** A session validated through its mail, then bound to `mxid` over the same API; the bind's answer, a 200. */
export async function validateAndBind(
  t: TestServer,
  smtp: SmtpTestServer,
  o: ValidateEmailOptions & { mxid: string },
): Promise<Reply> {
  const sid = await validateEmail(t, smtp, o);
  const res = await call(apiUrl(t, o.api, '/3pid/bind'), {
    body: { sid, client_secret: o.clientSecret, mxid: o.mxid },
    token: o.token,
  });
  expect(res.status, res.text).toBe(200);
  return res;
}

export interface Binding {
  medium: string;
  /** as stored (normalised) */
  address: string;
  mxid: string;
}

/** Sydent's fields of a signed association, sorted: its answers and pushes carry these and no others. */
const ASSOCIATION_FIELDS = ['address', 'medium', 'mxid', 'not_after', 'not_before', 'signatures', 'ts'];

export function expectAssociationFields(association: object): void {
  expect(Object.keys(association).sort()).toEqual(ASSOCIATION_FIELDS);
}

/** A bind's answer: Sydent's fields only, for `binding`, made at `now` and valid for 100 years from then. */
export function expectAssociationMadeAt(answer: Record<string, unknown>, binding: Binding, now: number): void {
  expectAssociationFields(answer);
  expect(answer).toMatchObject({ ...binding, ts: now, not_before: now, not_after: now + HUNDRED_YEARS_MS });
}

/**
 * The rows a bind made at `ts` leaves: one in the local log and the global one lookups read, both valid for 100
 * years and hashed with `lookupHash`; the global row is ours and keeps the `answer` the client got, signature and all.
 */
export function expectBindingStored(
  t: TestServer,
  binding: Binding,
  o: { ts: number; lookupHash: string; answer: unknown },
): void {
  const { local, global } = associationRows(t, binding.medium, binding.address);
  const stored = {
    ...binding,
    ts: o.ts,
    notBefore: o.ts,
    notAfter: o.ts + HUNDRED_YEARS_MS,
    lookup_hash: o.lookupHash,
  };
  expect(local).toEqual([expect.objectContaining(stored)]);
  expect(global).toEqual([
    expect.objectContaining({ ...stored, originServer: SERVER_NAME, originId: local[0]!['id'] }),
  ]);
  expect(JSON.parse(global[0]!['sgAssoc'] as string)).toEqual(o.answer);
}

/** A v2 account's token and the pepper `hash_details` gave it: what a v2 lookup sends. */
export interface LookupAuth {
  token: string;
  pepper: string;
}

/** `POST /v2/lookup`'s mappings, asserting a 200 that carries nothing else. */
export async function lookupMappings(
  t: TestServer,
  auth: LookupAuth,
  algorithm: 'none' | 'sha256',
  addresses: string[],
): Promise<Record<string, string>> {
  const res = await lookupV2(t, auth.token, { addresses, algorithm, pepper: auth.pepper });
  expect(res.status, res.text).toBe(200);
  expect(Object.keys(res.json)).toEqual(['mappings']);
  return res.json['mappings'] as Record<string, string>;
}

/** The mxid each lookup finds (undefined where it finds none). */
export interface EveryLookup {
  v1: unknown;
  bulk: string | undefined;
  none: string | undefined;
  sha256: string | undefined;
}

/**
 * What v1 `lookup`, `bulk_lookup` and v2 `lookup` (none, sha256) find for one 3PID: `address` as stored (hashed),
 * `sentAs` as a client types it.
 */
export async function lookupEveryWay(
  t: TestServer,
  auth: LookupAuth,
  medium: string,
  address: string,
  sentAs = address,
): Promise<EveryLookup> {
  const hash = sha256Of(address, medium, auth.pepper);
  const bulk = (await bulkLookup(t, [[medium, sentAs]])).json['threepids'] as string[][];
  return {
    v1: (await lookupV1(t, medium, sentAs)).json['mxid'],
    bulk: bulk[0]?.[2],
    none: (await lookupMappings(t, auth, 'none', [`${sentAs} ${medium}`]))[`${sentAs} ${medium}`],
    sha256: (await lookupMappings(t, auth, 'sha256', [hash]))[hash],
  };
}

/** What `lookupEveryWay` answers when every lookup finds `mxid`. */
export const allFind = (mxid: string | undefined): EveryLookup => ({
  v1: mxid,
  bulk: mxid,
  none: mxid,
  sha256: mxid,
});
