/** A problem migrate-db stops on, its message fit to print as is (one line, or a short list). */
export class MigrateDbError extends Error {
  override readonly name = 'MigrateDbError';
}

export interface MigrateIo {
  stdout: (text: string) => void;
  /** progress and messages */
  stderr: (text: string) => void;
  /** stderr is a terminal: the progress line is redrawn in place */
  tty: boolean;
}
