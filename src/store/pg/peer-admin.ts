/**
 * The `peers` command's rows on PostgreSQL: the same changes as PeerWrites.upsert/remove and the same list as
 * PeerReads.all on SQLite (src/store/peers.ts), on one connection of its own, each change in one transaction.
 * The database is migrated first, as the SQLite command's openDatabase does.
 */
import { PEER_KEY_ALG, peerRowsOf, type PeerJoinRow, type PeerRow, type PeerUpsert } from '../peers.js';
import { connectPg } from './connect.js';
import { migratePg } from './migrations.js';
import { int8AsNumber } from './pool.js';
import { PEERS_ALL_SQL } from './reads.js';

export interface PgPeerAdmin {
  /** true when the peer is new; an existing one gets the port and key, is made active, and keeps its cursor */
  upsert(peer: PeerUpsert): Promise<boolean>;
  /** false when there was no such peer */
  remove(name: string): Promise<boolean>;
  all(): Promise<PeerRow[]>;
  close(): Promise<void>;
}

/** Connects to `url` (PgConnectError in one line when it cannot) and migrates it. */
export async function openPgPeerAdmin(url: string): Promise<PgPeerAdmin> {
  const client = await connectPg(url);
  try {
    await migratePg(client);
  } catch (error) {
    await client.end().catch(() => undefined);
    throw error;
  }
  const inTransaction = async <T>(work: () => Promise<T>): Promise<T> => {
    await client.query('BEGIN');
    try {
      const result = await work();
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
  };
  return {
    upsert: (peer) =>
      inTransaction(async () => {
        const added = await client.query(
          'INSERT INTO peers (name, port, active) VALUES ($1, $2, 1) ON CONFLICT (name) DO NOTHING',
          [peer.name, peer.port],
        );
        if (added.rowCount !== 1) {
          await client.query('UPDATE peers SET port = $1, active = 1 WHERE name = $2', [peer.port, peer.name]);
        }
        await client.query(
          `INSERT INTO peer_pubkeys (peername, alg, key) VALUES ($1, $2, $3)
           ON CONFLICT (peername, alg) DO UPDATE SET key = excluded.key`,
          [peer.name, PEER_KEY_ALG, peer.key],
        );
        return added.rowCount === 1;
      }),
    remove: (name) =>
      inTransaction(async () => {
        await client.query('DELETE FROM peer_pubkeys WHERE peername = $1', [name]);
        return ((await client.query('DELETE FROM peers WHERE name = $1', [name])).rowCount ?? 0) > 0;
      }),
    // ids and ms timestamps as numbers, as the pool reads them
    all: async () =>
      peerRowsOf(
        (await client.query<PeerJoinRow>({ text: PEERS_ALL_SQL, types: { getTypeParser: int8AsNumber } })).rows,
      ),
    close: () => client.end().catch(() => undefined),
  };
}
