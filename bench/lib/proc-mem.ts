import fs from 'node:fs';

export interface Memory {
  /** resident set size now, bytes */
  rss: number;
  /** the largest resident set size so far (VmHWM), bytes */
  peakRss: number;
}

/** A process's resident memory from /proc/<pid>/status (Linux), or null where it cannot be read. */
export function memoryOf(pid: number): Memory | null {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
    const m = { rss: kib('VmRSS'), peakRss: kib('VmHWM') };
    return Number.isFinite(m.rss) && Number.isFinite(m.peakRss) ? m : null;
  } catch {
    return null;
  }
}

/** bytes in MB (10^6), as the goals are stated */
export const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(0)} MB`;
