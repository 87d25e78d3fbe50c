import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 20_000,
    hookTimeout: 20_000,
    // Stops the PostgreSQL server that the first test needing one starts (test/helpers/postgres.ts).
    globalSetup: ['test/helpers/postgres-setup.ts'],
  },
});
