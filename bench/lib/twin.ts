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
