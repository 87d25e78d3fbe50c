/**
 * Whether the caller of an ask (or of an HTTP request) still waits, told without an AbortSignal.
 *
 * Most of an ask's work only checks whether its caller gave up, and most asks are answered before it does: a signal
 * made for every ask, chained to the next ask's with event listeners, is work thrown away. So an ask's cancellation
 * keeps its own list of listeners (the asks it made) and makes an AbortSignal only when a handler reads `signal` to
 * pass it to I/O that takes one (an SMTP exchange, an SMS provider's request, a homeserver's).
 */

export class Cancellation {
  private why: Error | undefined;
  private controller: AbortController | undefined;
  private listeners: Set<(reason: Error) => void> | undefined;

  /** The caller stopped waiting (its deadline passed, or its own caller gave up). */
  get aborted(): boolean {
    return this.why !== undefined;
  }

  /** Why, once aborted. */
  get reason(): Error | undefined {
    return this.why;
  }

  /** Aborted with `reason` when this is: made on first read (already aborted if this already is). */
  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.why) this.controller.abort(this.why);
    }
    return this.controller.signal;
  }

  throwIfAborted(): void {
    if (this.why) throw this.why;
  }

  /** Calls `listener` when this is aborted (not if it already is: check `aborted` first); returns what detaches it. */
  onAbort(listener: (reason: Error) => void): () => void {
    (this.listeners ??= new Set()).add(listener);
    return () => this.listeners?.delete(listener);
  }

  /** The first abort counts; later ones change nothing. */
  abort(reason: Error): void {
    if (this.why) return;
    this.why = reason;
    const listeners = this.listeners;
    this.listeners = undefined;
    this.controller?.abort(reason);
    if (listeners) for (const listener of listeners) listener(reason);
  }
}

/**
 * What a handler gets with each request besides its payload: when to stop. Check `aborted` (cheap); read `signal`
 * only to hand it to I/O. Passed on as the CallOptions of the asks the handler makes, it is their caller's
 * cancellation and deadline: they are aborted when it is.
 */
export class RequestContext extends Cancellation {
  /** `deadline`: the Date.now() time by which the caller needs the answer */
  constructor(readonly deadline: number) {
    super();
  }

  /** As CallOptions (src/actors/ask.ts), the context is its own asks' caller. */
  get cancel(): Cancellation {
    return this;
  }
}
