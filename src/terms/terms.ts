/**
 * Sydent's terms of service file (`general.terms.path`, YAML): the documents users must accept before using
 * the v2 API. Consent means every document is accepted in at least one of its languages.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import type * as Yaml from 'yaml';

// The YAML parser is loaded when a terms file is configured, not at every start-up.
const require = createRequire(import.meta.url);
const parse = (text: string): unknown => (require('yaml') as typeof Yaml).parse(text);

interface TermsLanguage {
  name: string;
  url: string;
}

interface TermsDocument {
  version: string;
  langs: Record<string, TermsLanguage>;
}

interface Terms {
  masterVersion: string;
  docs: Record<string, TermsDocument>;
}

export class TermsError extends Error {
  override name = 'TermsError';
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Validates the parsed YAML with Sydent's messages. */
function parseTerms(text: string): Terms {
  const raw: unknown = parse(text);
  if (!isObject(raw)) throw new TermsError('No master version');
  const master = raw['master_version'];
  if (master === undefined || master === null) throw new TermsError('No master version');
  if (typeof master !== 'string' && typeof master !== 'number') throw new TermsError('master_version must be a string');
  const docsRaw = raw['docs'];
  if (!isObject(docsRaw)) throw new TermsError("No 'docs' key in terms");
  const docs: Record<string, TermsDocument> = {};
  for (const [id, doc] of Object.entries(docsRaw)) {
    if (!isObject(doc) || doc['version'] === undefined) throw new TermsError(`'${id}' has no version`);
    const version = doc['version'];
    if (typeof version !== 'string' && typeof version !== 'number')
      throw new TermsError(`the version of '${id}' must be a string`);
    if (!isObject(doc['langs'])) throw new TermsError(`'${id}' has no langs`);
    const langs: Record<string, TermsLanguage> = {};
    for (const [lang, entry] of Object.entries(doc['langs'])) {
      if (!isObject(entry) || typeof entry['name'] !== 'string')
        throw new TermsError(`lang '${lang}' of doc ${id} has no name`);
      if (typeof entry['url'] !== 'string') throw new TermsError(`lang '${lang}' of doc ${id} has no url`);
      langs[lang] = { name: entry['name'], url: entry['url'] };
    }
    docs[id] = { version: String(version), langs };
  }
  return { masterVersion: String(master), docs };
}

/** The `GET /terms` body. */
export function policiesOf(terms: Terms | null): Record<string, Record<string, unknown>> {
  const policies: Record<string, Record<string, unknown>> = {};
  for (const [id, doc] of Object.entries(terms?.docs ?? {})) policies[id] = { version: doc.version, ...doc.langs };
  return policies;
}

export function allUrls(terms: Terms | null): Set<string> {
  const urls = new Set<string>();
  for (const doc of Object.values(terms?.docs ?? {})) for (const l of Object.values(doc.langs)) urls.add(l.url);
  return urls;
}

/** Each document's URLs, one per language: accepting any one of them accepts the document. */
export function documentUrls(terms: Terms | null): string[][] {
  return Object.values(terms?.docs ?? {}).map((doc) => Object.values(doc.langs).map((l) => l.url));
}

/**
 * The terms file, read at start-up and again whenever it changes on disk, so operators can publish new terms
 * without a restart (Sydent re-reads it on every request). A broken edit keeps the last good terms.
 */
export class TermsSource {
  private terms: Terms | null = null;
  private mtimeMs = -1;
  /** the file is looked at no more than once a second: every authenticated request asks for the terms */
  private checkedAt = 0;

  /** Throws TermsError when the file at start-up is missing or invalid: better than failing every request. */
  constructor(
    private readonly path: string,
    private readonly onReloadError: (error: Error) => void = () => undefined,
  ) {
    if (path) this.load(true);
  }

  current(): Terms | null {
    const now = Date.now();
    if (this.path && now - this.checkedAt >= 1000) {
      this.checkedAt = now;
      this.load(false);
    }
    return this.terms;
  }

  private load(strict: boolean): void {
    try {
      const { mtimeMs } = fs.statSync(this.path);
      if (mtimeMs === this.mtimeMs) return;
      // Remembered before parsing, so a broken file is reported once, not on every request.
      this.mtimeMs = mtimeMs;
      this.terms = parseTerms(fs.readFileSync(this.path, 'utf8'));
    } catch (error) {
      const err = error instanceof Error ? error : new Error(String(error));
      if (strict) throw new TermsError(`terms file ${this.path}: ${err.message}`);
      this.onReloadError(err);
    }
  }
}
