import { defineConfig } from 'vitest/config';

// The site suite: real Kubernetes on namespace hosts (npm run site). One file at a time: a site
// takes the whole machine.
export default defineConfig({
  test: {
    include: ['test/site/**/*.test.ts'],
    testTimeout: 600_000,
    hookTimeout: 3_600_000,
    fileParallelism: false,
    maxWorkers: 1,
    minWorkers: 1,
    reporters: ['default', './test/helpers/summary-reporter.ts'],
  },
});
