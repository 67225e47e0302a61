import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    // The real cluster runs in its own suite (npm run test:site, vitest.site.config.ts).
    exclude: ['test/site/**', 'node_modules/**'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Real peers (registries, containerd) are heavy on a 2-core machine; files run two at a time.
    maxWorkers: 2,
    minWorkers: 1,
    reporters: ['default', './test/helpers/summary-reporter.ts'],
    globalSetup: ['./test/helpers/global-setup.ts'],
    setupFiles: ['./test/helpers/cleanup.ts'],
  },
});
