/**
 * Outbound pushes: a batch of the replication log signed as Sydent signs it, and the mutual-TLS HTTP client
 * that POSTs it to one peer.
 *
 * Body: `{"sgAssocs": {"<local id>": <signed association>, …}}`. Each row is signed with our long-term key as
 * Sydent signs it afresh: `{medium, address, mxid, ts, not_before, not_after}` for a binding, and for a tombstone
 * (an unbind) `{medium, address, mxid: null, ts: <unbind time>, not_before: null, not_after: null}` (sydent-behaviour
 * §4.2). A binding's signature made at bind time is sent again when it is exactly that one (ed25519 is
 * deterministic), which costs a fraction of signing.
 */
import type { Agent } from 'undici';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { lazy, undici } from '../util/undici.js';

import {
  CanonicalJsonError,
  canonicalJson,
  signatureAgain,
  type SigningKeyLike,
  type Signatures,
} from '../crypto/index.js';
import type { LocalAssociationRow } from '../store/peers.js';
import type { ReplicationTls } from './tls.js';

interface WireAssociation {
  medium: string;
  address: string;
  mxid: string | null;
  ts: number | null;
  not_before: number | null;
  not_after: number | null;
}

type Signed<T> = T & { signatures: Signatures };

/** What a push's JSON text holds. */
export interface PushBody {
  sgAssocs: Record<string, Signed<WireAssociation>>;
}

export interface OutboundBatch {
  /** the push's JSON text (a PushBody) */
  body: string;
  /** the largest log id in the batch: the cursor once the peer acknowledges it */
  lastId: number;
  count: number;
  /** it carries an unbind */
  hasTombstone: boolean;
  /** the 3PIDs it carries (medium and address), to tell whether two batches touch the same one */
  threepids: ReadonlySet<string>;
}

const threepidKey = (medium: string, address: string): string => `${medium}\u0000${address}`;

/** The wire form of one log row, before signing. */
function wireAssociation(row: LocalAssociationRow): WireAssociation {
  if (row.mxid === null) {
    return { medium: row.medium, address: row.address, mxid: null, ts: row.ts, not_before: null, not_after: null };
  }
  return {
    medium: row.medium,
    address: row.address,
    mxid: row.mxid,
    ts: row.ts,
    not_before: row.notBefore,
    not_after: row.notAfter,
  };
}

const isNumberOrNull = (v: unknown): boolean => v === null || typeof v === 'number';

/** A number as canonical JSON writes one (an integer in the safe range), or null; throws as canonicalJson does. */
function canonicalNumber(n: number | null, field: string): string {
  if (n === null) return 'null';
  if (!Number.isSafeInteger(n)) {
    throw new CanonicalJsonError(`$.${field}: ${n} is not an integer in [-(2**53)+1, 2**53-1]`);
  }
  return String(n);
}

/**
 * `canonicalJson(wireAssociation(row))`, written out: the six keys in code point order and each string as
 * canonical-json.ts writes it (JSON.stringify). A push carries thousands of rows, and this spares an object and a
 * key sort per row. A row whose columns hold other types than the schema's (SQLite does not enforce them) goes
 * through canonicalJson itself.
 */
export function canonicalWire(row: LocalAssociationRow): string {
  const { medium, address, mxid } = row;
  if (
    typeof medium !== 'string' ||
    typeof address !== 'string' ||
    (mxid !== null && typeof mxid !== 'string') ||
    !isNumberOrNull(row.ts) ||
    !isNumberOrNull(row.notBefore) ||
    !isNumberOrNull(row.notAfter)
  ) {
    return canonicalJson(wireAssociation(row));
  }
  const tombstone = mxid === null;
  return (
    `{"address":${JSON.stringify(address)},"medium":${JSON.stringify(medium)},` +
    `"mxid":${tombstone ? 'null' : JSON.stringify(mxid)},` +
    `"not_after":${tombstone ? 'null' : canonicalNumber(row.notAfter, 'not_after')},` +
    `"not_before":${tombstone ? 'null' : canonicalNumber(row.notBefore, 'not_before')},` +
    `"ts":${canonicalNumber(row.ts, 'ts')}}`
  );
}

/**
 * The signature our bind stored with the row (`sgAssoc` of our global row), if any: sent again when it is still
 * exactly what signing the row now gives (signatureAgain checks), which spares a signature per row.
 */
function storedSignature(row: LocalAssociationRow, serverName: string, keyId: string): string | undefined {
  if (typeof row.sgAssoc !== 'string') return undefined;
  let stored: unknown;
  try {
    stored = JSON.parse(row.sgAssoc);
  } catch {
    return undefined;
  }
  const signatures = (stored as { signatures?: unknown } | null)?.signatures;
  if (typeof signatures !== 'object' || signatures === null || !Object.hasOwn(signatures, serverName)) return undefined;
  const ours = (signatures as Record<string, unknown>)[serverName];
  if (typeof ours !== 'object' || ours === null || !Object.hasOwn(ours, keyId)) return undefined;
  const signature = (ours as Record<string, unknown>)[keyId];
  return typeof signature === 'string' ? signature : undefined;
}

/**
 * Rows signed between two turns of the event loop. A batch of thousands takes a tenth of a second to sign; in one
 * piece it would hold up the requests being served and the push already on its way (its TLS handshake and its body
 * go out on turns of the loop), which is read ahead of (worker.ts) while the peer works.
 */
export const SIGN_SLICE = 500;

/**
 * Signs each row as `serverName` and keys them by their log id (a JSON string key, as Sydent), into the push's JSON
 * text: each association is its canonical JSON with `signatures` added, written as text rather than built as objects
 * and stringified (a push is thousands of rows, sent as soon as it is signed).
 */
