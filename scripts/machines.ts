/**
 * `npm run machines`: writes every machine to docs/machines/ as JSON, Mermaid and a Stately-importable
 * createMachine file. `--check` only compares, and exits 1 when a file is stale.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { machineJson, toMermaid, toStatelySource } from '../src/machines/export.js';
import { MACHINES } from '../src/machines/index.js';

const OUT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../docs/machines');

export function machineFiles(): Record<string, string> {
  const files: Record<string, string> = {};
  for (const [name, { machine, exportName }] of Object.entries(MACHINES)) {
    files[`${name}.json`] = machineJson(machine);
    files[`${name}.mmd`] = toMermaid(machine);
    files[`${name}.stately.ts`] = toStatelySource(machine, exportName);
  }
  return files;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const check = process.argv.includes('--check');
  fs.mkdirSync(OUT, { recursive: true });
  let stale = 0;
  for (const [file, text] of Object.entries(machineFiles())) {
    const target = path.join(OUT, file);
    const current = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : null;
    if (current === text) continue;
    stale++;
    if (check) console.error(`stale: docs/machines/${file}`);
    else fs.writeFileSync(target, text);
  }
  if (check && stale) process.exit(1);
  if (!check) console.log(`docs/machines: ${stale} file(s) written`);
}
