/** A start-up problem the operator fixes (a port in use, another instance running): printed as one line. */
export class StartupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StartupError';
  }
}