export async function buildBatch(
  rows: readonly LocalAssociationRow[],
  serverName: string,
  key: SigningKeyLike,
): Promise<OutboundBatch> {
  const keyId = `ed25519:${key.version}`;
  const signedBy = `,"signatures":{${JSON.stringify(serverName)}:{${JSON.stringify(keyId)}:"`;
  const threepids = new Set<string>();
  let body = '{"sgAssocs":{';
  let lastId = 0;
  let hasTombstone = false;
  for (let i = 0; i < rows.length; i++) {
    if (i > 0 && i % SIGN_SLICE === 0) await nextTurn();
    const row = rows[i]!;
    const canonical = canonicalWire(row);
    const signature = signatureAgain(Buffer.from(canonical), key, storedSignature(row, serverName, keyId));
    if (i > 0) body += ',';
    // the canonical object without its closing brace, then the signatures (base64 needs no escaping)
    body += `"${row.id}":${canonical.slice(0, -1)}${signedBy}${signature}"}}}`;
    lastId = Math.max(lastId, row.id);
    if (row.mxid === null) hasTombstone = true;
    threepids.add(threepidKey(row.medium, row.address));
  }
  return { body: `${body}}}`, lastId, count: rows.length, hasTombstone, threepids };
}

/**
 * Whether `next` may be sent while `first` is still unanswered. The peer may then store them in either order (two
 * requests, and it knows no sequence), and that must not change what it ends up with: it does not when neither
 * carries an unbind (a tombstone removes the older bindings of its 3PID, so one stored before the binding it was
 * meant to remove would leave that binding in place) and no 3PID is in both (a rebind read between the two reads
 * puts one 3PID in each; lookups order its rows by time, but an equal time falls back to the order of arrival).
 * Bindings of different 3PIDs are stored the same in any order.
 */
export function mayOverlap(first: OutboundBatch, next: OutboundBatch): boolean {
  if (first.hasTombstone || next.hasTombstone) return false;
  const [small, large] =
    first.threepids.size <= next.threepids.size ? [first.threepids, next.threepids] : [next.threepids, first.threepids];
  for (const k of small) if (large.has(k)) return false;
  return true;
}

export interface PushAnswer {
  status: number;
  /** the answer's body, at most `MAX_ANSWER_BYTES`, as text */
  body: string;
}

/** Only the start of an answer is kept: enough for an error message. */
const MAX_ANSWER_BYTES = 64 * 1024;

interface ReplicationClientOptions {
  /** bound on DNS + TCP + TLS */
  connectTimeoutMs?: number;
  /** bound on the whole exchange */
  timeoutMs?: number;
  userAgent?: string;
}

/**
 * The HTTPS client of one peer: its own undici Agent presenting our certificate as the client certificate and
 * trusting `replication.https.cacert` (or Node's roots), with the peer's host name checked against its
 * certificate, and timeouts (Sydent had none).
 */
export class ReplicationClient {
  private readonly agent: ReturnType<typeof lazy<Agent>>;
  private readonly timeoutMs: number;
  private readonly userAgent: string;

  constructor(tls: ReplicationTls, opts: ReplicationClientOptions = {}) {
    const connectTimeoutMs = opts.connectTimeoutMs ?? 10_000;
    this.timeoutMs = opts.timeoutMs ?? 60_000;
    this.userAgent = opts.userAgent ?? 'sydent-ts';
    this.agent = lazy(
      () =>
        new (undici().Agent)({
          connect: {
            key: tls.key,
            cert: tls.cert,
            ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
            rejectUnauthorized: true,
            timeout: connectTimeoutMs,
          },
          connections: 2,
          keepAliveTimeout: 30_000,
          headersTimeout: this.timeoutMs,
          bodyTimeout: this.timeoutMs,
        }),
    );
  }

  /** POSTs the push's JSON text; resolves with any answer, throws when none came (connection, TLS, timeout). */
  async post(url: string, body: string): Promise<PushAnswer> {
    const res = await undici().request(url, {
      method: 'POST',
      dispatcher: this.agent.get(),
      headers: { 'content-type': 'application/json', 'user-agent': this.userAgent },
      body,
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body) {
      const buf = chunk as Buffer;
      if (size < MAX_ANSWER_BYTES) chunks.push(buf.subarray(0, MAX_ANSWER_BYTES - size));
      size += buf.length;
    }
    return { status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') };
  }

  async close(): Promise<void> {
    const agent = this.agent.ifMade();
    await agent?.close().catch(() => agent.destroy());
  }

  /** Drops open connections at once (shutdown after the grace period). */
  async destroy(): Promise<void> {
    await this.agent
      .ifMade()
      ?.destroy()
      .catch(() => undefined);
  }
}

/** A one-line description of a non-2xx answer: status and the peer's errcode / error when it sent JSON. */
export function describeRefusal(answer: PushAnswer): string {
  try {
    const json = JSON.parse(answer.body) as { errcode?: unknown; error?: unknown; failed_ids?: unknown };
    const parts = [
      typeof json.errcode === 'string' ? json.errcode : null,
      typeof json.error === 'string' ? json.error : null,
    ];
    if (Array.isArray(json.failed_ids)) parts.push(`failed_ids: ${json.failed_ids.slice(0, 10).join(', ')}`);
    const text = parts.filter(Boolean).join(': ');
    if (text) return `HTTP ${answer.status}: ${text}`;
  } catch {
    // not JSON
  }
  return `HTTP ${answer.status}`;
}
