// Bundles the CLI for the bundle: dist/ferry/ferry.mjs plus lazily loaded chunks. Big libraries
// that only some commands need (the Kubernetes client, ssh2) sit in chunks loaded by import(), so
// `ferry serve` and `ferry images pull` never parse them (18 MB of code, ~60 MB of memory).
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { build } from 'esbuild';

/**
 * Ajv's standalone code for the spec schema, generated from the sources as they are now, with the
 * options src/spec/spec-validator.ts compiles with at run time. The bundle carries it instead of
 * that module, so no start loads Ajv's compiler or compiles the schema.
 */
async function specValidatorCode() {
  const gen = path.resolve('dist/.spec-validator-gen.mjs');
  await build({
    stdin: { contents: "export { SPEC_AJV_OPTIONS } from './src/spec/spec-validator.ts'; export { bundleSpecSchema } from './src/spec/schema.ts';", resolveDir: '.', loader: 'ts' },
    outfile: gen,
    bundle: true,
    packages: 'external',
    platform: 'node',
    format: 'esm',
    logLevel: 'warning',
  });
  try {
    const { SPEC_AJV_OPTIONS, bundleSpecSchema } = await import(pathToFileURL(gen).href);
    const { Ajv } = await import('ajv');
    const { default: standaloneCode } = await import('ajv/dist/standalone/index.js');
    const ajv = new Ajv({ ...SPEC_AJV_OPTIONS, code: { source: true, esm: true } });
    return `${standaloneCode(ajv, ajv.compile(bundleSpecSchema))}\nexport function specValidator() { return validate; }\n`;
  } finally {
    await rm(gen, { force: true });
  }
}

const specValidator = {
  name: 'spec-validator',
  setup(b) {
    b.onLoad({ filter: /[\\/]src[\\/]spec[\\/]spec-validator\.ts$/ }, async () => ({ contents: await specValidatorCode(), loader: 'js', resolveDir: path.resolve('src/spec') }));
  },
};

await rm('dist/ferry', { recursive: true, force: true });
await rm('dist/ferry.mjs', { force: true });
await build({
  plugins: [specValidator],
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
