/**
 * config/sydent-ts.service, the systemd unit the guide ships: its content checked against what sydent-ts does with
 * signals and files, and, where systemd-analyze is installed, `systemd-analyze verify` with no complaint.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SUPERVISORS } from '../src/actors/system.js';
import { ROOT } from './helpers/process.js';
import { tempDir } from './helpers/tmp.js';

const UNIT = path.join(ROOT, 'config', 'sydent-ts.service');
const HAS_SYSTEMD_ANALYZE = spawnSync('systemd-analyze', ['--version'], { stdio: 'ignore' }).status === 0;

/** systemd's unit syntax: `[Section]`, `Key=Value` (a key may repeat), `#`/`;` comments, blank lines. */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | null = null;
  text.split('\n').forEach((line, i) => {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#') || trimmed.startsWith(';')) return;
    const header = /^\[([A-Za-z]+)\]$/.exec(trimmed);
    if (header) {
      current = new Map();
      sections.set(header[1]!, current);
      return;
    }
    const pair = /^([A-Za-z][A-Za-z0-9]*)=(.*)$/.exec(trimmed);
    if (!pair || !current) throw new Error(`line ${i + 1} is not a section, a Key=Value or a comment: ${line}`);
    const values = current.get(pair[1]!) ?? [];
    values.push(pair[2]!);
    current.set(pair[1]!, values);
  });
  return sections;
}

function one(section: Map<string, string[]> | undefined, key: string): string {
  const values = section?.get(key);
  expect(values, key).toHaveLength(1);
  return values![0]!;
}

describe('the systemd unit (config/sydent-ts.service)', () => {
  const text = fs.readFileSync(UNIT, 'utf8');

  it('starts the installed sydent-ts in its state directory and matches what sydent-ts does with signals and files', () => {
    const unit = parseUnit(text);
    expect([...unit.keys()]).toEqual(['Unit', 'Service', 'Install']);
    const service = unit.get('Service');
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> };
    // the command npm installs (package.json "bin"), with no argument: sydent.conf in the working directory
    expect(one(service, 'ExecStart')).toBe(`/usr/local/bin/${Object.keys(pkg.bin)[0]}`);
    expect(one(service, 'WorkingDirectory')).toBe(`/var/lib/${one(service, 'StateDirectory')}`);
    expect(one(service, 'User')).toBe('sydent');
    // reload = SIGHUP = reopen log.path; stop = SIGTERM = drain, then each supervisor's queue (10 s each at most)
    expect(one(service, 'ExecReload')).toBe('/bin/kill -HUP $MAINPID');
    expect(one(service, 'KillSignal')).toBe('SIGTERM');
    expect(Number(one(service, 'TimeoutStopSec'))).toBeGreaterThanOrEqual(SUPERVISORS.length * 10 + 10);
    expect(one(service, 'UMask')).toBe('0077');
    expect(one(service, 'ProtectSystem')).toBe('strict');
    // V8 writes machine code at run time: this would kill the process at start
    expect(service?.has('MemoryDenyWriteExecute')).toBe(false);
    expect(one(unit.get('Unit'), 'After')).toBe('network-online.target');
    expect(one(unit.get('Install'), 'WantedBy')).toBe('multi-user.target');
  });

  it(
    HAS_SYSTEMD_ANALYZE
      ? 'passes systemd-analyze verify without a warning'
      : 'systemd-analyze is not installed here: its verify step cannot run (the content test above still checks the unit)',
    () => {
      if (!HAS_SYSTEMD_ANALYZE) {
        expect(spawnSync('systemd-analyze', ['--version']).error).toBeDefined();
        return;
      }
      // verify checks that ExecStart's file is executable: a copy points at this checkout's bin/, the rest verbatim.
      const t = tempDir();
      try {
        const copy = path.join(t.dir, 'sydent-ts.service');
        fs.writeFileSync(copy, text.replace('/usr/local/bin/sydent-ts', path.join(ROOT, 'bin', 'sydent-ts.js')));
        const run = spawnSync('systemd-analyze', ['verify', copy], { encoding: 'utf8' });
        expect(run.stderr).toBe('');
        expect(run.status).toBe(0);
      } finally {
        t.cleanup();
      }
    },
  );
});
