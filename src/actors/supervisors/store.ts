import { closeDatabase } from '../../store/database.js';
import type { SystemDeps } from '../deps.js';
import { supervisor } from '../supervisor.js';

/**
 * The only writer of SQLite. Requests run one at a time, so a write transaction never interleaves with another;
 * reads on hot paths use prepared statements on the same connection directly. Closing it closes the database.
 */
export const storeSupervisor = supervisor('store', {
  concurrency: 1,
  open: (deps: SystemDeps) => ({ db: deps.db }),
  close: ({ db }) => closeDatabase(db),
  handlers: {},
});
