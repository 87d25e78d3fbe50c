/**
 * Checking an inbound push (`{"sgAssocs": {"<originId>": <signed association>, …}}`) before anything of it is
 * stored: every association must be signed by the pushing peer (its certificate's common name) with key id
 * `ed25519:0` under the key we hold for it, and carry Sydent's six fields. One failure refuses the whole batch,
 * and every failing id is reported (Sydent's `failed_ids`).
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { SignatureError, verifySignedJson } from '../crypto/index.js';
import type { ReceivedAssociation } from '../store/peers.js';
import { normaliseAddress } from '../matrix/index.js';

/** Sydent loads every peer key as version 0. */
export const PEER_KEY_ID = 'ed25519:0';

const ORIGIN_ID = /^\d{1,15}$/;

export type CheckedPush =
  | { ok: true; associations: ReceivedAssociation[] }
  | { ok: false; failedIds: string[]; reasons: Record<string, string> };

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const isTime = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);

class InvalidAssociation extends Error {}

/** The association's fields, checked; throws InvalidAssociation. */
function readAssociation(originId: number, value: Record<string, unknown>): Omit<ReceivedAssociation, 'sgAssoc'> {
  for (const field of ['medium', 'address', 'mxid', 'ts', 'not_before', 'not_after']) {
    if (!Object.hasOwn(value, field)) throw new InvalidAssociation(`no ${field}`);
  }
  const { medium, address, mxid, ts, not_before: notBefore, not_after: notAfter } = value;
  if (typeof medium !== 'string' || medium === '') throw new InvalidAssociation('medium is not a string');
  if (typeof address !== 'string' || address === '') throw new InvalidAssociation('address is not a string');
  if (mxid !== null && (typeof mxid !== 'string' || mxid === ''))
    throw new InvalidAssociation('mxid is not a string or null');
  if (!isTime(ts)) throw new InvalidAssociation('ts is not an integer');
  const normalised = normaliseAddress(medium, address);
  if (mxid === null) {
    // a tombstone: Sydent sends null times; anything else is ignored
    return { originId, medium, address: normalised, mxid: null, ts, notBefore: null, notAfter: null };
  }
  if (!isTime(notBefore) || !isTime(notAfter)) throw new InvalidAssociation('not_before / not_after are not integers');
  return { originId, medium, address: normalised, mxid, ts, notBefore, notAfter };
}

/**
 * Checks a whole batch against the peer's key. `sgAssocs` is the request's `sgAssocs` value (an object, checked
 * by the caller).
 */
export function checkPush(sgAssocs: Record<string, unknown>, peerName: string, publicKey: Uint8Array): CheckedPush {
  const check = new PushCheck(peerName, publicKey);
  for (const entry of Object.entries(sgAssocs)) check.add(entry);
  return check.result();
}

/** Associations verified between two turns of the event loop, in `checkPushInSlices`. */
export const VERIFY_SLICE = 200;

/**
 * `checkPush`, giving the event loop a turn after every `slice` signatures: a large batch does not hold up the
 * requests that arrive while it is verified.
 */
export async function checkPushInSlices(
  sgAssocs: Record<string, unknown>,
  peerName: string,
  publicKey: Uint8Array,
  slice = VERIFY_SLICE,
): Promise<CheckedPush> {
  const check = new PushCheck(peerName, publicKey);
  const entries = Object.entries(sgAssocs);
  for (let i = 0; i < entries.length; i++) {
    if (i > 0 && i % slice === 0) await nextTurn();
    check.add(entries[i]!);
  }
  return check.result();
}

/** One pass over a batch: each association verified and read as it comes; the failures gathered. */
class PushCheck {
  private readonly associations: ReceivedAssociation[] = [];
  private readonly reasons: Record<string, string> = {};

  constructor(
    private readonly peerName: string,
    private readonly publicKey: Uint8Array,
  ) {}

  add([id, value]: [string, unknown]): void {
    try {
      if (!ORIGIN_ID.test(id)) throw new InvalidAssociation('the id is not a non-negative integer');
      if (!isRecord(value)) throw new InvalidAssociation('not an object');
      verifySignedJson(value, this.peerName, PEER_KEY_ID, this.publicKey);
      const assoc = readAssociation(Number(id), value);
      this.associations.push({ ...assoc, sgAssoc: JSON.stringify(value) });
    } catch (e) {
      if (!(e instanceof InvalidAssociation || e instanceof SignatureError)) throw e;
      this.reasons[id] = e.message;
    }
  }

  result(): CheckedPush {
    const { associations, reasons } = this;
    const failedIds = Object.keys(reasons);
    if (failedIds.length > 0) {
      // Sydent reports them in the order it processed them: by numeric id
      failedIds.sort((a, b) => (Number(a) || 0) - (Number(b) || 0));
      return { ok: false, failedIds, reasons };
    }
    associations.sort((a, b) => a.originId - b.originId);
    return { ok: true, associations };
  }
}
