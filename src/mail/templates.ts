import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type * as Nunjucks from 'nunjucks';
import type { SydentConfig } from '../config/types.js';
import { toCrlf } from './crlf.js';
import { markupEscape, pyHtmlEscape, pyQuote, pyQuoteForQuery } from './quote.js';
import { errorMessage } from '../util/error-message.js';

/**
 * Sydent's template formats, so an operator's Sydent templates render unchanged:
 *
 * - `*.j2`: Jinja2, rendered here with nunjucks made to behave like Sydent's
 *   `Environment(loader=FileSystemLoader(templates.path), autoescape=True)`: `{{ x }}` is HTML-escaped everywhere
 *   (headers and text parts too) unless `|safe`, with markupsafe's entities (`'` → `&#39;`, `"` → `&#34;`);
 *   `|urlencode` is Jinja2's (`quote(s, safe='/')`); one trailing newline of the template file is dropped
 *   (Jinja2's `keep_trailing_newline=False`); a `%` is left alone (`100%%` stays `100%%`); a changed file is
 *   picked up on the next render (Jinja2's `auto_reload`).
 * - anything else: Python `%`-formatting. `%(name)s` with every variable also as `<name>_forhtml`
 *   (`html.escape`, `'` → `&#x27;`) and `<name>_forurl` (`quote(v, safe='/')`); `%%` is a `%`; an unknown name
 *   is an error.
 */

export class TemplateError extends Error {
  constructor(
    message: string,
    readonly templatePath: string,
  ) {
    super(`${templatePath}: ${message}`);
    this.name = 'TemplateError';
  }
}

export type TemplateFormat = 'jinja' | 'percent';

export interface ResolvedTemplate {
  /** absolute path of the file */
  path: string;
  format: TemplateFormat;
  /** the Jinja loader root (`templates.path`, or the file's folder for a template outside it) */
  root: string;
  /** the template's name for the loader, relative to `root` with `/` separators */
  name: string;
}

/** The names Sydent asks for, and the deprecated setting that overrides each (bypassing branding). */
export type TemplateName =
  'verification_template.eml' | 'invite_template.eml' | 'migration_template.eml' | 'verify_response_template.html';

const OVERRIDES: Partial<Record<string, (config: SydentConfig) => string | null>> = {
  'verification_template.eml': (c) => c.email.template,
  'invite_template.eml': (c) => c.email.inviteTemplate,
  'verify_response_template.html': (c) => c.http.verifyResponseTemplate,
};

/** `?brand=` counts only if it names a folder of `templates.path` (found at start-up); else `brand.default`. */
export function effectiveBrand(general: SydentConfig['general'], brand: string | null | undefined): string {
  return brand != null && general.validBrands.includes(brand) ? brand : general.brandDefault;
}

/**
 * Sydent's `get_branded_template` plus the deprecated overrides: `email.template` (verification mail),
 * `email.invite_template` and `http.verify_response_template` win when set. Otherwise the brand's
 * `<name>.j2` if it exists, else the brand's `<name>` in the legacy `%` format.
 */
export function resolveTemplate(
  config: SydentConfig,
  brand: string | null | undefined,
  name: TemplateName | (string & {}),
): ResolvedTemplate {
  const override = OVERRIDES[name]?.(config);
  if (override) return templateAt(override, config.general.templatesPath);
  const b = effectiveBrand(config.general, brand);
  // Which file a brand's template is (its .j2 or its % form) is looked up once per brand and name, not per mail:
  // the keys are the brands found at start-up and a few names, so the cache stays small. A file edited in place
  // is still picked up on the next render.
  let resolved = resolvedByConfig.get(config);
  if (!resolved) resolvedByConfig.set(config, (resolved = new Map<string, ResolvedTemplate>()));
  const key = `${b}/${name}`;
  let t = resolved.get(key);
  if (!t) resolved.set(key, (t = lookUpTemplate(config.general.templatesPath, b, name)));
  return t;
}

const resolvedByConfig = new WeakMap<SydentConfig, Map<string, ResolvedTemplate>>();

function lookUpTemplate(root: string, brand: string, name: string): ResolvedTemplate {
  const jinja = path.join(root, brand, `${name}.j2`);
  if (fs.existsSync(jinja)) return { path: jinja, format: 'jinja', root, name: `${brand}/${name}.j2` };
  const legacy = path.join(root, brand, name);
  return { path: legacy, format: 'percent', root: path.dirname(legacy), name: path.basename(legacy) };
}

