/**
 * The replication worker: one peer machine per active peer, for the replication supervisor.
 *
 * - The peers are the active `peers` rows with an ed25519 key, read again on every wake-up and tick, so peers
 *   added or removed with `sydent-ts peers` (or by SQL, as with Sydent) are picked up while running.
 * - Each peer has its own actor, its own TLS agent, its own cursor and its own backoff timer: a dead or slow
 *   peer holds nothing the others need. Pushes to different peers run at the same time.
 * - WAKE (after every local bind and unbind) and a tick every 10 s (Sydent's pusher interval) wake the actors;
 *   an idle one looks at the log after its cursor and pushes what is there.
 * - Shutdown (drain) stops the timers, lets running pushes finish for a moment and stops the actors; a push cut
 *   off is simply pushed again after the restart (the cursor had not moved).
 * - The machines run on the machine host (actors/machine-host.ts). A peer's durable record is its cursor, which
 *   the push stores after the peer's 2xx; the rest (the backoff) lives in memory, in the peer's slot, by design
 *   (see machines/peer.ts), and that is where the host restores the machine from and records it to.
 */
import { fromPromise, initialTransition } from 'xstate';
import { MachineHost, MachineStoppedError, type MachineState } from '../actors/machine-host.js';

import type { SigningKeyLike } from '../crypto/index.js';
import type { Logger } from '../log.js';
import {
  PEER_MACHINE_VERSION,
  PUSH_BATCH_SIZE,
  peerMachine,
  type PeerContext,
  type PeerEvent,
  type PushInput,
  type PushResult,
} from '../machines/peer.js';
import type { PeerLease } from '../store/engine.js';
import type { ActivePeer, LocalAssociationRow, PeerRow } from '../store/peers.js';
import {
  buildBatch,
  describeRefusal,
  mayOverlap,
  ReplicationClient,
  type OutboundBatch,
  type PushAnswer,
} from './outbound.js';
import { pushUrl, type PeerUrls } from './peer-config.js';
import type { ReplicationTls } from './tls.js';
import { errorMessage } from '../util/error-message.js';

/** The store writes the worker needs, answered by the store actor. */
export interface ReplicationStorePort {
  /** the peer acknowledged everything up to `lastId` */
  markSent(name: string, lastId: number, now: number): Promise<boolean>;
  /**
   * Whether this node pushes to the peer (several nodes on one database: one at a time). Absent: always (one node).
   * `acquired`: it does from now on, from the cursor in the database.
   */
  lease?(name: string): Promise<PeerLease>;
}

type Awaitable<T> = T | Promise<T>;

/** The reads the worker needs, from the store's read facade. */
export interface ReplicationReadPort {
  active(): Awaitable<ActivePeer[]>;
  all(): Awaitable<PeerRow[]>;
  /** with `signedAs`, each row with the signed association our bind stored (see PeerReads.localAfter) */
  localAfter(afterId: number, limit: number, signedAs?: string): Awaitable<LocalAssociationRow[]>;
  /** the newest id of the replication log (0 when it is empty) */
  lastLocalId(): Awaitable<number>;
}

/** Sends one batch to a URL; the default is a ReplicationClient per peer. */
export interface PushTransport {
  /** `body`: the push's JSON text (a PushBody) */
  post(url: string, body: string): Promise<PushAnswer>;
  close(): Promise<void>;
  destroy(): Promise<void>;
}

