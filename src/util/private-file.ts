/**
 * Files that hold secrets (the database: pepper, account tokens, addresses; the config: the signing key) are
 * made readable by their owner only, and an operator is told when one of them is readable by everyone.
 */
import { chmodSync, closeSync, openSync, statSync } from 'node:fs';

/**
 * Creates `path` empty with mode 0600 unless it exists, and says whether it did. The mode is set after creation,
 * so the umask does not decide it; an existing file is left as the operator set it.
 */
export function createPrivateFile(path: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
  try {
    chmodSync(path, 0o600);
  } finally {
    closeSync(fd);
  }
  return true;
}

/** A warning naming `path` and its mode when users other than its owner and group can read it; null otherwise. */
export function readableByOthersWarning(path: string, holds: string): string | null {
  let mode: number;
  try {
    mode = statSync(path).mode & 0o777;
  } catch {
    return null;
  }
  if ((mode & 0o004) === 0) return null;
  const octal = mode.toString(8).padStart(4, '0');
  return `${path} holds ${holds} and every user of this machine can read it (mode ${octal}): chmod 600 it`;
}
