import fs from 'node:fs';

/** The fields of a `/proc/…/stat` line after the command name: [0] is field 3 (state), [1] the ppid, … */
export function statFields(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** utime + stime of a `/proc/…/stat` line, in seconds (USER_HZ is 100) */
function secondsIn(stat: string): number {
  const fields = statFields(stat);
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * user + system CPU seconds of a process so far and of its children it has waited for (cutime + cstime: the time of
 * those that ended), from /proc (Linux), or null where it cannot be read. With the children alive now added, a
 * figure that never goes back when one of them ends.
 */
export function cpuSecondsWithEndedChildren(pid: number): number | null {
  try {
    const f = statFields(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
    return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / 100;
  } catch {
    return null;
  }
}

/** user + system CPU seconds of a process so far (from /proc, Linux), or null where it cannot be read */
export function cpuSeconds(pid: number): number | null {
  try {
    return secondsIn(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return null;
  }
}

/**
 * user + system CPU seconds so far of a process's main thread (the event loop's) and of all its other threads
 * (worker threads, V8's and libuv's), from /proc (Linux); null where it cannot be read.
 */
export function threadCpuSeconds(pid: number): { main: number; others: number } | null {
  try {
    let main = 0;
    let others = 0;
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      const seconds = secondsIn(fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8'));
      if (Number(tid) === pid) main = seconds;
      else others += seconds;
    }
    return { main, others };
  } catch {
    return null;
  }
}
