import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FERRY_VERSION } from '../../src/bundle/format.js';
import { renderLauncher } from '../../src/install/launcher.js';
import { FERRY_DIR, FERRY_LAUNCHER, FERRY_MJS, RUNTIME_NODE } from '../../src/install/paths.js';
import { ROOT } from '../helpers/cli.js';
import { tmpdir } from '../helpers/peers.js';

/*
 * `ferry` on every node's PATH: the launcher runs the installed ferry.mjs with the bundled runtime.
 * Here under a temp root, with this machine's node as the runtime and the built dist/ferry.
 */

let root: string;
const at = (p: string) => path.join(root, p);

function run(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => execFile('sh', [file, ...args], { timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr })));
}

beforeAll(async () => {
  root = await tmpdir('ferry-launcher-');
  await fs.mkdir(path.dirname(at(RUNTIME_NODE)), { recursive: true });
  await fs.symlink(process.execPath, at(RUNTIME_NODE));
  await fs.cp(path.join(ROOT, 'dist/ferry'), at(FERRY_DIR), { recursive: true });
  await fs.mkdir(path.dirname(at(FERRY_LAUNCHER)), { recursive: true });
  await fs.writeFile(at(FERRY_LAUNCHER), renderLauncher({ node: at(RUNTIME_NODE), ferry: at(FERRY_MJS) }), { mode: 0o755 });
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

describe('the ferry launcher', () => {
  it('runs the installed ferry from the path constants, with the quiet-deprecation options', () => {
    expect(renderLauncher()).toBe(
      '#!/bin/sh\n# Written by ferry: the installed ferry with its bundled runtime.\nexec /var/lib/ferry/runtime/node --disable-warning=DEP0040 --disable-warning=DEP0169 /var/lib/ferry/ferry/ferry.mjs "$@"\n',
    );
  });

  it('answers --version with the installed ferry on the runtime', async () => {
    const r = await run(at(FERRY_LAUNCHER), ['--version']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(FERRY_VERSION);
    expect(r.stderr).toBe('');
  });

  it('silences DEP0040 and DEP0169 only, and passes every argument on as it was given', async () => {
    // A stand-in ferry.mjs that raises the two warnings ferry's dependencies cause on Node 24, and one that must still show.
    const script = path.join(root, 'warns.mjs');
    await fs.writeFile(
      script,
      "for (const code of ['DEP0040', 'DEP0169', 'DEP0005']) process.emitWarning(`test ${code}`, { type: 'DeprecationWarning', code });\nconsole.log(JSON.stringify(process.argv.slice(2)));\n",
    );
    const launcher = path.join(root, 'warns-launcher');
    await fs.writeFile(launcher, renderLauncher({ node: at(RUNTIME_NODE), ferry: script }), { mode: 0o755 });
    const r = await run(launcher, ['status', 'two words', "it's"]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(['status', 'two words', "it's"]);
    expect(r.stderr).not.toMatch(/DEP0040|DEP0169/);
    expect(r.stderr).toMatch(/DEP0005/);
  });
});
