// Bundles the CLI for the bundle: dist/ferry/ferry.mjs plus lazily loaded chunks. Big libraries
// that only some commands need (the Kubernetes client, ssh2) sit in chunks loaded by import(), so
// `ferry serve` and `ferry images pull` never parse them (18 MB of code, ~60 MB of memory).
import { rm } from 'node:fs/promises';
import { build } from 'esbuild';

await rm('dist/ferry', { recursive: true, force: true });
await rm('dist/ferry.mjs', { force: true });
await build({
  entryPoints: { ferry: 'src/cli/entry.ts' },
  outdir: 'dist/ferry',
  outExtension: { '.js': '.mjs' },
  entryNames: '[name]',
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  splitting: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  legalComments: 'none',
  logLevel: 'warning',
  // ssh2's native speedups are optional (it falls back to pure JS); a bundle cannot carry them.
  external: ['*.node', 'cpu-features'],
  // CommonJS dependencies call require() and read __dirname; give every ESM chunk both.
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
