import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/cli.js';
import { execFileP, tmpdir } from '../helpers/peers.js';

/*
 * Issue 21 item 1: the bundled ferry (dist/ferry, as a bundle carries it) looks up no module outside
 * itself. The Kubernetes client asks for supports-color, bufferutil, utf-8-validate and encoding,
 * ssh2 for cpu-features and its sshcrypto.node, each inside try/catch; left to Node, each would be
 * looked up in every node_modules beside and above the chunk. Every one is planted here, in
 * ferry/node_modules, ferry/chunks/node_modules and a node_modules above the tree (sshcrypto.node
 * as a real shared object whose constructor leaves a mark), and every chunk is loaded.
 */
const OPTIONAL = ['supports-color', 'bufferutil', 'utf-8-validate', 'encoding', 'cpu-features'];

let work: string;
let tree: string;
let mark: string;

beforeAll(async () => {
  work = await tmpdir('ferry-lookups-');
  tree = path.join(work, 'site', 'ferry');
  mark = path.join(work, 'marks');
  await fs.cp(path.join(ROOT, 'dist', 'ferry'), tree, { recursive: true });
  for (const base of [path.join(tree, 'node_modules'), path.join(tree, 'chunks', 'node_modules'), path.join(work, 'site', 'node_modules'), path.join(work, 'node_modules')]) {
    for (const n of OPTIONAL) {
      await fs.mkdir(path.join(base, n), { recursive: true });
      await fs.writeFile(path.join(base, n, 'index.js'), `require('fs').appendFileSync(${JSON.stringify(mark)}, ${JSON.stringify(`${n} from ${base}`)} + '\\n'); module.exports = () => ({});\n`);
    }
  }
  const c = path.join(work, 'so.c');
  await fs.writeFile(c, `#include <stdio.h>\n#include <stdlib.h>\n__attribute__((constructor)) static void ran(void) { FILE *f = fopen(${JSON.stringify(mark)}, "a"); if (f) { fputs("sshcrypto.node\\n", f); fclose(f); } }\n`);
  const release = path.join(tree, 'chunks', 'crypto', 'build', 'Release');
  await fs.mkdir(release, { recursive: true });
  await execFileP('gcc', ['-shared', '-fPIC', '-o', path.join(release, 'sshcrypto.node'), c]);
}, 60_000);

afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

describe('the bundled ferry', () => {
  it('loads no module from outside itself when every chunk loads, whatever node_modules lie beside or above it', async () => {
    // Every module resolution any chunk asks Node for is recorded; only Node's own may be asked for.
    const probe = path.join(work, 'probe.mjs');
    await fs.writeFile(
      probe,
      `import Module, { isBuiltin } from 'node:module';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
const asked = [];
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  if (!isBuiltin(request)) asked.push(request);
  return resolve.call(this, request, ...rest);
};
const dir = ${JSON.stringify(path.join(tree, 'chunks'))};
for (const f of readdirSync(dir).filter((f) => f.endsWith('.mjs')).sort()) await import(join(dir, f));
writeFileSync(${JSON.stringify(path.join(work, 'asked.json'))}, JSON.stringify(asked));
`,
    );
    await execFileP(process.execPath, [probe], { cwd: path.join(work, 'site') });
    expect(JSON.parse(await fs.readFile(path.join(work, 'asked.json'), 'utf8'))).toEqual([]);
    await expect(fs.readFile(mark, 'utf8')).rejects.toThrow();
  });

  it('carries each optional module as a part of itself that says it is absent', async () => {
    const text = (await Promise.all((await fs.readdir(path.join(tree, 'chunks'))).filter((f) => f.endsWith('.mjs')).map((f) => fs.readFile(path.join(tree, 'chunks', f), 'utf8')))).join('\n');
    for (const n of [...OPTIONAL, './crypto/build/Release/sshcrypto.node']) {
      expect(text).not.toContain(`__require("${n}")`);
      expect(text).toContain(`Cannot find module '${n}': the bundled ferry carries no copy of it`);
    }
  });

  it('refuses to start, before any chunk loads, from a directory holding a file its list does not name', async () => {
    const run = () => execFileP(process.execPath, [path.join(tree, 'ferry.mjs'), '--version']).then(() => 0, (e: { code?: number; stderr?: string }) => ({ code: e.code, stderr: e.stderr ?? '' }));
    // The planted node_modules of this file make the tree one ferry will not run from.
    const r = await run();
    expect(r).toMatchObject({ code: 5 });
    expect((r as { stderr: string }).stderr).toContain('error[FERRY_TREE_UNLISTED]');
    expect((r as { stderr: string }).stderr).toContain('node_modules/supports-color/index.js');
    await expect(fs.readFile(mark, 'utf8')).rejects.toThrow();
    // Without them it starts.
    const clean = path.join(work, 'clean');
    await fs.cp(path.join(ROOT, 'dist', 'ferry'), clean, { recursive: true });
    const ok = await execFileP(process.execPath, [path.join(clean, 'ferry.mjs'), '--version']);
    expect(ok.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    await fs.writeFile(path.join(clean, 'chunks', 'chunk-LEFTOVER.mjs'), 'export {};\n');
    await expect(execFileP(process.execPath, [path.join(clean, 'ferry.mjs'), '--version'])).rejects.toMatchObject({ code: 5 });
  });
});
