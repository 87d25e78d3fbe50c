/**
 * Test certificates: a CA and server certificates it signs, as PEM strings, made with `selfsigned`.
 *
 *   const ca = await makeCa();
 *   const { key, cert } = await makeCert(ca, { hostnames: ['hs.test'], ips: ['127.0.0.1'] });
 *   https.createServer({ key, cert }, ...);          // the server side
 *   new FederationClient({ ..., caCert: ca.cert });   // the side that trusts the CA
 *
 * EC P-256 keys keep generation fast. Certificates are valid from an hour ago for a year.
 */
import { generate } from 'selfsigned';

export interface Pem {
  /** PKCS#8 private key */
  key: string;
  cert: string;
}

function validity(): { notBeforeDate: Date; notAfterDate: Date } {
  const now = Date.now();
  return { notBeforeDate: new Date(now - 3600_000), notAfterDate: new Date(now + 365 * 24 * 3600_000) };
}

/** a self-signed CA certificate and its key */
export async function makeCa(commonName = 'sydent-ts test CA'): Promise<Pem> {
  const pems = await generate([{ name: 'commonName', value: commonName }], {
    keyType: 'ec',
    algorithm: 'sha256',
    ...validity(),
    extensions: [
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    ],
  });
  return { key: pems.private, cert: pems.cert };
}

/** a TLS server certificate signed by `ca`, with the given DNS names and IP addresses as SANs */
export async function makeCert(
  ca: Pem,
  opts: { hostnames: string[]; ips?: string[]; commonName?: string },
): Promise<Pem> {
  const altNames = [
    ...opts.hostnames.map((value) => ({ type: 2 as const, value })),
    ...(opts.ips ?? []).map((ip) => ({ type: 7 as const, ip })),
  ];
  const pems = await generate(
    [{ name: 'commonName', value: opts.commonName ?? opts.hostnames[0] ?? opts.ips?.[0] ?? 'test' }],
    {
      keyType: 'ec',
      algorithm: 'sha256',
      ...validity(),
      extensions: [
        { name: 'basicConstraints', cA: false },
        { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
        { name: 'extKeyUsage', serverAuth: true },
        { name: 'subjectAltName', altNames },
      ],
      ca: { key: ca.key, cert: ca.cert },
    },
  );
  return { key: pems.private, cert: pems.cert };
}
