import os from 'node:os';
import path from 'node:path';
import { ROOT, spawnTs, waitReady, type TsProcess } from './child.js';
import { freePort } from './ports.js';
import { profilerEnv } from './profiler.js';
import { SERVER_NAME } from './sydent.js';

/** What a bare twin does (see twin-server.ts), and what it needs. */
export type TwinSpec =
  { kind: 'request-token'; dbPath: string; smtpPort: number } | { kind: 'bind'; dbPath: string; serverName?: string };

export interface Twin {
  baseUrl: string;
  port: number;
  /** the route of its one write: `/requestToken` or `/bind` */
  path: string;
  /** the bind twin's ed25519 verify key (unpadded base64); null for the others */
  verifyKey: string | null;
  process: TsProcess;
  stop(): Promise<void>;
}

/** Starts bench/lib/twin-server.ts in its own process on a free loopback port, on a database that already exists. */
export async function startTwin(spec: TwinSpec): Promise<Twin> {
  const port = await freePort();
  const args =
    spec.kind === 'request-token'
      ? [spec.kind, String(port), spec.dbPath, String(spec.smtpPort), path.join(ROOT, 'config/templates')]
      : [spec.kind, String(port), spec.dbPath, spec.serverName ?? SERVER_NAME];
  const env = profilerEnv(`twin-${spec.kind}`) ?? undefined;
  const proc = spawnTs(path.join(ROOT, 'bench/lib/twin-server.ts'), args, { cwd: os.tmpdir(), env });
  await waitReady(proc, { marker: 'twin started', timeoutMs: 20_000 });
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    port,
    path: spec.kind === 'request-token' ? '/requestToken' : '/bind',
    verifyKey: /\(verify key ([^)\s]+)\)/.exec(proc.stderr())?.[1] ?? null,
    process: proc,
    stop: async () => {
      await proc.stop();
    },
  };
}

const TWIN_PUSH = path.join(ROOT, 'bench/lib/twin-push.ts');

/** What both sides of the catch-up twin (twin-push.ts) share: the TLS files, made by the scenario under one CA. */
export interface PushTls {
  /** PEM private key and certificate in one file, CN the process's server name */
  certFile: string;
  caFile: string;
}

/**
 * The catch-up twin's receiver (twin-push.ts) in its own process on a free loopback port, on a database that already
 * has sydent-ts's schema and a pepper; it accepts pushes from `peerName` (its client certificate's CN) signed with
 * `peerKey` (unpadded base64). Stop it with `process.stop()`.
 */
export async function startPushReceiver(
  opts: PushTls & { dbPath: string; peerName: string; peerKey: string },
): Promise<{ url: string; process: TsProcess }> {
  const port = await freePort();
  const args = ['receiver', String(port), opts.dbPath, opts.peerName, opts.peerKey, opts.certFile, opts.caFile];
  const env = profilerEnv('twin-push-receiver') ?? undefined;
  const proc = spawnTs(TWIN_PUSH, args, { cwd: os.tmpdir(), env });
  await waitReady(proc, { marker: 'twin push receiver started', timeoutMs: 20_000 });
  return { url: `https://127.0.0.1:${port}/_matrix/identity/replicate/v1/push`, process: proc };
}

/**
 * The catch-up twin's sender (twin-push.ts): pushes the log of the database at `dbPath` (`ownName`'s binds) to `url`
 * in batches of `batchSize`, then exits (0 once all were acknowledged).
 */
export function spawnPushSender(
  opts: PushTls & { dbPath: string; url: string; ownName: string; batchSize: number },
): TsProcess {
  const args = ['sender', opts.dbPath, opts.url, opts.ownName, opts.certFile, opts.caFile, String(opts.batchSize)];
  const env = profilerEnv('twin-push-sender') ?? undefined;
  return spawnTs(TWIN_PUSH, args, { cwd: os.tmpdir(), env });
}
