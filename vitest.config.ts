import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

/**
 * The main end-to-end flows, run a second time with their test servers on PostgreSQL (test/helpers/server.ts reads
 * SYDENT_TEST_DB_ENGINE): handlers and machines must not know which engine runs.
 */
const FLOWS_ON_POSTGRESQL = [
  'test/email-flow.test.ts',
  'test/msisdn-flow.test.ts',
  'test/bind-v1.test.ts',
  'test/bind-v2.test.ts',
  'test/lookup-after-bind.test.ts',
  'test/lookup-v2-errors.test.ts',
  'test/invite-onbind.test.ts',
  'test/unbind-signed.test.ts',
  'test/callbacks.test.ts',
  'test/replication.test.ts',
  'test/replication-push.test.ts',
  'test/replication-outbound.test.ts',
  'test/rotate-pepper.test.ts',
];

export default defineConfig({
  test: {
    pool: 'forks',
    // Most tests wait on sockets and timers, not the CPU: vitest's default (one worker fewer than the cores) ran the
    // files one at a time on a 2-core machine.
    maxWorkers: Math.max(2, availableParallelism()),
    testTimeout: 20_000,
    hookTimeout: 20_000,
    // Stops the PostgreSQL server that the first test needing one starts (test/helpers/postgres.ts).
    globalSetup: ['test/helpers/postgres-setup.ts'],
    projects: [
      { extends: true, test: { name: 'sqlite', include: ['test/**/*.test.ts'] } },
      {
        extends: true,
        test: { name: 'postgresql', include: FLOWS_ON_POSTGRESQL, env: { SYDENT_TEST_DB_ENGINE: 'postgresql' } },
      },
    ],
  },
});
