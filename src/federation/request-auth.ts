/**
 * Homeserver-signed requests to the identity server (`3pid/unbind` without a session; Sydent's
 * `Verifier.authenticate_request`, sydent-behaviour §5.1). The homeserver sends
 *
 *   Authorization: X-Matrix origin=hs.example,key="ed25519:abc",sig="<base64>"
 *
 * where `sig` is its signature over `{method, uri, origin, destination_is, content}` (`destination_is` being the
 * identity server's name as the homeserver knows it, i.e. our `server.name`). The origin's keys come from a
 * ServerKeySource (server-keys.ts); failures to fetch them are FederationErrors and pass through unchanged.
 */
import { CanonicalJsonError, SignatureError, verifySignedJson } from '../crypto/index.js';
import { isValidServerName } from '../matrix/server-name.js';

export type RequestAuthErrorKind =
  /** no Authorization header, or none with the X-Matrix scheme (Sydent: NoAuthenticationError) */
  | 'missing'
  /** an X-Matrix header that does not parse or lacks origin/key/sig */
  | 'malformed'
  /** the origin is not a Matrix server name (Sydent: InvalidServerName) */
  | 'invalid_origin'
  /** no signature by a key the origin publishes, or one that does not verify */
  | 'bad_signature'
  /** the origin's key response is unusable: wrong server_name, bad self-signature, malformed (server-keys.ts) */
  | 'bad_keys';

/**
 * Why a homeserver-signed request was refused. `message` is what the client is shown: Sydent answers
 * 401 M_FORBIDDEN with it, except 'invalid_origin' which is 400 M_INVALID_PARAM.
 */
