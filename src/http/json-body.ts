/**
 * A request body as JSON, read strictly: the bytes must be UTF-8 (the spec: "All JSON data, in requests or
 * responses, must be encoded using UTF-8"; decoding leniently would turn a stray byte into U+FFFD and mail it); no
 * string may hold a NUL or a lone surrogate (`"\u0000"`, `"\ud800"`: valid JSON text, but no field of this API can
 * carry them, and they would reach the store, the signatures and the mails); and nothing may nest deeper than any
 * request of this API does, since canonical JSON and JSON.stringify recurse and a 512 KB body of brackets would
 * overflow the stack. Shared by fastify's parser, the fast lane and the replication push, so all refuse alike.
 */
import { isUtf8 } from 'node:buffer';
import { errors } from './errors.js';

/** The deepest nesting accepted (a replication push, the deepest request, nests 5 levels). */
const MAX_JSON_DEPTH = 32;

/** Only these escapes can put a NUL or a lone surrogate into a parsed string: raw ones are not valid JSON or UTF-8. */
const SUSPECT_ESCAPE = /\\u(?:0000|[dD][89a-fA-F])/;
const LONE_SURROGATE = /\p{Surrogate}/u;

/** The parsed body (`undefined` when empty), or throws the Matrix error to answer. */
export function parseJsonBody(body: Buffer): unknown {
  if (body.length === 0) return undefined;
  if (!isUtf8(body)) throw errors.notJson('Request body is not valid UTF-8');
  const text = body.toString('utf8');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw errors.notJson('Request body is not valid JSON');
  }
  if (typeof value === 'object' && value !== null) {
    const suspect = text.includes('\\u') && SUSPECT_ESCAPE.test(text);
    // Most bodies are small: too few brackets to nest too deep, and nothing to look for in their strings.
    if (suspect || !fewBrackets(text)) checkNesting(value, suspect);
  } else if (typeof value === 'string') checkString(value, '');
  return value;
}

const OPENING = ['[', '{'] as const;

/**
 * Whether the text opens at most MAX_JSON_DEPTH lists and objects: then nothing in it nests deeper. Brackets inside
 * strings are counted too, which only sends a body to the walk that did not need it.
 */
function fewBrackets(text: string): boolean {
  let opened = 0;
  for (const bracket of OPENING) {
    for (let at = text.indexOf(bracket); at !== -1; at = text.indexOf(bracket, at + 1)) {
      if (++opened > MAX_JSON_DEPTH) return false;
    }
  }
  return true;
}

interface Frame {
  value: object;
  depth: number;
  /** where it is, for messages: only kept while strings are checked */
  path: string;
}

/**
 * The depth of every object and list, and, when the text has a suspect escape, every string (keys included). A loop
 * with its own stack, not recursion: the point is not to overflow the call stack.
 */
function checkNesting(root: object, strings: boolean): void {
  const pending: Frame[] = [{ value: root, depth: 1, path: '' }];
  for (let frame = pending.pop(); frame !== undefined; frame = pending.pop()) {
    const { value, depth, path } = frame;
    if (depth > MAX_JSON_DEPTH) throw errors.badJson(`Request body is nested deeper than ${MAX_JSON_DEPTH} levels`);
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        const element: unknown = value[i];
        if (typeof element === 'object' && element !== null)
          pending.push({ value: element, depth: depth + 1, path: strings ? `${path}[${i}]` : '' });
        else if (strings && typeof element === 'string') checkString(element, `${path}[${i}]`);
      }
    } else {
      // for…in, not Object.entries: no pair allocated per key (JSON.parse makes only own, plain properties)
      for (const key in value) {
        const element: unknown = (value as Record<string, unknown>)[key];
        const at = strings ? (path ? `${path}.${key}` : key) : '';
        if (strings) checkString(key, at);
        if (typeof element === 'object' && element !== null)
          pending.push({ value: element, depth: depth + 1, path: at });
        else if (strings && typeof element === 'string') checkString(element, at);
      }
    }
  }
}

function checkString(s: string, path: string): void {
  const name = JSON.stringify(path.length > 64 ? `${path.slice(0, 64)}…` : path || 'body');
  if (s.includes('\0')) throw errors.invalidParam(`${name} must not contain NUL`);
  if (LONE_SURROGATE.test(s)) throw errors.invalidParam(`${name} is not valid Unicode (a lone surrogate)`);
}
