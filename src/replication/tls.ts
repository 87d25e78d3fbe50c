/**
 * The replication TLS identity: `replication.https.certfile` is one PEM file holding the private key and the
 * certificate (chain), as Sydent's `PrivateCertificate.loadPEM` reads it; the same certificate serves the
 * listener and is presented as our client certificate on pushes. `replication.https.cacert`, when set, is the
 * only trust root for both directions (Sydent: "should only be used for testing"); otherwise Node's roots.
 */
import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';

import type { SydentConfig } from '../config/types.js';

export interface ReplicationTls {
  /** PEM private key */
  key: string;
  /** PEM certificate chain, ours first */
  cert: string;
  /** PEM trust roots, or undefined for Node's default roots */
  ca: string | undefined;
  /** our certificate's subject common name (peers know us by it) */
  commonName: string | null;
}

export type TlsLoad = { ok: true; tls: ReplicationTls } | { ok: false; reason: string };

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]+?-----END \1-----/g;

/** The key and certificate blocks of a combined PEM file. */
export function splitPem(text: string): { key: string | null; certs: string[] } {
  let key: string | null = null;
  const certs: string[] = [];
  for (const m of text.matchAll(PEM_BLOCK)) {
    const label = m[1] ?? '';
    if (label.endsWith('PRIVATE KEY')) key ??= m[0];
    else if (label === 'CERTIFICATE') certs.push(m[0]);
  }
  return { key, certs };
}

/** The subject CN of a PEM certificate (the first one when there are several). */
export function commonNameOf(certPem: string): string | null {
  try {
    const subject = new X509Certificate(certPem).subject;
    for (const line of subject.split('\n')) {
      if (line.startsWith('CN=')) return line.slice(3);
    }
  } catch {
    // not a certificate we can read
  }
  return null;
}

/**
 * Reads the certificate files named by the config. Not configured or unreadable: no replication (Sydent logs a
 * warning and neither listens nor pushes).
 */
export function loadReplicationTls(config: SydentConfig): TlsLoad {
  const { certfile, cacert } = config.http.replication;
  if (certfile === '') return { ok: false, reason: 'replication.https.certfile is not set' };
  let text: string;
  try {
    text = readFileSync(certfile, 'utf8');
  } catch (err) {
    return { ok: false, reason: `cannot read replication.https.certfile ${certfile}: ${(err as Error).message}` };
  }
  const { key, certs } = splitPem(text);
  if (!key || certs.length === 0) {
    return { ok: false, reason: `replication.https.certfile ${certfile} must hold a PEM private key and certificate` };
  }
  let ca: string | undefined;
  if (cacert !== '') {
    try {
      ca = readFileSync(cacert, 'utf8');
    } catch (err) {
      return { ok: false, reason: `cannot read replication.https.cacert ${cacert}: ${(err as Error).message}` };
    }
  }
  const cert = certs.join('\n');
  return { ok: true, tls: { key, cert, ca, commonName: commonNameOf(certs[0]!) } };
}
