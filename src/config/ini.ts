/**
 * The INI dialect of Python's `ConfigParser()` with its default settings, because that is what Sydent's
 * `sydent.conf` is written in and existing files must read exactly as they did under Sydent.
 *
 * Rules kept from ConfigParser: `=` or `:` splits at the first occurrence; option names are lower-cased but
 * section names are not; whole-line `#`/`;` comments (also indented ones) and no inline comments; a line
 * indented deeper than its option line continues the value (joined with `\n`), and a blank line stays inside
 * the value when more indented lines follow; duplicate sections or options are errors (strict mode);
 * `[DEFAULT]` is inherited by every section; BasicInterpolation (`%(name)s`, `%%`).
 */

export const DEFAULT_SECTION = 'DEFAULT';

/** ConfigParser's MAX_INTERPOLATION_DEPTH */
const MAX_INTERPOLATION_DEPTH = 10;

export class IniSyntaxError extends Error {
  constructor(
    readonly lineNumber: number,
    problem: string,
  ) {
    super(`line ${lineNumber}: ${problem}`);
    this.name = 'IniSyntaxError';
  }
}

export class InterpolationError extends Error {
  constructor(problem: string) {
    super(problem);
    this.name = 'InterpolationError';
  }
}

interface IniOption {
  /** lower-cased */
  name: string;
  value: string;
  /** 0-based index of the `name = value` line */
  line: number;
  /** 0-based index of the value's last line (continuations included) */
  endLine: number;
  /** leading whitespace of the option line; it decides which later lines are continuations */
  indent: string;
}

interface IniSection {
  name: string;
  /** 0-based index of the (first) header line */
  line: number;
  options: Map<string, IniOption>;
}

export interface IniDocument {
  /** the text's own `[DEFAULT]` section, if any */
  defaults: IniSection | null;
  /** named sections in file order, `[DEFAULT]` excluded */
  sections: Map<string, IniSection>;
}

export interface TextLine {
  content: string;
  /** "" only on a last line without a terminator */
  eol: string;
}

/** Python reads the file with universal newlines, so `\r\n`, `\n` and `\r` all end a line. */
export function splitLines(text: string): TextLine[] {
  const lines: TextLine[] = [];
  const re = /\r\n|\n|\r/g;
  let start = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    lines.push({ content: text.slice(start, m.index), eol: m[0] });
    start = m.index + m[0].length;
  }
  if (start < text.length) lines.push({ content: text.slice(start), eol: '' });
  return lines;
}

const SECTION_HEADER = /^\[(.+)\]/;
const OPTION_LINE = /^(.*?)\s*([=:])\s*(.*)$/;

export function parseIni(text: string): IniDocument {
  const doc: IniDocument = { defaults: null, sections: new Map() };
  let section: IniSection | null = null;
  let current: { option: IniOption; parts: string[] } | null = null;
  let indentLevel = 0;

  const closeValue = (): void => {
    if (current) current.option.value = current.parts.join('\n').trimEnd();
    current = null;
  };

  splitLines(text.replace(/^\uFEFF/, '')).forEach(({ content }, index) => {
    const lineNumber = index + 1;
    const stripped = content.trim();
    const isComment = stripped.startsWith('#') || stripped.startsWith(';');
    if (stripped === '' || isComment) {
      // a blank line is kept provisionally: it survives only if a continuation line follows
      if (!isComment && current) current.parts.push('');
      return;
    }
    const indent = content.slice(0, content.length - content.trimStart().length);
    if (current && indent.length > indentLevel) {
      current.parts.push(stripped);
      current.option.endLine = index;
      return;
    }
    indentLevel = indent.length;
    closeValue();

    const header = SECTION_HEADER.exec(stripped);
    if (header) {
      const name = header[1] ?? '';
      if (name === DEFAULT_SECTION) {
        // ConfigParser merges repeated [DEFAULT] headers instead of refusing them
        doc.defaults ??= { name, line: index, options: new Map() };
        section = doc.defaults;
      } else if (doc.sections.has(name)) {
        throw new IniSyntaxError(lineNumber, `section [${name}] appears more than once`);
      } else {
        section = { name, line: index, options: new Map() };
        doc.sections.set(name, section);
      }
      return;
    }
    if (!section) throw new IniSyntaxError(lineNumber, 'a key appears before the first [section] header');

    const match = OPTION_LINE.exec(stripped);
    const rawName = match?.[1] ?? '';
    if (!match || rawName === '') {
      throw new IniSyntaxError(lineNumber, `expected "key = value", found ${JSON.stringify(stripped)}`);
    }
    const name = rawName.trimEnd().toLowerCase();
    if (section.options.has(name)) {
      throw new IniSyntaxError(lineNumber, `key ${name} appears more than once in [${section.name}]`);
    }
    const option: IniOption = { name, value: '', line: index, endLine: index, indent };
    section.options.set(name, option);
    current = { option, parts: [(match[3] ?? '').trim()] };
  });
  closeValue();
  return doc;
}

