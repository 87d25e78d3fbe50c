/**
 * One error type for everything that can go wrong talking to a homeserver, so callers (register, onbind, key
 * fetches) can branch on `kind` and show `message` to a user without knowing about DNS, sockets or undici.
 */

export type FederationErrorKind = 'dns' | 'blocked' | 'connect' | 'tls' | 'timeout' | 'too_large' | 'bad_json' | 'http';

export class FederationError extends Error {
  /** the HTTP status, for kind 'http' */
  readonly status: number | undefined;
  /** the Matrix `errcode` of an error response, when it had one */
  readonly errcode: string | undefined;

  constructor(
    readonly kind: FederationErrorKind,
    message: string,
    opts: { cause?: unknown; status?: number; errcode?: string } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'FederationError';
    this.status = opts.status;
    this.errcode = opts.errcode;
  }
}

/** `Unable to contact the Matrix homeserver <name>: <what>` — the wording Sydent used, plus the reason */
export function unreachable(
  kind: FederationErrorKind,
  serverName: string,
  what: string,
  cause?: unknown,
): FederationError {
  return new FederationError(kind, `Unable to contact the Matrix homeserver ${serverName}: ${what}`, { cause });
}
