/**
 * Every Matrix error this server answers is built here, so an errcode's status and wording are found and
 * changed in one place.
 */
export class MatrixError extends Error {
  constructor(
    readonly status: number,
    readonly errcode: string,
    message: string,
    /** extra keys some errors carry (`mxid`, `retry_after_ms`, `lookup_pepper`, `success`...) */
    readonly extra: Record<string, unknown> = {},
    /** response headers that go with the error (Retry-After) */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'MatrixError';
  }

  toJSON(): Record<string, unknown> {
    return { ...this.extra, errcode: this.errcode, error: this.message };
  }
}

export const errors = {
  unrecognized: (message = 'Unrecognized request') => new MatrixError(404, 'M_UNRECOGNIZED', message),
  methodNotAllowed: (method: string) =>
    new MatrixError(405, 'M_UNRECOGNIZED', `Method ${method} is not allowed on this endpoint`),
  notFound: (message: string) => new MatrixError(404, 'M_NOT_FOUND', message),
  notJson: (message = 'Content not JSON') => new MatrixError(400, 'M_NOT_JSON', message),
  badJson: (message = 'Malformed JSON') => new MatrixError(400, 'M_BAD_JSON', message),
  tooLarge: (message: string) => new MatrixError(413, 'M_TOO_LARGE', message),
  /** a body not declared as JSON where only JSON is taken (the internal listener) */
  unsupportedMediaType: (message: string) => new MatrixError(415, 'M_NOT_JSON', message),
  /** a Host this listener does not answer for (DNS rebinding) */
  misdirected: (message: string) => new MatrixError(421, 'M_FORBIDDEN', message),
  missingParams: (names: string[]) =>
    new MatrixError(400, 'M_MISSING_PARAMS', `Missing parameters: ${names.join(',')}`),
  invalidParam: (message: string) => new MatrixError(400, 'M_INVALID_PARAM', message),
  unauthorized: (message = 'Unauthorized') => new MatrixError(401, 'M_UNAUTHORIZED', message),
  /** Sydent answers some refusals as M_UNAUTHORIZED with 403 */
  unauthorizedStatus: (status: number, message: string) => new MatrixError(status, 'M_UNAUTHORIZED', message),
  unknownToken: (message: string) => new MatrixError(401, 'M_UNKNOWN_TOKEN', message),
  forbidden: (message: string) => new MatrixError(403, 'M_FORBIDDEN', message),
  termsNotSigned: () => new MatrixError(403, 'M_TERMS_NOT_SIGNED', 'Terms not signed'),
  limitExceeded: (message: string, retryAfterMs: number) =>
    new MatrixError(
      429,
      'M_LIMIT_EXCEEDED',
      message,
      { retry_after_ms: retryAfterMs },
      { 'Retry-After': String(Math.max(1, Math.ceil(retryAfterMs / 1000))) },
    ),
  unknown: (message = 'Internal Server Error', status = 500) => new MatrixError(status, 'M_UNKNOWN', message),
  unavailable: (message: string) => new MatrixError(503, 'M_UNKNOWN', message),
  /** a request the server could not finish because it is stopping (a restart, a deploy): another node, or this one
   * once back, answers it */
  shuttingDown: () =>
    new MatrixError(503, 'M_UNKNOWN', 'The server is shutting down; try again shortly', {}, { 'Retry-After': '5' }),
  /** the database cannot serve the request now (locked, disk full, read-only, file gone): nothing was written */
  unavailableFor: (message: string, retryAfterSeconds: number) =>
    new MatrixError(
      503,
      'M_UNKNOWN',
      message,
      {},
      { 'Retry-After': String(Math.max(1, Math.ceil(retryAfterSeconds))) },
    ),
  /** the email could not be sent (in time) */
  emailSendError: (message = 'Failed to send email') => new MatrixError(500, 'M_EMAIL_SEND_ERROR', message),
  /** the SMS could not be sent (in time): the spec's code */
  smsSendError: (message = 'Failed to send SMS') => new MatrixError(500, 'M_SEND_ERROR', message),
} as const;