export interface ReplicationWorkerOptions {
  reads: ReplicationReadPort;
  store: ReplicationStorePort;
  serverName: string;
  signingKey: SigningKeyLike;
  /** null: replication is off (no certificate); `disabledReason` says why */
  tls: ReplicationTls | null;
  disabledReason?: string;
  urls: Pick<PeerUrls, 'get' | 'refresh'> & Partial<Pick<PeerUrls, 'batchSize'>>;
  now: () => number;
  /** the jitter of the backoff: a number in [0, 1) */
  random?: () => number;
  log: Logger;
  /** associations per push to a peer without `[peer.NAME] push_batch_size` (default Sydent's 100) */
  batchSize?: number;
  /** the periodic look (default Sydent's 10 s) */
  tickMs?: number;
  /** how long shutdown waits for running pushes (default 2 s) */
  drainGraceMs?: number;
  /** told of every change of a peer machine's state (metrics) */
  onTransition?: (from: string, to: string) => void;
  /** makes the transport of a peer (tests); default a ReplicationClient on `tls` */
  transport?: (peer: ActivePeer) => PushTransport;
}

/** What the debug endpoint shows of a peer. */
export interface PeerView {
  name: string;
  /**
   * idle, pushing, backingOff (its actor's state); `inactive` (peers.active = 0), `noKey` (no ed25519 key),
   * `notStarted` (added since the last wake-up), or `disabled` (no certificate)
   */
  state: string;
  url: string;
  /** the last local association id the peer acknowledged */
  cursor: number;
  /**
   * what the peer has yet to receive, as log ids after its cursor (newest id − cursor: read from two numbers, whatever
   * the size of the log). A rebind replaces its address's row under a new id, so the rows left may be fewer.
   */
  backlog: number;
  failures: number;
  lastError: string | null;
  lastErrorAt: number | null;
  lastSuccessAt: number | null;
  /** while backing off: when the next attempt is due (ms) */
  nextRetryTs: number | null;
  /** associations acknowledged since start */
  pushed: number;
  /** `here`: this node pushes to the peer; `elsewhere`: another node on the database does; null: not asked yet */
  pusher: 'here' | 'elsewhere' | null;
}

export interface ReplicationView {
  enabled: boolean;
  /** why not, when not */
  reason: string | null;
  serverName: string;
  peers: PeerView[];
}

/** The rejection of the `push` actor: the machine's PushFailure. */
export class PushError extends Error {
  constructor(
    message: string,
    readonly at: number,
    readonly status: number | null,
    readonly jitter: number,
  ) {
    super(message);
    this.name = 'PushError';
  }
}

interface Slot {
  peer: ActivePeer;
  /** the peer's machine as last recorded */
  machine: MachineState<PeerContext>;
  /** a WAKE was sent and has not ended: it waits for its turn, or its push is ending */
  wakeQueued: boolean;
  /** a WAKE came while `wakeQueued` and could not be handed over: sent again when that one ends */
  wakeAgain: boolean;
  transport: PushTransport;
  timer: NodeJS.Timeout | null;
  /** the failure count the timer was set for, so one backoff sets one timer */
  timerFor: number | null;
  /** the push under way, so shutdown can wait for it */
  running: Promise<unknown> | null;
  /**
   * The batch after a full one, read and signed while the peer works on that one, and already sent when the peer may
   * store the two in either order (`mayOverlap`): the two sides work at the same time instead of taking turns. Used
   * only by the push from exactly `afterId`, which moves the cursor past it after its own answer; dropped otherwise.
   */
  ahead: Ahead | null;
  /** what the last push heard of the peer's lease */
  lease: PeerLease | null;
}

/** A batch read ahead of the cursor. */
interface Ahead {
  afterId: number;
  batch: OutboundBatch;
  /** its answer, when it was sent at once; null: not sent yet */
  answer: Promise<PushAnswer> | null;
}

const DEFAULTS = { batchSize: PUSH_BATCH_SIZE, tickMs: 10_000, drainGraceMs: 2_000 };

export class ReplicationWorker {
  private readonly opts: ReplicationWorkerOptions & typeof DEFAULTS & { random: () => number };
  private readonly slots = new Map<string, Slot>();
  private readonly machines: MachineHost<typeof peerMachine, string>;
  private tick: NodeJS.Timeout | null = null;
  private started = false;
  private draining = false;

