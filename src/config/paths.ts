import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** This file sits two levels below the package root both as src/config/paths.ts and as dist/config/paths.js. */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Used when `templates.path` is not set: Sydent's `res` relative to the CWD only worked when run from its checkout. */
export const SHIPPED_TEMPLATES_PATH = resolve(PACKAGE_ROOT, 'config', 'templates');