/**
 * The template at an absolute path. A `.j2` inside `templatesRoot` gets that folder as loader root (so its
 * `{% include "brand/x" %}` works as in Sydent), any other its own folder.
 */
export function templateAt(file: string, templatesRoot?: string): ResolvedTemplate {
  const abs = path.resolve(file);
  const format: TemplateFormat = abs.endsWith('.j2') ? 'jinja' : 'percent';
  if (format === 'jinja' && templatesRoot) {
    const rel = path.relative(path.resolve(templatesRoot), abs);
    if (rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel)) {
      return { path: abs, format, root: path.resolve(templatesRoot), name: rel.split(path.sep).join('/') };
    }
  }
  return { path: abs, format, root: path.dirname(abs), name: path.basename(abs) };
}

export interface RenderOptions {
  /** `%` format: variables that get no `_forhtml`/`_forurl` variants (Sydent adds `multipart_boundary` after) */
  noVariants?: readonly string[];
}

/** Renders a template (resolved, or an absolute path) with string variables. Throws TemplateError. */
export function renderTemplate(
  template: ResolvedTemplate | string,
  vars: Readonly<Record<string, string>>,
  opts: RenderOptions = {},
): string {
  const t = typeof template === 'string' ? templateAt(template) : template;
  if (t.format === 'jinja') return renderJinja(t, vars);
  const src = readCached(t.path);
  return pyPercentFormat(src, withLegacyVariants(vars, opts.noVariants ?? []), t.path);
}

/**
 * `toCrlf(renderTemplate(...))`: a whole mail, every line ending CRLF. A template of text and plain substitutions has
 * its text converted once, and only values that hold a line break send the whole render through `toCrlf`.
 */
export function renderTemplateCrlf(
  template: ResolvedTemplate | string,
  vars: Readonly<Record<string, string>>,
  opts: RenderOptions = {},
): string {
  const t = typeof template === 'string' ? templateAt(template) : template;
  if (t.format === 'jinja') {
    const { loader } = jinjaEnvironment(t.root);
    loader.refresh();
    const parts = loader.plainCrlf(t.name);
    if (parts && !valuesBreakLines(parts, vars)) return renderPlain(parts, vars);
  }
  return toCrlf(renderTemplate(t, vars, opts));
}

/** Whether a value the parts put in holds a CR or LF (its line ending would then be converted too). */
function valuesBreakLines(parts: PlainTemplate, vars: Readonly<Record<string, string>>): boolean {
  for (const p of parts) {
    if (typeof p === 'string') continue;
    const value = Object.hasOwn(vars, p.name) ? vars[p.name] : undefined;
    if (value !== undefined && (value.includes('\n') || value.includes('\r'))) return true;
  }
  return false;
}

/**
 * The parts with their text in CRLF line endings; null when a piece of text ends with a bare CR, which `toCrlf` of
 * the whole would pair with a LF after the value next to it.
 */
function withCrlfText(parts: PlainTemplate): PlainTemplate | null {
  const last = parts.length - 1;
  if (parts.some((p, i) => typeof p === 'string' && i < last && p.endsWith('\r'))) return null;
  return parts.map((p) => (typeof p === 'string' ? toCrlf(p) : p));
}

/** Each variable also as `<k>_forhtml` (Python `html.escape`) and `<k>_forurl` (Python `quote`, safe `/`). */
export function withLegacyVariants(
  vars: Readonly<Record<string, string>>,
  noVariants: readonly string[] = [],
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(vars)) {
    if (noVariants.includes(k)) continue;
    out[k] = v;
    out[`${k}_forhtml`] = pyHtmlEscape(v);
    out[`${k}_forurl`] = pyQuote(v);
  }
  for (const k of noVariants) {
    const v = vars[k];
    if (v !== undefined) out[k] = v;
  }
  return out;
}

/**
 * The GET submitToken page: Sydent's `open(template).read() % {"message": msg}`, the message HTML-escaped.
 * A `.j2` response template (which Sydent could not load) is rendered by Jinja with `message`, autoescaped.
 */