  constructor(opts: ReplicationWorkerOptions) {
    this.opts = { ...DEFAULTS, random: Math.random, ...opts };
    const machine = peerMachine.provide({
      actors: {
        push: fromPromise<PushResult, PushInput>(({ input }) => this.trackPush(this.slots.get(input.name)!, input)),
      },
    });
    this.machines = new MachineHost<typeof peerMachine, string>({
      name: 'peer',
      machine,
      version: PEER_MACHINE_VERSION,
      store: {
        load: async (name) => {
          const slot = this.slots.get(name);
          return (
            slot && {
              state: slot.machine.value,
              context: slot.machine.context,
              machineVersion: PEER_MACHINE_VERSION,
              rowVersion: null,
            }
          );
        },
        save: async (name, write, expected) => {
          const slot = this.slots.get(name);
          if (slot) {
            slot.machine = { value: write.value, context: write.context };
            if (write.stateName === 'backingOff') this.scheduleRetry(slot, write.context);
          }
          return expected;
        },
      },
      now: this.opts.now,
      // A catch-up pushes batch after batch for as long as there are any; each push has its own time limits.
      settleTimeoutMs: Infinity,
      onTransition: (from, to) => this.opts.onTransition?.(from, to),
    });
  }

  get enabled(): boolean {
    return this.opts.tls !== null || this.opts.transport !== undefined;
  }

  /** The peers from the database, a first look at each, and the periodic tick. */
  start(): void {
    if (this.started || this.draining) return;
    this.started = true;
    if (!this.enabled) {
      // Sydent warns on every start; a server without peers has nothing to miss, so that only says so
      void Promise.resolve()
        .then(() => this.opts.reads.active())
        .then(
          (active) => active.length,
          () => 0, // the warning below is enough
        )
        .then((peers) => {
          const line = { reason: this.opts.disabledReason, peers };
          if (peers > 0) this.opts.log.warn(line, 'replication is off: no pushes to the configured peers');
          else this.opts.log.info(line, 'replication is off');
        });
      return;
    }
    this.wake();
    this.tick = setInterval(() => this.wake(), this.opts.tickMs);
    this.tick.unref();
  }

  /** There may be new log rows: every idle peer looks. */
  wake(): void {
    if (!this.started || this.draining || !this.enabled) return;
    void this.reload().then(() => {
      if (this.draining) return;
      for (const slot of this.slots.values()) this.wakePeer(slot);
    });
  }

  /**
   * A push under way takes the WAKE at once (it looks again when it ends); otherwise the WAKE waits for its turn.
   * A WAKE sent earlier may be waiting still, or its push may have read the log and be ending (too late to take an
   * event, so the rows committed since would wait for the tick): this one goes out again when that one ends.
   */
  private wakePeer(slot: Slot): void {
    const name = slot.peer.name;
    if (this.machines.interrupt(name, { type: 'WAKE' })) return;
    if (slot.wakeQueued) {
      slot.wakeAgain = true;
      return;
    }
    slot.wakeQueued = true;
    this.sendTo(name, { type: 'WAKE' }, () => {
      slot.wakeQueued = false;
      if (!slot.wakeAgain || this.draining || this.slots.get(name) !== slot) return;
      slot.wakeAgain = false;
      this.wakePeer(slot);
    });
  }

  private sendTo(name: string, event: PeerEvent, then?: () => void): void {
    this.machines
      .send(name, event)
      .catch((err: unknown) => {
        if (!(err instanceof MachineStoppedError))
          this.opts.log.error({ err, peer: name }, 'replication: peer machine failed');
      })
      .finally(() => then?.());
  }

