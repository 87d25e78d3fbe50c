/**
 * An inbound push, once the route has found the peer and read the body: every association checked against the peer's
 * key (receive.ts), then hashed with the pepper read now and stored whole through the store, which refuses the batch
 * if the pepper changed meanwhile; then it is hashed again with the new one.
 */
import type { CallOptions } from '../actors/ask.js';
import type { Facades } from '../actors/facade.js';
import type { KeyObject } from 'node:crypto';
import { lookupHash, verifyKeyObject } from '../crypto/index.js';
import { VerifyPool } from '../crypto/verify-pool.js';
import { BindConflictError } from '../store/associations.js';
import type { ApplyPushResult } from '../store/peers.js';
import { decodePeerKey } from './keys.js';
import { checkPush } from './receive.js';

export type PushOutcome =
  | { ok: true; result: ApplyPushResult }
  /** the batch is refused whole: these ids failed verification */
  | { ok: false; failedIds: string[]; reasons: Record<string, string> };

export interface InboundPush {
  /** the peer's name (its certificate's common name) */
  origin: string;
  /** the peer's public key as stored */
  peerKey: string;
  /** `sgAssocs` of the body: originId → signed association */
  sgAssocs: Record<string, unknown>;
}

/** How often a batch is hashed again when the pepper changed under it. */
const ATTEMPTS = 3;

export class InboundPushes {
  /** verify keys by their stored text: decoded and imported once, not per push or per association */
  private readonly keys = new Map<string, KeyObject>();

  constructor(
    private readonly facades: Pick<Facades, 'stores' | 'reads'>,
    /** checks the signatures of large pushes on worker threads; closed with `close` */
    private readonly verifier: VerifyPool = new VerifyPool(),
  ) {}

  async apply(push: InboundPush, request: CallOptions): Promise<PushOutcome> {
    const checked = await checkPush(push.sgAssocs, push.origin, this.keyOf(push.peerKey), this.verifier);
    if (!checked.ok) return checked;
    if (checked.associations.length === 0)
      return { ok: true, result: { inserted: 0, duplicates: 0, tombstones: 0, deleted: 0 } };
    for (let attempt = 1; ; attempt++) {
      const pepper = await this.facades.reads.associations.storedPepper();
      // field by field, not `{ ...a, lookupHash }`: V8 builds a new map for a property added to a spread copy
      const associations = checked.associations.map((a) => ({
        originId: a.originId,
        medium: a.medium,
        address: a.address,
        mxid: a.mxid,
        ts: a.ts,
        notBefore: a.notBefore,
        notAfter: a.notAfter,
        sgAssoc: a.sgAssoc,
        lookupHash: lookupHash(a.address, a.medium, pepper),
      }));
      try {
        const result = await this.facades.stores.applyPush(
          { originServer: push.origin, associations, pepperSeen: pepper },
          request,
        );
        return { ok: true, result };
      } catch (error) {
        if (error instanceof BindConflictError && attempt < ATTEMPTS) continue;
        throw error;
      }
    }
  }

  /** Ends the verification threads (server stop). */
  close(): Promise<void> {
    return this.verifier.close();
  }

  private keyOf(text: string): KeyObject {
    let key = this.keys.get(text);
    if (!key) {
      key = verifyKeyObject(decodePeerKey(text).bytes);
      if (this.keys.size > 1000) this.keys.clear();
      this.keys.set(text, key);
    }
    return key;
  }
}
