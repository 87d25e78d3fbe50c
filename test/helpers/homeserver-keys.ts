/**
 * A loopback homeserver's signing keys: it publishes them at `GET /_matrix/key/v2/server` (self-signed, as
 * Synapse does) and signs requests to the identity server the way Synapse's `build_auth_headers` does.
 *
 *   const env = await startFederationEnv({});
 *   const hsKeys = new HomeserverKeys(env.serverName);               // key "ed25519:abc"
 *   hsKeys.publish(env.hs, { validUntilTs: Date.now() + 3600_000 });
 *   const authorization = hsKeys.authorization({ method: 'POST', uri: '/_matrix/identity/v2/3pid/unbind',
 *     destinationIs: 'is.example.test', content: body });
 *   // -> 'X-Matrix origin=hs.test:1234,key="ed25519:abc",sig="…"'
 *   hsKeys.keyRequests(env.hs)                                          // how often the keys were fetched
 */
import { encodeBase64, generateSeed, publicKeyFromSeed, signJson } from '../../src/crypto/index.js';
import type { Homeserver, HomeserverReply } from './homeserver.js';

export const KEY_ROUTE = 'GET /_matrix/key/v2/server';

export interface HsSigningKey {
  /** e.g. `ed25519:abc` */
  keyId: string;
  seed: Uint8Array;
  publicKey: Uint8Array;
}

export function makeSigningKey(keyId = 'ed25519:abc'): HsSigningKey {
  if (!keyId.startsWith('ed25519:')) throw new Error(`not an ed25519 key id: ${keyId}`);
  const seed = generateSeed();
  return { keyId, seed, publicKey: publicKeyFromSeed(seed) };
}

function signWith(obj: object, signer: string, key: HsSigningKey): Record<string, unknown> {
  return signJson(obj, signer, { version: key.keyId.slice('ed25519:'.length), seed: key.seed });
}

export interface KeyResponseOptions {
  /** `valid_until_ts`; null leaves it out. Default: an hour from Date.now() */
  validUntilTs?: number | null;
  /** the `server_name` written in the body (default: the real one) */
  serverName?: string;
  /** the keys listed in `verify_keys` (default: the current key) */
  verifyKeys?: HsSigningKey[];
  /** the keys that sign the response (default: the listed ones); may be keys that are not listed */
  signedBy?: HsSigningKey[];
  /** the name the signatures are filed under (default: the body's server_name) */
  signAs?: string;
  /** change the body after signing (to break the signature) */
  tamper?: (body: Record<string, unknown>) => void;
  /** extra top-level fields, signed */
  extra?: Record<string, unknown>;
}

export interface SignRequestInput {
  method: string;
  /** path and query */
  uri: string;
  /** the identity server's name as the homeserver knows it */
  destinationIs: string;
  content?: unknown;
  /** sign with this key (default: the current key) */
  key?: HsSigningKey;
  /** the `origin` written in the header and signed object (default: the real server name) */
  origin?: string;
  /** add a federation-style `destination="…"` parameter (newer Synapse does for federation requests) */
  destination?: string;
}

export class HomeserverKeys {
  /** the key that signs requests and is published */
  key: HsSigningKey;

  constructor(
    readonly serverName: string,
    key: HsSigningKey = makeSigningKey(),
  ) {
    this.key = key;
  }

  /** the `/_matrix/key/v2/server` body: `{server_name, verify_keys, old_verify_keys, valid_until_ts, signatures}` */
  keyResponse(opts: KeyResponseOptions = {}): Record<string, unknown> {
    const listed = opts.verifyKeys ?? [this.key];
    const serverName = opts.serverName ?? this.serverName;
    const body: Record<string, unknown> = {
      server_name: serverName,
      verify_keys: Object.fromEntries(listed.map((k) => [k.keyId, { key: encodeBase64(k.publicKey) }])),
      old_verify_keys: {},
      ...(opts.validUntilTs === null ? {} : { valid_until_ts: opts.validUntilTs ?? Date.now() + 3600_000 }),
      ...opts.extra,
    };
    let signed: Record<string, unknown> = body;
    for (const k of opts.signedBy ?? listed) signed = signWith(signed, opts.signAs ?? serverName, k);
    opts.tamper?.(signed);
    return signed;
  }

  /**
   * Serves the key response at `GET /_matrix/key/v2/server` of `hs`. `opts` may be a function, evaluated on
   * every request, so a test can rotate keys or change validity while the server runs.
   */
  publish(
    hs: Homeserver,
    opts: KeyResponseOptions | (() => KeyResponseOptions) = {},
    reply: Partial<HomeserverReply> = {},
  ): void {
    hs.routes[KEY_ROUTE] = () => ({ ...reply, json: this.keyResponse(typeof opts === 'function' ? opts() : opts) });
  }

  /** how many times `hs` was asked for its keys */
  keyRequests(hs: Homeserver): number {
    return hs.requests.filter((r) => r.method === 'GET' && r.url.split('?')[0] === '/_matrix/key/v2/server').length;
  }

  /** the object Synapse signs for an identity-server request, signed: `{method, uri, origin, destination_is, content, signatures}` */
  signedRequest(input: SignRequestInput): Record<string, unknown> {
    const origin = input.origin ?? this.serverName;
    const request: Record<string, unknown> = {
      method: input.method,
      uri: input.uri,
      origin,
      destination_is: input.destinationIs,
    };
    if (input.content !== undefined) request.content = input.content;
    return signWith(request, origin, input.key ?? this.key);
  }

  /** the signature alone */
  signature(input: SignRequestInput): string {
    const origin = input.origin ?? this.serverName;
    const key = input.key ?? this.key;
    const sigs = (this.signedRequest(input).signatures as Record<string, Record<string, string>>)[origin];
    const sig = sigs?.[key.keyId];
    if (sig === undefined) throw new Error('no signature made');
    return sig;
  }

  /** the Authorization header value, formatted as Synapse does: `X-Matrix origin=<hs>,key="<id>",sig="<sig>"` */
  authorization(input: SignRequestInput): string {
    const origin = input.origin ?? this.serverName;
    const key = input.key ?? this.key;
    const dest = input.destination === undefined ? '' : `,destination="${input.destination}"`;
    return `X-Matrix origin=${origin},key="${key.keyId}",sig="${this.signature(input)}"${dest}`;
  }
}