  /** Ends the backoff of one peer (or of all): they push now. */
  async retry(name?: string): Promise<string[]> {
    if (!this.started || this.draining) return [];
    await this.reload();
    if (this.draining) return [];
    const retried: string[] = [];
    for (const [peerName, slot] of this.slots) {
      if (name !== undefined && peerName !== name) continue;
      if (slot.machine.value !== 'backingOff') continue;
      this.clearTimer(slot);
      this.sendTo(peerName, { type: 'RETRY' });
      retried.push(peerName);
    }
    return retried;
  }

  async view(): Promise<ReplicationView> {
    const peers: PeerView[] = [];
    const lastId = await this.opts.reads.lastLocalId();
    for (const row of await this.opts.reads.all()) {
      const slot = this.slots.get(row.name);
      const c: PeerContext | undefined = slot?.machine.context;
      // the shared cursor may be ahead of ours: another node on the database pushes to this peer
      const cursor = Math.max(c?.cursor ?? 0, row.lastSentVersion ?? 0);
      const state = slot
        ? this.machines.names.nameOf(slot.machine.value)
        : !this.enabled
          ? 'disabled'
          : !row.active
            ? 'inactive'
            : row.keys['ed25519'] === undefined
              ? 'noKey'
              : 'notStarted';
      peers.push({
        name: row.name,
        state,
        url: pushUrl(row.name, row.port, this.opts.urls.get(row.name)),
        cursor,
        backlog: Math.max(0, lastId - cursor),
        failures: c?.failures ?? 0,
        lastError: c?.lastError ?? null,
        lastErrorAt: c?.lastErrorAt ?? null,
        lastSuccessAt: c?.lastSuccessAt ?? row.lastPokeSucceededAt,
        nextRetryTs: c?.nextRetryTs ?? null,
        pushed: c?.pushed ?? 0,
        pusher: slot?.lease ? (slot.lease === 'elsewhere' ? 'elsewhere' : 'here') : null,
      });
    }
    return {
      enabled: this.enabled,
      reason: this.enabled ? null : (this.opts.disabledReason ?? 'replication is off'),
      serverName: this.opts.serverName,
      peers,
    };
  }

