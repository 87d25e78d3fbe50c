/**
 * Typed access to one section's values. Every parse failure becomes a ConfigError naming the section and key,
 * so an operator sees exactly which line to fix.
 */
import { resolve } from 'node:path';
import { ConfigError } from './errors.js';
import { InterpolationError, type IniReader } from './ini.js';
import { parseCidr } from './ip.js';

// Sydent used getboolean() for some keys and `== "true"` for others; accepting getboolean's words everywhere and
// refusing the rest catches typos such as `ture` that Sydent silently read as false.
const BOOLEAN_WORDS = new Map<string, boolean>([
  ['1', true],
  ['yes', true],
  ['true', true],
  ['on', true],
  ['0', false],
  ['no', false],
  ['false', false],
  ['off', false],
]);

const DECIMAL = /^[+]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

export class SectionValues {
  constructor(
    private readonly ini: IniReader,
    readonly section: string,
    /** relative paths resolve against this, as Sydent's did against its working directory */
    private readonly cwd: string,
  ) {}

  keys(): string[] {
    return this.ini.optionNames(this.section);
  }

  has(key: string): boolean {
    return this.ini.raw(this.section, key) !== undefined;
  }

  fail(key: string, problem: string, value = this.ini.raw(this.section, key) ?? ''): never {
    throw ConfigError.forValue(this.section, key, value, problem);
  }

  /** "" when unset; `raw` skips `%` interpolation (Sydent reads the invite subjects that way) */
  str(key: string, opts: { raw?: boolean } = {}): string {
    if (opts.raw) return this.ini.raw(this.section, key) ?? '';
    try {
      return this.ini.get(this.section, key) ?? '';
    } catch (err) {
      if (err instanceof InterpolationError) this.fail(key, err.message);
      throw err;
    }
  }

  /** undefined when the key is absent everywhere (only for keys without a default) */
  optional(key: string): string | undefined {
    return this.has(key) ? this.str(key) : undefined;
  }

  port(key: string): number {
    const value = this.str(key);
    const port = /^\d{1,5}$/.test(value) ? Number(value) : NaN;
    if (!(port >= 1 && port <= 65535)) this.fail(key, 'not a port number (1-65535)');
    return port;
  }

  /** "" (or absent) means "off" */
  optionalPort(key: string): number | null {
    return this.str(key) === '' ? null : this.port(key);
  }

  bool(key: string): boolean {
    const word = BOOLEAN_WORDS.get(this.str(key).toLowerCase());
    if (word === undefined) this.fail(key, 'not a boolean (true/false, yes/no, on/off, 1/0)');
    return word;
  }

  int(key: string, min: number): number {
    const value = this.str(key);
    const n = /^[+]?\d+$/.test(value) ? Number(value) : NaN;
    if (!(Number.isSafeInteger(n) && n >= min)) {
      this.fail(key, min === 1 ? 'not a positive integer' : `not an integer >= ${min}`);
    }
    return n;
  }

  positiveNumber(key: string): number {
    const value = this.str(key);
    const n = DECIMAL.test(value) ? Number(value) : NaN;
    if (!(Number.isFinite(n) && n > 0)) this.fail(key, 'not a positive number');
    return n;
  }

  /** comma-separated, items stripped, empty items dropped */
  list(key: string): string[] {
    return this.str(key)
      .split(',')
      .map((item) => item.trim())
      .filter((item) => item !== '');
  }

  /** one item per line (Sydent's blocklists), stripped, empty lines dropped */
  lines(key: string): string[] {
    return this.str(key)
      .split('\n')
      .map((item) => item.trim())
      .filter((item) => item !== '');
  }

  /** comma-separated CIDR ranges or bare addresses, returned as `addr/prefix` */
  cidrs(key: string): string[] {
    return this.list(key).map(
      (item) => parseCidr(item) ?? this.fail(key, `"${item}" is not an IP address or CIDR range`),
    );
  }

  /** absolute path, or "" when unset */
  path(key: string): string {
    const value = this.str(key);
    return value === '' ? '' : resolve(this.cwd, value);
  }
}