/** BasicInterpolation: `%(name)s` is replaced by the option `name` (looked up by `lookup`), `%%` by `%`. */
export function interpolate(value: string, lookup: (name: string) => string | undefined, depth = 1): string {
  if (depth > MAX_INTERPOLATION_DEPTH) {
    throw new InterpolationError(`%(name)s references nest more than ${MAX_INTERPOLATION_DEPTH} deep (a loop?)`);
  }
  let out = '';
  let rest = value;
  while (rest !== '') {
    const percent = rest.indexOf('%');
    if (percent < 0) return out + rest;
    out += rest.slice(0, percent);
    rest = rest.slice(percent);
    const next = rest[1];
    if (next === '%') {
      out += '%';
      rest = rest.slice(2);
    } else if (next === '(') {
      const ref = /^%\(([^)]+)\)s/.exec(rest);
      if (!ref) throw new InterpolationError(`bad %(name)s reference at ${JSON.stringify(rest)}`);
      const name = (ref[1] ?? '').toLowerCase();
      rest = rest.slice(ref[0].length);
      const replacement = lookup(name);
      if (replacement === undefined) throw new InterpolationError(`%(${name})s refers to a key that is not set`);
      out += replacement.includes('%') ? interpolate(replacement, lookup, depth + 1) : replacement;
    } else {
      throw new InterpolationError(`'%' must be followed by '%' or '(' (write %% for a literal %)`);
    }
  }
  return out;
}

/**
 * Reads a parsed document the way Sydent's ConfigParser saw it: a named section's own value, else the file's
 * `[DEFAULT]`, else the built-in defaults (which Sydent loads into DEFAULT, so every section sees all of them).
 */
export class IniReader {
  constructor(
    readonly doc: IniDocument,
    private readonly fallback: ReadonlyMap<string, string> = new Map(),
  ) {}

  sectionNames(): string[] {
    return [...this.doc.sections.keys()];
  }

  /** options written in the section itself, without inherited ones */
  explicitKeys(section: string): string[] {
    return [...(this.section(section)?.options.keys() ?? [])];
  }

  /** like ConfigParser.options(): the section's own keys plus everything inherited */
  optionNames(section: string): string[] {
    const names = new Set(this.explicitKeys(section));
    for (const name of this.doc.defaults?.options.keys() ?? []) names.add(name);
    for (const name of this.fallback.keys()) names.add(name);
    return [...names];
  }

  raw(section: string, key: string): string | undefined {
    return (
      this.section(section)?.options.get(key)?.value ??
      this.doc.defaults?.options.get(key)?.value ??
      this.fallback.get(key)
    );
  }

  /** the interpolated value; throws InterpolationError */
  get(section: string, key: string): string | undefined {
    const raw = this.raw(section, key);
    return raw === undefined ? undefined : interpolate(raw, (name) => this.raw(section, name));
  }

  private section(name: string): IniSection | undefined {
    return name === DEFAULT_SECTION ? (this.doc.defaults ?? undefined) : this.doc.sections.get(name);
  }
}

const CONTINUATION_INDENT = '    ';

/** The lines of one option; later lines of a multi-line value are indented so they read back as continuations. */
export function formatOption(key: string, value: string): string[] {
  const [first = '', ...more] = value.split('\n');
  return [
    first === '' ? `${key} =` : `${key} = ${first}`,
    ...more.map((l) => (l === '' ? '' : CONTINUATION_INDENT + l)),
  ];
}

/**
 * Renders sections in insertion order (section names are never integer-like here, so object order is
 * insertion order). `header` lines become leading comments.
 */
export function formatIni(sections: Record<string, Record<string, string>>, header: string[] = []): string {
  const lines: string[] = header.map((l) => (l === '' ? '#' : `# ${l}`));
  if (lines.length > 0) lines.push('');
  for (const [name, options] of Object.entries(sections)) {
    lines.push(`[${name}]`);
    for (const [key, value] of Object.entries(options)) lines.push(...formatOption(key, value));
    lines.push('');
  }
  return lines.join('\n');
}
