import fs from 'node:fs';

export interface Memory {
  /** resident set size now, bytes */
  rss: number;
  /**
   * its anonymous part (the JS heap, SQLite's page cache, buffers) and its file-backed part (mapped files: code,
   * and the database pages SQLite reads through mmap, which the kernel can drop at will)
   */
  rssAnon: number;
  rssFile: number;
  /** the largest resident set size so far (VmHWM), bytes */
  peakRss: number;
}

/** A process's resident memory from /proc/<pid>/status (Linux), or null where it cannot be read. */
export function memoryOf(pid: number): Memory | null {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
    const m = { rss: kib('VmRSS'), rssAnon: kib('RssAnon'), rssFile: kib('RssFile'), peakRss: kib('VmHWM') };
    return Object.values(m).every(Number.isFinite) ? m : null;
  } catch {
    return null;
  }
}

/** bytes in MB (10^6), as the goals are stated */
export const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(0)} MB`;
