/**
 * vitest globalSetup: a directory for this run's shared PostgreSQL server. The server itself is started lazily, by
 * the first test that asks for a database (test/helpers/postgres.ts), so a run without such tests never pays for
 * initdb; it is stopped here when the run ends.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import type { TestProject } from 'vitest/node';

import { readServerState, STARTING_FILE, stopPostgresServer } from './postgres-server.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** where this run's shared PostgreSQL server is described once started (test/helpers/postgres.ts) */
    postgresRunDir: string;
  }
}

export default function setup(project: TestProject): () => Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sydent-ts-pg-run-'));
  project.provide('postgresRunDir', dir);
  return async () => {
    try {
      // A start still under way (a worker began it) is waited for, so that its server does not outlive the run.
      const deadline = Date.now() + 120_000;
      let state = readServerState(dir);
      while (!state && fs.existsSync(path.join(dir, STARTING_FILE)) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        state = readServerState(dir);
      }
      if (state && 'server' in state) await stopPostgresServer(state.server);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };
}
