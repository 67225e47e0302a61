// Bundles the CLI for the bundle: dist/ferry/ferry.mjs plus lazily loaded chunks. Big libraries
// that only some commands need (the Kubernetes client, ssh2) sit in chunks loaded by import(), so
// `ferry serve` and `ferry images pull` never parse them (18 MB of code, ~60 MB of memory).
import { createHash } from 'node:crypto';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { builtinModules } from 'node:module';
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

/**
 * Optional modules the bundled libraries ask for inside try/catch: the Kubernetes client's
 * supports-color (debug), bufferutil and utf-8-validate (ws) and encoding (node-fetch), ssh2's
 * cpu-features and its sshcrypto.node. Left to require() at run time, Node would look them up in
 * every node_modules beside and above the bundle, so any such directory on a site could run code as
 * root. Each becomes a module in the bundle that throws MODULE_NOT_FOUND, as the libraries expect
 * when it is absent; any other require() esbuild cannot resolve does too, and the check below
 * fails the build if any import still leaves the bundle.
 */
const ABSENT = /^(supports-color|bufferutil|utf-8-validate|encoding|cpu-features)$|\.node$/;
const BUILTIN = new Set(builtinModules);
const isBuiltin = (p) => p.startsWith('node:') || BUILTIN.has(p);
const absentModules = {
  name: 'absent-modules',
  setup(b) {
    b.onResolve({ filter: ABSENT }, (a) => ({ path: a.path, namespace: 'ferry-absent' }));
    b.onResolve({ filter: /.*/ }, async (a) => {
      if (a.pluginData?.ferryResolving || a.kind !== 'require-call' || isBuiltin(a.path)) return undefined;
      const r = await b.resolve(a.path, { kind: a.kind, importer: a.importer, resolveDir: a.resolveDir, namespace: a.namespace, pluginData: { ferryResolving: true } });
      return r.errors.length ? { path: a.path, namespace: 'ferry-absent' } : r;
    });
    b.onLoad({ filter: /.*/, namespace: 'ferry-absent' }, (a) => ({
      contents: `throw Object.assign(new Error(${JSON.stringify(`Cannot find module '${a.path}': the bundled ferry carries no copy of it`)}), { code: 'MODULE_NOT_FOUND' });`,
      loader: 'js',
    }));
  },
};

/** The list of the bundled ferry's files that its guard (GUARD) checks its directory against. */
const FILES_LIST = 'ferry.files';
const MAIN = 'main.mjs';

/**
 * dist/ferry/ferry.mjs: the bundled ferry's first code. Before any chunk loads it refuses a file in
 * its directory that ferry.files does not name (a planted node_modules, a chunk left from an older
 * ferry), and, in an unpacked bundle, a file under runtime/ that checksums.txt does not list.
 * Only Node's own modules are used here.
 */
const GUARD = `// The bundled ferry's guard: nothing but the files ferry.files names may be loaded from here.
import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
const here = dirname(fileURLToPath(import.meta.url));
const names = (text) => new Set(text.split('\\n').filter(Boolean).map((l) => l.slice(66)));
function unlisted(root, listed, prefix, out) {
  const walk = (rel) => {
    for (const e of readdirSync(join(root, rel), { withFileTypes: true })) {
      const r = rel ? rel + '/' + e.name : e.name;
      if (e.isDirectory()) walk(r);
      else if (!e.isFile() || !listed.has(prefix + r)) out.push(prefix + r);
    }
  };
  walk('');
  return out;
}
let bad = [];
try {
  bad = unlisted(here, names(readFileSync(join(here, '${FILES_LIST}'), 'utf8')), '', []).filter((f) => f !== '${FILES_LIST}');
  const top = dirname(here);
  let table;
  try { table = readFileSync(join(top, 'checksums.txt'), 'utf8'); } catch {}
  if (table !== undefined && lstatSync(join(top, 'ferry')).isDirectory() && join(top, 'ferry') === here) {
    let rt = false;
    try { rt = lstatSync(join(top, 'runtime')).isDirectory(); } catch {}
    if (rt) unlisted(join(top, 'runtime'), names(table), 'runtime/', bad);
  }
} catch (e) {
  bad = [String(e && e.message || e)];
}
if (bad.length) {
  process.stderr.write('error[FERRY_TREE_UNLISTED]: ' + here + ' holds files the bundle does not list, so ferry will not run from it: ' + bad.slice(0, 5).join(', ') + (bad.length > 5 ? ' and ' + (bad.length - 5) + ' more' : '') + '\\n' +
    'hint: Remove them, or extract the bundle again into an empty directory and run the openssl and sha256sum steps that ferry bundle build printed.\\n');
  process.exit(5);
}
await import('./${MAIN}');
`;

await rm('dist/ferry', { recursive: true, force: true });
await rm('dist/ferry.mjs', { force: true });
const out = await build({
  plugins: [specValidator, absentModules],
  metafile: true,
  entryPoints: { [MAIN.replace(/\.mjs$/, '')]: 'src/cli/entry.ts' },
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

// No import or require() may leave the bundle but for Node's own modules.
const leaving = Object.entries(out.metafile.outputs).flatMap(([file, o]) => o.imports.filter((i) => i.external && !isBuiltin(i.path)).map((i) => `${file}: ${i.kind} ${i.path}`));
if (leaving.length) throw new Error(`the bundled ferry would look these up outside itself:\n${leaving.join('\n')}`);
await writeFile('dist/ferry/ferry.mjs', GUARD);
const files = [];
const walk = async (rel) => {
  for (const e of await readdir(path.join('dist/ferry', rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) await walk(r);
    else files.push(`${createHash('sha256').update(await readFile(path.join('dist/ferry', r))).digest('hex')}  ${r}`);
  }
};
await walk('');
await writeFile(`dist/ferry/${FILES_LIST}`, `${files.sort((a, b) => (a.slice(66) < b.slice(66) ? -1 : 1)).join('\n')}\n`);