export class RequestAuthError extends Error {
  constructor(
    readonly kind: RequestAuthErrorKind,
    message: string,
    opts: { cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'RequestAuthError';
  }
}

export const MISSING_AUTHORIZATION = 'Missing Authorization headers';
export const MISSING_X_MATRIX = 'Missing X-Matrix Authorization header';
export const MALFORMED_AUTHORIZATION = 'Malformed Authorization header';
export const INVALID_ORIGIN = "X-Matrix header's origin parameter must be a valid Matrix server name";
export const NO_MATCHING_SIGNATURE = 'No matching signature found';

export interface XMatrixAuth {
  origin: string;
  /** the key id, e.g. `ed25519:abc` */
  key: string;
  sig: string;
  /** the federation `destination` parameter, when sent (not part of what is signed here; Sydent ignores it) */
  destination?: string;
}

/** Where the origin's verify keys come from (ServerKeyCache). Undefined: the server does not publish that key id. */
export interface ServerKeySource {
  getKey(serverName: string, keyId: string): Promise<Uint8Array | undefined>;
}

export interface HomeserverRequest {
  /** the request method as received, e.g. "POST" */
  method: string;
  /** the path and query string exactly as received (the request-target) */
  uri: string;
  /** our `server.name`: what the homeserver calls this identity server */
  destinationIs: string;
  /** the parsed JSON body */
  content: unknown;
  /** every Authorization header value, in order */
  authorization: string[];
}

// RFC 9110 §5.6.2
const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
const WS = /[ \t]/;

function isTchar(c: string | undefined): boolean {
  return c !== undefined && TCHAR.test(c);
}

function isWs(c: string | undefined): boolean {
  return c !== undefined && WS.test(c);
}

/** The auth-scheme of a credentials value, lower-cased ("" when it does not start with a token). */
function authScheme(value: string): string {
  const s = value.replace(/^[ \t]+/, '');
  let i = 0;
  while (isTchar(s[i])) i++;
  return s.slice(0, i).toLowerCase();
}

function malformed(): RequestAuthError {
  return new RequestAuthError('malformed', MALFORMED_AUTHORIZATION);
}

/**
 * Parses `X-Matrix origin=…,key=…,sig=…[,destination=…]` as RFC 9110 auth-params: the scheme and parameter
 * names are case-insensitive, whitespace may surround `=` and `,`, empty list elements are skipped, values are
 * quoted strings (with `\` escapes) or bare values. Bare values are read up to whitespace or `,` rather than
 * strictly as tokens, because Synapse sends the origin unquoted and a server name with a port has a `:`.
 * Unknown parameters are ignored; a repeated one, or a missing/empty origin, key or sig, is malformed.
 */
export function parseXMatrixHeader(value: string): XMatrixAuth {
  if (typeof value !== 'string') throw malformed();
  const s = value;
  let i = 0;
  const skipWs = () => {
    while (isWs(s[i])) i++;
  };
  skipWs();
  const schemeStart = i;
  while (isTchar(s[i])) i++;
  if (s.slice(schemeStart, i).toLowerCase() !== 'x-matrix') throw malformed();
  // credentials = auth-scheme [ 1*SP #auth-param ]; the params are required here
  if (!isWs(s[i])) throw malformed();
  skipWs();

  const params = new Map<string, string>();
  for (;;) {
    // empty list elements ("a=b, ,c=d") are allowed by the #rule
    while (s[i] === ',' || isWs(s[i])) i++;
    if (i >= s.length) break;

    const nameStart = i;
    while (isTchar(s[i])) i++;
    if (i === nameStart) throw malformed();
    const name = s.slice(nameStart, i).toLowerCase();
    skipWs();
    if (s[i] !== '=') throw malformed();
    i++;
    skipWs();

    let val = '';
    if (s[i] === '"') {
      i++;
      let closed = false;
      while (i < s.length) {
        const c = s[i]!;
        if (c === '"') {
          closed = true;
          i++;
          break;
        }
        if (c === '\\') {
          const next = s[i + 1];
          if (next === undefined || !isQuotable(next)) throw malformed();
          val += next;
          i += 2;
          continue;
        }
        if (!isQuotable(c)) throw malformed();
        val += c;
        i++;
      }
      if (!closed) throw malformed();
    } else {
      const valStart = i;
      while (i < s.length && !isWs(s[i]) && s[i] !== ',' && s[i] !== '"' && isVisible(s[i]!)) i++;
      if (i === valStart) throw malformed();
      val = s.slice(valStart, i);
    }
    if (params.has(name)) throw malformed();
    params.set(name, val);

    skipWs();
    if (i >= s.length) break;
    if (s[i] !== ',') throw malformed();
  }

  const origin = params.get('origin');
  const key = params.get('key');
  const sig = params.get('sig');
  if (!origin || !key || !sig) throw malformed();
  const destination = params.get('destination');
  return destination === undefined ? { origin, key, sig } : { origin, key, sig, destination };
}

/** qdtext or the character of a quoted-pair: HTAB, SP, VCHAR, obs-text */
function isQuotable(c: string): boolean {
  const code = c.charCodeAt(0);
  return code === 0x09 || (code >= 0x20 && code !== 0x7f);
}

/** VCHAR or obs-text */
function isVisible(c: string): boolean {
  const code = c.charCodeAt(0);
  return code > 0x20 && code !== 0x7f;
}

/** The object the homeserver signed: what Synapse builds for identity-server requests, and Sydent checks. */
export function signedRequestObject(
  req: Pick<HomeserverRequest, 'method' | 'uri' | 'destinationIs' | 'content'>,
  origin: string,
  signatures: Record<string, Record<string, string>> = {},
): Record<string, unknown> {
  return {
    method: req.method,
    uri: req.uri,
    origin,
    destination_is: req.destinationIs,
    ...(req.content !== undefined ? { content: req.content } : {}),
    signatures,
  };
}

/**
 * Checks a homeserver-signed request (sydent-behaviour §5.1) and answers the origin server name. Every
 * X-Matrix header is parsed (one malformed header refuses the request); as in Sydent and Synapse the origin is
 * the last header's, and the signatures of all headers naming that origin are considered, in order. Signatures
 * under algorithms other than ed25519, or key ids the origin does not publish, are skipped; the first one with a
 * known key decides. Key-fetch failures are FederationErrors and are not caught here.
 */
export async function verifyHomeserverRequest(
  input: HomeserverRequest,
  keys: ServerKeySource,
): Promise<{ origin: string }> {
  const headers = Array.isArray(input.authorization) ? input.authorization : [];
  if (headers.length === 0) throw new RequestAuthError('missing', MISSING_AUTHORIZATION);
  const xMatrix = headers.filter((h) => typeof h === 'string' && authScheme(h) === 'x-matrix');
  if (xMatrix.length === 0) throw new RequestAuthError('missing', MISSING_X_MATRIX);
  const parsed = xMatrix.map(parseXMatrixHeader);

  const origin = parsed[parsed.length - 1]!.origin;
  if (!isValidServerName(origin)) throw new RequestAuthError('invalid_origin', INVALID_ORIGIN);

  // a later header with the same key id replaces the earlier signature (Sydent's dict)
  const sigs = new Map<string, string>();
  for (const p of parsed) if (p.origin === origin) sigs.set(p.key, p.sig);

  const signed = signedRequestObject(input, origin, { [origin]: Object.fromEntries(sigs) });
  for (const keyId of sigs.keys()) {
    if (!keyId.startsWith('ed25519:')) continue;
    const publicKey = await keys.getKey(origin, keyId);
    if (publicKey === undefined) continue;
    try {
      verifySignedJson(signed, origin, keyId, publicKey);
    } catch (err) {
      if (err instanceof SignatureError || err instanceof CanonicalJsonError) {
        throw new RequestAuthError('bad_signature', `Unable to verify signature for ${origin}: ${err.message}`, {
          cause: err,
        });
      }
      throw err;
    }
    return { origin };
  }
  throw new RequestAuthError('bad_signature', NO_MATCHING_SIGNATURE);
}
