/**
 * The `rotate-pepper` command on PostgreSQL: the database of `db.url` migrated (as the server would) and its pepper
 * rotated (rotatePgPepper), on one connection of its own.
 */
import { lookupHash } from '../../crypto/index.js';
import { connectPg } from './connect.js';
import { rotatePgPepper } from './hashing.js';
import { migratePg } from './migrations.js';

/** Answers the associations re-hashed; PgConnectError in one line when the database cannot be reached. */
export async function rotatePostgresqlPepper(url: string | null): Promise<number> {
  if (!url) throw new Error('[db] db.engine = postgresql needs db.url (or SYDENT_DB_URL)');
  const client = await connectPg(url);
  try {
    await migratePg(client);
    return await rotatePgPepper(client, lookupHash);
  } finally {
    await client.end().catch(() => undefined);
  }
}
