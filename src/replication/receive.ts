/**
 * Checking an inbound push (`{"sgAssocs": {"<originId>": <signed association>, …}}`) before anything of it is
 * stored: every association must be signed by the pushing peer (its certificate's common name) with key id
 * `ed25519:0` under the key we hold for it, and carry Sydent's six fields. One failure refuses the whole batch,
 * and every failing id is reported (Sydent's `failed_ids`); a bad signature is the reason given before bad fields.
 */
import type { KeyObject } from 'node:crypto';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { CanonicalJsonError, SignatureError, signedPayload, verifyPayload } from '../crypto/index.js';
import type { PayloadToVerify } from '../crypto/verify-pool.js';
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

/** The association `value` holds, checked (InvalidAssociation otherwise); `payload` is its signed part, for `sgAssoc`. */
function readAssociation(originId: number, value: Record<string, unknown>, payload: string): ReceivedAssociation {
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
    return {
      originId,
      medium,
      address: normalised,
      mxid: null,
      ts,
      notBefore: null,
      notAfter: null,
      sgAssoc: storedForm(payload, value),
    };
  }
  if (!isTime(notBefore) || !isTime(notAfter)) throw new InvalidAssociation('not_before / not_after are not integers');
  return { originId, medium, address: normalised, mxid, ts, notBefore, notAfter, sgAssoc: storedForm(payload, value) };
}

/** Verifies many payloads under one key: the worker pool, for pushes large enough to be worth sending there. */
export interface PushVerifier {
  verifyAll(key: KeyObject, items: readonly PayloadToVerify[]): Promise<number[]>;
}

/** Associations read (and their payloads built) between two turns of the event loop. */
export const VERIFY_SLICE = 200;

/** Pushes smaller than this are verified on the event loop: a message to the pool would cost more than it saves. */
export const POOL_MIN_ASSOCIATIONS = 64;

/**
 * Checks a whole batch against the peer's key. `sgAssocs` is the request's `sgAssocs` value (an object, checked by
 * the caller). Each association is read and its signed payload built on the event loop, which gets a turn every
 * `VERIFY_SLICE` of them; the signatures are then checked by `verifier` when there is one and the batch has at
 * least `POOL_MIN_ASSOCIATIONS`, else here.
 */
export async function checkPush(
  sgAssocs: Record<string, unknown>,
  peerName: string,
  key: KeyObject,
  verifier?: PushVerifier,
): Promise<CheckedPush> {
  const check = new PushCheck(peerName);
  const entries = Object.entries(sgAssocs);
  for (let i = 0; i < entries.length; i++) {
    if (i > 0 && i % VERIFY_SLICE === 0) await nextTurn();
    check.add(entries[i]!);
  }
  const items = check.toVerify();
  let bad: number[];
  if (verifier && items.length >= POOL_MIN_ASSOCIATIONS) {
    bad = await verifier.verifyAll(key, items);
  } else {
    bad = [];
    for (let i = 0; i < items.length; i++) {
      if (i > 0 && i % VERIFY_SLICE === 0) await nextTurn();
      if (!verifyPayload(key, items[i]!.payload, items[i]!.signature)) bad.push(i);
    }
  }
  return check.result(bad);
}

/** A row whose signature is still to be checked. */
interface Candidate {
  id: string;
  /** what the signature covers, and its signature */
  signed: PayloadToVerify;
  /** the association, or why its fields are refused (reported only if the signature verifies) */
  read: ReceivedAssociation | InvalidAssociation;
}

/** One pass over a batch: each association read and its payload built as it comes; the failures gathered. */
class PushCheck {
  private readonly candidates: Candidate[] = [];
  private readonly reasons: Record<string, string> = {};

  constructor(private readonly peerName: string) {}

  add([id, value]: [string, unknown]): void {
    try {
      if (!ORIGIN_ID.test(id)) throw new InvalidAssociation('the id is not a non-negative integer');
      if (!isRecord(value)) throw new InvalidAssociation('not an object');
      const { payload, signature } = signedPayload(value, this.peerName, PEER_KEY_ID);
      let read: Candidate['read'];
      try {
        read = readAssociation(Number(id), value, payload);
      } catch (e) {
        if (!(e instanceof InvalidAssociation)) throw e;
        read = e;
      }
      this.candidates.push({ id, signed: { payload: Buffer.from(payload, 'utf8'), signature }, read });
    } catch (e) {
      if (!(e instanceof InvalidAssociation || e instanceof SignatureError || e instanceof CanonicalJsonError)) throw e;
      this.reasons[id] = e.message;
    }
  }

  /** The payloads to check, in the order `result` expects their failures. */
  toVerify(): PayloadToVerify[] {
    return this.candidates.map((c) => c.signed);
  }

  /** `bad`: the indices (into `toVerify()`) whose signature does not verify. */
  result(bad: readonly number[]): CheckedPush {
    const { reasons } = this;
    for (const i of bad) {
      reasons[this.candidates[i]!.id] = `signature does not verify (${PEER_KEY_ID} from ${this.peerName})`;
    }
    const associations: ReceivedAssociation[] = [];
    for (const c of this.candidates) {
      if (Object.hasOwn(reasons, c.id)) continue;
      if (c.read instanceof InvalidAssociation) reasons[c.id] = c.read.message;
      else associations.push(c.read);
    }
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

/**
 * The association as stored in `sgAssoc`: its canonical JSON (already built for the signature check) with the
 * signatures and anything unsigned added back. The same JSON value as received, keys in another order.
 */
function storedForm(payload: string, value: Record<string, unknown>): string {
  const extra: string[] = [];
  for (const field of ['signatures', 'unsigned']) {
    if (Object.hasOwn(value, field)) extra.push(`${JSON.stringify(field)}:${JSON.stringify(value[field])}`);
  }
  if (extra.length === 0) return payload;
  return payload === '{}' ? `{${extra.join(',')}}` : `${payload.slice(0, -1)},${extra.join(',')}}`;
}
