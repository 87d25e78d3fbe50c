/**
 * The bind flow hashes with the pepper it read and signs in the invites it saw; the store records the binding only
 * if both are still so, inside its transaction. When another process changes them in between (a pepper rotation,
 * a new invite), the flow makes the binding again: the stored hash is the current pepper's, and the homeserver's
 * callback carries every invite the bind marked sent.
 */
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import type { InspectionEvent } from 'xstate';
import type { ActorSystem } from '../src/actors/system.js';
import { lookupHash } from '../src/crypto/index.js';
import { setPepper } from '../src/store/hashing.js';
import { freshConfig, startActorSystem } from './helpers/actor-system.js';
import type { Cleanups } from './helpers/cleanups.js';
import { rows } from './helpers/rows.js';

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/**
 * An actor system on a fresh database, and `meddle`, run (once) on another connection to that database at the moment
 * the store is handed the first binding to record: after the flow read what it saw, before the store's transaction.
 */
function startSystem(meddle: (other: Database.Database) => void): { system: ActorSystem; dbFile: string } {
  const { config, dbFile } = freshConfig(cleanups);
  let meddled = false;
  const inspect = (event: InspectionEvent) => {
    if (meddled || event.type !== '@xstate.event' || event.event.type !== 'bind') return;
    if ((event.actorRef as unknown as { id: string }).id !== 'store') return;
    meddled = true;
    const other = new Database(dbFile);
    try {
      meddle(other);
    } finally {
      other.close();
    }
  };
  return { system: startActorSystem(config, inspect, cleanups), dbFile };
}

const threepid = { medium: 'email', address: 'flow@example.org' };

describe('the bind flow', () => {
  it('a pepper rotated between its read and the store: made again with the new pepper', async () => {
    const { system, dbFile } = startSystem((other) => setPepper(other, 'rotat', lookupHash));
    await system.facades.sessions.bind({ threepid, mxid: '@flow:hs.example' });
    const [row] = rows<{ lookup_hash: string }>(
      dbFile,
      "SELECT lookup_hash FROM global_threepid_associations WHERE address = 'flow@example.org'",
    );
    expect(row?.lookup_hash).toBe(lookupHash(threepid.address, threepid.medium, 'rotat'));
    expect(rows(dbFile, 'SELECT id FROM local_threepid_associations')).toHaveLength(1);
    // What lookups see: the hash under the pepper they are given.
    const found = await system.facades.reads.associations.lookupHashes(
      [lookupHash(threepid.address, threepid.medium, 'rotat')],
      Date.now(),
    );
    expect([...found.values()]).toEqual(['@flow:hs.example']);
  });

  it('an invite stored between its read and the store: made again, and the callback carries every invite marked sent', async () => {
    const invite = (other: Database.Database, token: string) =>
      other
        .prepare(
          "INSERT INTO invite_tokens (medium, address, room_id, sender, token, received_ts) VALUES ('email', 'flow@example.org', '!r:hs.example', '@s:hs.example', ?, 1)",
        )
        .run(token);
    const { system, dbFile } = startSystem((other) => invite(other, 'latecomer'));
    const seeded = new Database(dbFile);
    invite(seeded, 'early');
    seeded.close();

    const association = await system.facades.sessions.bind({ threepid, mxid: '@flow:hs.example' });
    const tokens = (association.invites as { token: string }[] | undefined)?.map((i) => i.token);
    expect(tokens).toEqual(['early', 'latecomer']);
    const [callback] = rows<{ body: string }>(dbFile, 'SELECT body FROM callback_outbox');
    expect((JSON.parse(callback!.body) as { invites: { token: string }[] }).invites.map((i) => i.token)).toEqual([
      'early',
      'latecomer',
    ]);
    expect(
      rows<{ token: string; sent: number }>(
        dbFile,
        'SELECT token, sent_ts IS NOT NULL AS sent FROM invite_tokens ORDER BY id',
      ),
    ).toEqual([
      { token: 'early', sent: 1 },
      { token: 'latecomer', sent: 1 },
    ]);
  });
});