export function renderResponsePage(config: SydentConfig, brand: string | null | undefined, message: string): string {
  const t = resolveTemplate(config, brand, 'verify_response_template.html');
  if (t.format === 'jinja') return renderJinja(t, { message });
  return pyPercentFormat(readCached(t.path), { message: pyHtmlEscape(message) }, t.path);
}

// ---------------------------------------------------------------------------------------------------------------
// Python %-formatting

/**
 * `src % vars` for a mapping, as Python does it for the conversions a template uses: `%(name)s` with optional
 * flags (`-` pads right), width and precision; `%%`. A missing name, a positional `%s` or another conversion is
 * an error, as it is (KeyError, TypeError, ValueError) in Sydent.
 */
export function pyPercentFormat(src: string, vars: Readonly<Record<string, string>>, where = '<template>'): string {
  let out = '';
  let i = 0;
  for (;;) {
    const pct = src.indexOf('%', i);
    if (pct === -1) return out + src.slice(i);
    out += src.slice(i, pct);
    let k = pct + 1;
    let key: string | null = null;
    if (src[k] === '(') {
      // Python allows balanced parentheses inside the key
      let depth = 1;
      const start = k + 1;
      k = start;
      while (k < src.length && depth > 0) {
        if (src[k] === '(') depth++;
        else if (src[k] === ')') depth--;
        k++;
      }
      if (depth > 0) throw new TemplateError(`incomplete format key at offset ${pct}`, where);
      key = src.slice(start, k - 1);
    }
    let leftAlign = false;
    while (k < src.length && '#0- +'.includes(src[k] ?? '')) {
      if (src[k] === '-') leftAlign = true;
      k++;
    }
    let width = 0;
    const widthMatch = /^\d+/.exec(src.slice(k, k + 12));
    if (widthMatch) {
      width = Number(widthMatch[0]);
      k += widthMatch[0].length;
    }
    let precision: number | null = null;
    if (src[k] === '.') {
      const m = /^\d*/.exec(src.slice(k + 1, k + 13));
      precision = Number(m?.[0] || '0');
      k += 1 + (m?.[0].length ?? 0);
    }
    if (src[k] === '*') throw new TemplateError(`"*" is not allowed with named values (offset ${pct})`, where);
    while (k < src.length && 'hlL'.includes(src[k] ?? '')) k++;
    const conv = src[k];
    if (conv === undefined) throw new TemplateError(`incomplete format at offset ${pct}`, where);
    k++;
    if (conv === '%') {
      // only a bare %% (Python 3.11 refuses `%(x)%` and `%5%`)
      if (k !== pct + 2) throw new TemplateError(`unsupported format character '%' at offset ${k - 1}`, where);
      out += '%';
    } else {
      if (key === null) {
        throw new TemplateError(`"%${conv}" without a (name) at offset ${pct}: write a literal % as %%`, where);
      }
      if (conv !== 's') {
        throw new TemplateError(`unsupported format "%(${key})${conv}" at offset ${pct}: use %(${key})s`, where);
      }
      if (!Object.hasOwn(vars, key)) throw new TemplateError(`unknown variable "${key}" at offset ${pct}`, where);
      let value = vars[key] ?? '';
      if (precision !== null) value = [...value].slice(0, precision).join('');
      const pad = width - [...value].length;
      if (pad > 0) value = leftAlign ? value + ' '.repeat(pad) : ' '.repeat(pad) + value;
      out += value;
    }
    i = k;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Jinja2 through nunjucks

/**
 * nunjucks escapes through `lib.escape`, looked up at every call by its runtime, with its own entities
 * (`'` → `&#39;`, `"` → `&quot;`, and `\` → `&#92;`, which markupsafe leaves alone). Jinja2 templates need
 * markupsafe's exact output, so the one nunjucks in this process escapes the markupsafe way. This module is the
 * only user of nunjucks in sydent-ts.
 */
let loadedNunjucks: typeof Nunjucks | null = null;

/** nunjucks, loaded with the first Jinja2 template (start-up has no use for it), escaping the markupsafe way. */
function nunjucks(): typeof Nunjucks {
  if (!loadedNunjucks) {
    const require = createRequire(import.meta.url);
    (require('nunjucks/src/lib.js') as { escape: (s: string) => string }).escape = markupEscape;
    loadedNunjucks = require('nunjucks') as typeof Nunjucks;
  }
  return loadedNunjucks;
}

/** A value nunjucks marked safe (none exists before nunjucks is loaded). */
const isSafeString = (value: unknown): value is Nunjucks.runtime.SafeString =>
  loadedNunjucks !== null && value instanceof loadedNunjucks.runtime.SafeString;

/** Jinja2's `urlencode` filter: a string (or any scalar) is `quote(str(v), safe='/')`; a dict or a list of
 * pairs becomes a query string, each part `quote(x, safe='')` with `+` for spaces. */
export function jinjaUrlencode(value: unknown): string {
  if (value === undefined || value === null) return '';
  if (typeof value === 'string') return pyQuote(value);
  if (Array.isArray(value)) {
    return value
      .map((pair: unknown) => (Array.isArray(pair) ? (pair as unknown[]) : [pair, '']))
      .map(qsPair)
      .join('&');
  }
  if (typeof value === 'object' && !isSafeString(value)) {
    return Object.entries(value).map(qsPair).join('&');
  }
  return pyQuote(pyStr(value));
}

function qsPair([k, v]: unknown[]): string {
  return `${pyQuoteForQuery(pyStr(k))}=${pyQuoteForQuery(pyStr(v))}`;
}

/** `str(v)` as these filters apply it: a SafeString's text, a number's digits; nothing ('') for none. */
function pyStr(value: unknown): string {
  if (value === undefined || value === null) return '';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (isSafeString(value)) return value.toString();
  // A dict or list inside the filter's argument (no template passes one): as JSON, not as "[object Object]".
  return JSON.stringify(value) ?? '';
}

/**
 * Reads `.j2` files under one root, like Jinja2's FileSystemLoader: no `..` out of it, one trailing newline
 * dropped. It remembers each file's mtime so that `refresh()` can drop stale compiled templates from the
 * cache nunjucks keeps on the loader.
 */
class JinjaFileLoader implements Nunjucks.ILoader {
  /** assigned and filled by the nunjucks Environment: compiled templates by name */
  cache: Record<string, unknown> = {};
  private readonly loaded = new Map<string, { file: string; mtimeMs: number }>();

  /** the templates made only of text and plain substitutions, split once (null: nunjucks renders it) */
  private readonly plainParts = new Map<string, PlainTemplate | null>();
  /** the same with CRLF line endings in their text, for whole mails (null: not plain, or not safely split so) */
  private readonly plainCrlfParts = new Map<string, PlainTemplate | null>();

  constructor(readonly root: string) {}

  /** `name` split at its substitutions if it has nothing else; null if it has, or is not there. */
  plain(name: string): PlainTemplate | null {
    let parts = this.plainParts.get(name);
    if (parts === undefined) {
      const source = this.getSource(name);
      parts = source ? splitPlainJinja(source.src) : null;
      this.plainParts.set(name, parts);
    }
    return parts;
  }

  /** `plain(name)` with its text in CRLF line endings, when rendering it so gives what `toCrlf` of the render would. */
  plainCrlf(name: string): PlainTemplate | null {
    let parts = this.plainCrlfParts.get(name);
    if (parts === undefined) {
      const plain = this.plain(name);
      parts = plain && withCrlfText(plain);
      this.plainCrlfParts.set(name, parts);
    }
    return parts;
  }

  getSource(name: string): Nunjucks.LoaderSource {
    const notFound = null as unknown as Nunjucks.LoaderSource; // nunjucks' contract: null means not found
    const pieces = name.split('/');
    if (pieces.some((p) => p === '..' || p.includes(path.sep) || p.includes('\\'))) return notFound;
    const file = path.join(this.root, ...pieces);
    let stat: fs.Stats;
    try {
      stat = fs.statSync(file);
    } catch {
      return notFound;
    }
    if (!stat.isFile()) return notFound;
    const src = fs.readFileSync(file, 'utf8').replace(/(?:\r\n|\r|\n)$/, '');
    this.loaded.set(name, { file, mtimeMs: stat.mtimeMs });
    return { src, path: file, noCache: false };
  }

  /** Jinja2's auto_reload: forget every compiled template whose file changed or went since it was read. */
  refresh(): void {
    for (const [name, { file, mtimeMs }] of this.loaded) {
      let current: number | null;
      try {
        current = fs.statSync(file).mtimeMs;
      } catch {
        current = null;
      }
      if (current !== mtimeMs) {
        this.cache[name] = null;
        this.loaded.delete(name);
        this.plainParts.delete(name);
        this.plainCrlfParts.delete(name);
      }
    }
  }
}

const environments = new Map<string, { env: Nunjucks.Environment; loader: JinjaFileLoader }>();

function jinjaEnvironment(root: string): { env: Nunjucks.Environment; loader: JinjaFileLoader } {
  let entry = environments.get(root);
  if (!entry) {
    const loader = new JinjaFileLoader(root);
    const env = new (nunjucks().Environment)(loader, {
      autoescape: true,
      throwOnUndefined: false,
      trimBlocks: false,
      lstripBlocks: false,
    });
    env.addFilter('urlencode', jinjaUrlencode);
    entry = { env, loader };
    environments.set(root, entry);
  }
  return entry;
}

function renderJinja(t: ResolvedTemplate, vars: Readonly<Record<string, string>>): string {
  const { env, loader } = jinjaEnvironment(t.root);
  loader.refresh();
  const plain = loader.plain(t.name);
  if (plain) return renderPlain(plain, vars);
  try {
    return env.render(t.name, { ...vars });
  } catch (error) {
    throw new TemplateError(errorMessage(error), t.path);
  }
}

/**
 * A Jinja2 template of text and `{{ name }}`, `{{ name|safe }}` or `{{ name|urlencode }}` only (Sydent's own
 * templates are), as its pieces: every other piece of text is a variable to put there. Rendered by joining them,
 * escaped as nunjucks (made markupsafe's) would, without going through nunjucks.
 */
export type PlainTemplate = readonly (string | { name: string; filter: 'escape' | 'safe' | 'urlencode' })[];

const SUBSTITUTION = /\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\|\s*(safe|urlencode)\s*)?\}\}/g;

