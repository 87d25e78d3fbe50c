/**
 * What each index of `global_threepid_associations` costs a replicated association: 100,000 rows (the catch-up's
 * count) inserted in transactions of 5,000 (its batch) into a new database with sydent-ts's schema, then the same
 * with Sydent's index on `lookup_hash` alone put back (migration 15 drops it), alternating, on a quiet machine. Rows
 * as the catch-up's: an address, a 43-character hash, an mxid and a 450-byte signed association each. Prints µs per
 * row spent in the inserts and in the commits. Not part of `npm run bench` (which measures HTTP); run on its own:
 *
 *   node --import tsx bench/global-inserts.ts [--rounds 3]
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { closeDatabase, openDatabase } from '../src/store/database.js';

const ROWS = 100_000;
const BATCH = 5_000;

type Row = [string, string, string, string, number, number, number, string, number, string];

function rows(): Row[] {
  const out: Row[] = [];
  const signed = 'x'.repeat(450);
  for (let i = 0; i < ROWS; i++) {
    const address = `user${randomBytes(6).toString('hex')}@example${i % 100}.org`;
    const hash = randomBytes(32).toString('base64url');
    const ts = 1_700_000_000_000 + i;
    out.push(['email', address, hash, `@u${i}:hs.example`, ts, ts, ts + 1e11, 'a.example', i + 1, signed]);
  }
  return out;
}

function run(dir: string, data: Row[], withSydentsIndex: boolean): { insertUs: number; commitUs: number } {
  const file = path.join(dir, `global-${withSydentsIndex ? 'sydent' : 'ours'}.db`);
  for (const suffix of ['', '-wal', '-shm']) fs.rmSync(file + suffix, { force: true });
  const db = openDatabase(file);
  try {
    // checkpoints run on a thread of their own in the server: here they would land in the timed commits
    db.pragma('wal_autocheckpoint = 0');
    if (withSydentsIndex)
      db.exec('CREATE INDEX global_threepid_lookup_hash ON global_threepid_associations(lookup_hash)');
    const insert = db.prepare(
      `INSERT OR IGNORE INTO global_threepid_associations
       (medium, address, lookup_hash, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    const begin = db.prepare('BEGIN');
    const commit = db.prepare('COMMIT');
    let insertMs = 0;
    let commitMs = 0;
    for (let start = 0; start < data.length; start += BATCH) {
      const t0 = performance.now();
      begin.run();
      for (let i = start; i < start + BATCH; i++) insert.run(...data[i]!);
      const t1 = performance.now();
      commit.run();
      insertMs += t1 - t0;
      commitMs += performance.now() - t1;
    }
    return { insertUs: (insertMs * 1000) / data.length, commitUs: (commitMs * 1000) / data.length };
  } finally {
    closeDatabase(db);
  }
}

function main(): void {
  const i = process.argv.indexOf('--rounds');
  const rounds = i >= 0 ? Number(process.argv[i + 1]) : 3;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sydent-bench-inserts-'));
  try {
    const data = rows();
    for (let round = 1; round <= rounds; round++) {
      for (const withSydentsIndex of [true, false]) {
        const { insertUs, commitUs } = run(dir, data, withSydentsIndex);
        const what = withSydentsIndex ? "with Sydent's lookup_hash index" : 'sydent-ts schema             ';
        process.stdout.write(
          `round ${round} ${what}: insert ${insertUs.toFixed(1)} µs/row, commit ${commitUs.toFixed(1)} µs/row\n`,
        );
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main();
