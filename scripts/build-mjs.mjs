// Bundles the CLI for the bundle: dist/ferry/ferry.mjs plus lazily loaded chunks. Big libraries
// that only some commands need (the Kubernetes client, ssh2) sit in chunks loaded by import(), so
// `ferry serve` and `ferry images pull` never parse them (18 MB of code, ~60 MB of memory).
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { build } from 'esbuild';

/**
 * Ajv's standalone code for ferry's document schemas (the spec's, the answers'), generated from the
 * sources as they are now, with the options src/spec/spec-validator.ts compiles with at run time.
 * The bundle carries it instead of those modules, so no start loads Ajv's compiler or compiles a schema.
 */
const VALIDATORS = [
  { module: /[\\/]src[\\/]spec[\\/]spec-validator\.ts$/, schema: 'bundleSpecSchema', from: './src/spec/schema.ts', fn: 'specValidator' },
  { module: /[\\/]src[\\/]spec[\\/]answers-validator\.ts$/, schema: 'answersSchema', from: './src/spec/answers.ts', fn: 'answersValidator' },
];

async function validatorCode(v) {
  const gen = path.resolve(`dist/.${v.fn}-gen.mjs`);
  await build({
    stdin: { contents: `export { SPEC_AJV_OPTIONS } from './src/spec/spec-validator.ts'; export { ${v.schema} } from '${v.from}';`, resolveDir: '.', loader: 'ts' },
    outfile: gen,
    bundle: true,
    packages: 'external',
    platform: 'node',
    format: 'esm',
    logLevel: 'warning',
  });
  try {
    const mod = await import(pathToFileURL(gen).href);
    const { Ajv } = await import('ajv');
    const { default: standaloneCode } = await import('ajv/dist/standalone/index.js');
    const ajv = new Ajv({ ...mod.SPEC_AJV_OPTIONS, code: { source: true, esm: true } });
    return `${standaloneCode(ajv, ajv.compile(mod[v.schema]))}\nexport function ${v.fn}() { return validate; }\n`;
  } finally {
    await rm(gen, { force: true });
  }
}

const specValidator = {
  name: 'spec-validator',
  setup(b) {
    for (const v of VALIDATORS) b.onLoad({ filter: v.module }, async () => ({ contents: await validatorCode(v), loader: 'js', resolveDir: path.resolve('src/spec') }));
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
