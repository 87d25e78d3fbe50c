// Throwaway (not committed): the shape of the sweep and the debug counts on 1,000,000 sessions.
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { prepareSessionsDb } from './lib/sessions-db.js';
import { openDatabase, closeDatabase } from '../src/store/database.js';
import { SessionReads, SessionWrites } from '../src/store/sessions.js';

const file = path.join('/tmp/c1-micro', `s-${process.pid}.db`);
const info = await prepareSessionsDb(file, { count: 1_000_000 });
console.log('built', info.count, 'in', info.buildS, 's');
const db = openDatabase(file);
const time = (label: string, f: () => unknown, n = 5) => {
  const ms: number[] = [];
  let r: unknown;
  for (let i = 0; i < n; i++) { const t = performance.now(); r = f(); ms.push(performance.now() - t); }
  ms.sort((a, b) => a - b);
  console.log(label, 'min', ms[0]!.toFixed(3), 'ms, median', ms[Math.floor(n / 2)]!.toFixed(3), 'ms', JSON.stringify(r)?.slice(0, 120));
};
const oldCounts = db.prepare('SELECT state, count(*) AS n FROM session_machines GROUP BY state');
const oldLegacy = db.prepare(`SELECT s.validated, count(*) AS n FROM threepid_validation_sessions s WHERE NOT EXISTS (SELECT 1 FROM session_machines m WHERE m.sid = s.id) GROUP BY s.validated`);
time('old debug counts (machines by state + Sydent-only)', () => [oldCounts.all(), oldLegacy.all()], 3);
const reads = new SessionReads(db);
time('new debug counts (countByState)', () => reads.countByState(), 5);
const oldT = db.prepare('SELECT count(*) AS n FROM threepid_token_auths WHERE validationSession NOT IN (SELECT id FROM threepid_validation_sessions)');
const oldM = db.prepare('SELECT count(*) AS n FROM session_machines WHERE sid NOT IN (SELECT id FROM threepid_validation_sessions)');
time('old sweep orphan statements (as SELECT count, nothing expired)', () => [oldT.get(), oldM.get()], 3);
const w = new SessionWrites(db);
const cutoff = Date.now() - 5 * 24 * 3600_000;
time('new sweep slice (nothing expired)', () => w.deleteExpired(cutoff, 500), 5);
// Expire 2,000 sessions (the oldest) and sweep them in slices of 500.
const oldest = db.prepare('SELECT id FROM threepid_validation_sessions ORDER BY mtime LIMIT 2000').all() as { id: number }[];
const age = db.prepare('UPDATE threepid_validation_sessions SET mtime = ? WHERE id = ?');
db.transaction(() => { for (const { id } of oldest) age.run(cutoff - 1000, id); })();
const slices: number[] = [];
for (;;) { const t = performance.now(); const n = w.deleteExpired(cutoff, 500); slices.push(performance.now() - t); if (n < 500) break; }
console.log('new sweep of 2,000 expired: slices (ms)', slices.map((x) => x.toFixed(2)).join(', '));
let after: number | null = -1; let worst = 0; let total = 0; let k = 0;
while (after !== null) { const t = performance.now(); after = w.deleteOrphanMachines(after, 500); const d = performance.now() - t; worst = Math.max(worst, d); total += d; k++; }
console.log('orphan pass over 1M machine rows:', k, 'slices, total', total.toFixed(0), 'ms, worst slice', worst.toFixed(2), 'ms');
closeDatabase(db);
