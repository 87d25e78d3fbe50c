import type { SigningKey, SydentConfig } from './config/types.js';
import { encodeBase64, publicKeyFromSeed, signJson } from './crypto/index.js';

/** The long-term signing identity of this server. */
export interface ServerIdentity {
  serverName: string;
  key: SigningKey;
  /** `ed25519:<version>` */
  keyId: string;
  publicKey: Uint8Array;
  /** standard unpadded base64, as Sydent publishes it */
  publicKeyBase64: string;
  /** signs `obj` as this server with the long-term key */
  sign<T extends object>(obj: T): T & { signatures: Record<string, Record<string, string>> };
}

export function identityFromConfig(config: SydentConfig): ServerIdentity {
  const key = config.crypto.signingKey;
  const publicKey = publicKeyFromSeed(key.seed);
  const serverName = config.general.serverName;
  return {
    serverName,
    key,
    keyId: `ed25519:${key.version}`,
    publicKey,
    publicKeyBase64: encodeBase64(publicKey),
    sign: (obj) => signJson(obj, serverName, key),
  };
}