/** The pieces of `src`, or null when it has anything Jinja2 would do more with (tags, comments, expressions). */
export function splitPlainJinja(src: string): PlainTemplate | null {
  const out: (string | { name: string; filter: 'escape' | 'safe' | 'urlencode' })[] = [];
  let at = 0;
  for (const m of src.matchAll(SUBSTITUTION)) {
    out.push(src.slice(at, m.index));
    out.push({ name: m[1]!, filter: (m[2] as 'safe' | 'urlencode' | undefined) ?? 'escape' });
    at = m.index + m[0].length;
  }
  out.push(src.slice(at));
  const text = out.filter((p): p is string => typeof p === 'string');
  if (text.some((p) => p.includes('{{') || p.includes('{%') || p.includes('{#'))) return null;
  // Names nunjucks resolves to something else than the variable (its globals) are left to it.
  if (out.some((p) => typeof p !== 'string' && NUNJUCKS_NAMES.has(p.name))) return null;
  return out;
}

const NUNJUCKS_NAMES = new Set([
  'true',
  'false',
  'none',
  'True',
  'False',
  'None',
  'range',
  'cycler',
  'joiner',
  'loop',
  'super',
  'caller',
]);

function renderPlain(parts: PlainTemplate, vars: Readonly<Record<string, string>>): string {
  let out = '';
  for (const p of parts) {
    if (typeof p === 'string') {
      out += p;
      continue;
    }
    const value = Object.hasOwn(vars, p.name) ? vars[p.name] : undefined;
    if (p.filter === 'safe') out += value ?? '';
    else if (p.filter === 'urlencode') out += markupEscape(jinjaUrlencode(value));
    else out += value === undefined ? '' : markupEscape(value);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------

const fileCache = new Map<string, { mtimeMs: number; src: string }>();

/** A `%` template's text, re-read when the file changes (Sydent opened it at every use). */
function readCached(file: string): string {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch (error) {
    throw new TemplateError(`cannot read the template: ${(error as Error).message}`, file);
  }
  const hit = fileCache.get(file);
  if (hit && hit.mtimeMs === stat.mtimeMs) return hit.src;
  const src = fs.readFileSync(file, 'utf8');
  fileCache.set(file, { mtimeMs: stat.mtimeMs, src });
  return src;
}
