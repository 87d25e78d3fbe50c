import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Two levels below the package root: this file as src/config/paths.ts (tsx, the tests), and the bundle that holds it
 * as dist/bundle/main.mjs (scripts/bundle.mjs).
 */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Used when `templates.path` is not set: Sydent's `res` relative to the CWD only worked when run from its checkout. */
export const SHIPPED_TEMPLATES_PATH = resolve(PACKAGE_ROOT, 'config', 'templates');
