import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** A fresh directory for one test; removed by the returned function. */
export function tempDir(prefix = 'sydent-ts-'): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}
