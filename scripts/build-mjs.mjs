// Bundles the CLI into one ESM file, dist/ferry.mjs, the copy of ferry that bundles carry.
import { build } from 'esbuild';

await build({
  entryPoints: ['src/cli/entry.ts'],
  outfile: 'dist/ferry.mjs',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  legalComments: 'none',
  // ssh2's native speedups are optional (it falls back to pure JS); a bundle cannot carry them.
  external: ['*.node', 'cpu-features'],
  logLevel: 'warning',
  // CommonJS dependencies call require() and read __dirname; give the ESM bundle both.
  banner: {
    js: [
      "import { createRequire as __ferryRequire } from 'node:module';",
      "import { fileURLToPath as __ferryPath } from 'node:url';",
      "import { dirname as __ferryDir } from 'node:path';",
      'const require = __ferryRequire(import.meta.url);',
      'const __filename = __ferryPath(import.meta.url);',
      'const __dirname = __ferryDir(__filename);',
    ].join(' '),
  },
});