  /** Shutdown: no new pushes; running ones get `drainGraceMs`; then the actors stop and the agents close. */
  async drain(): Promise<void> {
    this.draining = true;
    if (this.tick) clearInterval(this.tick);
    this.tick = null;
    const slots = [...this.slots.values()];
    for (const slot of slots) this.clearTimer(slot);
    const running = slots.map((s) => s.running).filter((p): p is Promise<unknown> => p !== null);
    if (running.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled(running),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, this.opts.drainGraceMs);
        }),
      ]);
      clearTimeout(timer);
    }
    for (const slot of slots) this.removeSlot(slot, true);
  }

  /** Brings the actors in line with the active peers in the database. */
  private async reload(): Promise<void> {
    let peers: ActivePeer[];
    try {
      peers = await this.opts.reads.active();
    } catch (err) {
      this.opts.log.error({ err }, 'replication: could not read the peers');
      return;
    }
    // After the read, not before: `peers add --url` writes the URL, then the row, so a row seen here has its URL
    // in the file by now. Looked at before the read, a row committed meanwhile was pushed to https://NAME:port.
    this.opts.urls.refresh();
    if (this.draining) return;
    const seen = new Set<string>();
    for (const peer of peers) {
      seen.add(peer.name);
      const slot = this.slots.get(peer.name);
      if (slot)
        slot.peer = peer; // port or key changed: used from the next push
      else this.addSlot(peer);
    }
    for (const [name, slot] of this.slots) {
      if (!seen.has(name)) {
        this.opts.log.info({ peer: name }, 'replication: peer removed');
        this.removeSlot(slot, false);
      }
    }
  }

  private addSlot(peer: ActivePeer): void {
    const transport = this.opts.transport ? this.opts.transport(peer) : new ReplicationClient(this.opts.tls!);
    const [initial] = initialTransition(peerMachine, {
      name: peer.name,
      cursor: peer.lastSentVersion ?? 0,
      lastSuccessAt: peer.lastPokeSucceededAt,
    });
    const slot: Slot = {
      peer,
      machine: { value: initial.value, context: initial.context },
      wakeQueued: false,
      wakeAgain: false,
      transport,
      timer: null,
      timerFor: null,
      running: null,
      ahead: null,
      lease: null,
    };
    this.slots.set(peer.name, slot);
    this.opts.log.info({ peer: peer.name, cursor: peer.lastSentVersion ?? 0 }, 'replication: peer added');
  }

  private removeSlot(slot: Slot, shutdown: boolean): void {
    this.clearTimer(slot);
    this.machines.stop(slot.peer.name);
    this.slots.delete(slot.peer.name);
    void (shutdown ? slot.transport.destroy() : slot.transport.close());
  }

  private clearTimer(slot: Slot): void {
    if (slot.timer) clearTimeout(slot.timer);
    slot.timer = null;
    slot.timerFor = null;
  }

  private scheduleRetry(slot: Slot, c: PeerContext): void {
    if (this.draining || c.retryDelayMs === null || slot.timerFor === c.failures) return;
    this.clearTimer(slot);
    slot.timerFor = c.failures;
    slot.timer = setTimeout(() => {
      slot.timer = null;
      slot.timerFor = null;
      if (!this.draining && slot.machine.value === 'backingOff') this.sendTo(slot.peer.name, { type: 'RETRY' });
    }, c.retryDelayMs);
    slot.timer.unref();
  }

  private trackPush(slot: Slot, input: PushInput): Promise<PushResult> {
    const p = this.push(slot, input);
    slot.running = p;
    void p
      .finally(() => {
        if (slot.running === p) slot.running = null;
      })
      .catch(() => undefined);
    return p;
  }

  /**
   * The cursor to push from when this node is the peer's pusher, else null. A node that has just taken the peer over
   * starts from the shared cursor in the database (the previous pusher moved it), not from what it last saw.
   */
  private async leasedCursor(slot: Slot, cursor: number): Promise<number | null> {
    if (!this.opts.store.lease) return cursor;
    const lease = await this.opts.store.lease(slot.peer.name);
    slot.lease = lease;
    if (lease === 'elsewhere') {
      slot.ahead = null;
      return null;
    }
    if (lease === 'held') return cursor;
    slot.ahead = null;
    const row = (await this.opts.reads.active()).find((p) => p.name === slot.peer.name);
    return Math.max(cursor, row?.lastSentVersion ?? 0);
  }

  /**
   * The batch after `cursor` and its answer: the one read ahead when it starts there (its answer already on the way
   * when it was sent), else read and signed now (answer null: to send); null when the log has nothing after it.
   */
  private async takeBatch(slot: Slot, cursor: number): Promise<Omit<Ahead, 'afterId'> | null> {
    const ahead = slot.ahead;
    slot.ahead = null;
    if (ahead && ahead.afterId === cursor) return ahead;
    const rows = await this.opts.reads.localAfter(cursor, this.batchSizeOf(slot), this.opts.serverName);
    return rows.length === 0
      ? null
      : { batch: await buildBatch(rows, this.opts.serverName, this.opts.signingKey), answer: null };
  }

  /**
   * Reads and signs the batch after `current` while the peer works on it, and sends it at once when the peer may
   * store the two in either order, unless `current` has failed by then (`stillWanted`).
   */
  private async readAhead(slot: Slot, current: OutboundBatch, url: string, stillWanted: () => boolean): Promise<void> {
    const rows = await this.opts.reads.localAfter(current.lastId, this.batchSizeOf(slot), this.opts.serverName);
    if (rows.length === 0 || !stillWanted()) return;
    const batch = await buildBatch(rows, this.opts.serverName, this.opts.signingKey);
    let answer: Promise<PushAnswer> | null = null;
    if (mayOverlap(current, batch) && stillWanted() && !this.draining) {
      answer = slot.transport.post(url, batch.body);
      // heard by the push that takes this batch; unheard when it is dropped (the cursor has not moved past it)
      answer.catch(() => undefined);
    }
    slot.ahead = { afterId: current.lastId, batch, answer };
  }

  /** Associations per push to this peer: its `push_batch_size`, or Sydent's. */
  private batchSizeOf(slot: Slot): number {
    return this.opts.urls.batchSize?.(slot.peer.name) ?? this.opts.batchSize;
  }

  /**
   * The `push` actor: one batch after the cursor, then the cursor stored after the peer's 2xx. The batch after it
   * may already be on its way (`readAhead`); its answer is heard by the next push, so the cursor moves batch by batch,
   * in order, and never past a batch the peer has not acknowledged. When this one fails the one ahead is dropped,
   * whatever its answer: the next attempt reads the log again from the cursor.
   */
  private async push(slot: Slot, input: PushInput): Promise<PushResult> {
    const { now, log } = this.opts;
    const batchSize = this.batchSizeOf(slot);
    let failed = false;
    const fail = (message: string, status: number | null = null) => {
      failed = true;
      slot.ahead = null;
      return new PushError(message, now(), status, this.opts.random());
    };
    let answer: PushAnswer;
    let lastId: number;
    let count: number;
    const peer = slot.peer;
    const url = pushUrl(peer.name, peer.port, this.opts.urls.get(peer.name));
    try {
      const cursor = await this.leasedCursor(slot, input.cursor);
      // Another node pushes to this peer: nothing to do here until it stops (the tick and every wake-up ask again).
      if (cursor === null) return { sent: 0, lastId: input.cursor, full: false, at: now() };
      const taken = await this.takeBatch(slot, cursor);
      if (!taken) return { sent: 0, lastId: cursor, full: false, at: now() };
      const { batch } = taken;
      lastId = batch.lastId;
      count = batch.count;
      const answered = taken.answer ?? slot.transport.post(url, batch.body);
      // A full batch is likely followed by another: read and sign it while this one is on its way. Rows replaced in
      // the meantime (a rebind or an unbind gives the 3PID a new id) are harmless: their newer row follows.
      const readingAhead =
        count >= batchSize ? this.readAhead(slot, batch, url, () => !failed).catch(() => undefined) : undefined;
      answer = await answered;
      // refused: the batch ahead is not sent now (and is dropped below if it already was)
      if (!isSuccess(answer)) failed = true;
      await readingAhead;
    } catch (err) {
      const message = err instanceof Error ? describeError(err) : String(err);
      log.warn({ peer: peer.name, url, err: message }, 'replication: push failed; backing off');
      throw fail(message);
    }
    if (!isSuccess(answer)) {
      const message = describeRefusal(answer);
      log.warn(
        { peer: peer.name, url, status: answer.status, error: message },
        'replication: peer refused a push; backing off',
      );
      throw fail(message, answer.status);
    }
    try {
      await this.opts.store.markSent(peer.name, lastId, now());
    } catch (err) {
      // The peer has the batch; it gets it again after the backoff and ignores what it already has.
      throw fail(`could not store the cursor: ${errorMessage(err)}`);
    }
    log.debug({ peer: peer.name, count, lastId }, 'replication: batch acknowledged');
    return { sent: count, lastId, full: count >= batchSize, at: now() };
  }
}

const isSuccess = (answer: PushAnswer): boolean => answer.status >= 200 && answer.status < 300;

/** undici's errors hide the socket's reason in `cause`. */
function describeError(err: Error): string {
  const cause = (err as { cause?: unknown }).cause;
  const code = (err as { code?: unknown }).code;
  const parts = [err.message];
  if (cause instanceof Error && cause.message && cause.message !== err.message) parts.push(cause.message);
  else if (typeof code === 'string' && !err.message.includes(code)) parts.push(code);
  return parts.join(': ');
}
