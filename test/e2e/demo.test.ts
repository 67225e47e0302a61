import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/cli.js';
import { execFileP, tmpdir } from '../helpers/peers.js';

describe("the README's first command", () => {
  it('runs the embedded demo end to end with no internet: push, lock, pull, build, verify', async () => {
    // Its own directory: demo-out/ holds the user's demo key and bundle.
    const out = await tmpdir('ferry-demo-');
    const userDemo = path.join(ROOT, 'demo-out');
    // Names and mtimes: a run into demo-out/ would replace its files.
    const snapshot = async () => {
      const names = await fs.readdir(userDemo, { recursive: true }).catch(() => [] as string[]);
      return Promise.all(names.sort().map(async (n) => [n, (await fs.lstat(path.join(userDemo, n))).mtimeMs]));
    };
    const before = await snapshot();
    // unshare -n leaves only loopback: anything reaching beyond this machine would fail.
    const { stdout } = await new Promise<{ stdout: string }>((resolve, reject) =>
      execFile('unshare', ['-n', 'sh', '-c', `ip link set lo up && ${ROOT}/node_modules/.bin/tsx scripts/demo.ts --out ${out}`], { cwd: ROOT, maxBuffer: 32 << 20, timeout: 240_000 }, (err, out, errOut) =>
        err ? reject(new Error(`${err.message}\n${out}\n${errOut}`)) : resolve({ stdout: out }),
      ),
    );
    expect(stdout).toMatch(/fetched 0 blobs \(0 B\), \d+ already present/);
    expect(stdout).toMatch(/demo-0\.1\.0\.ferry\.tar: ok — demo 0\.1\.0, \d+ entries/);
    // After it, the newcomer learns the demo bundle installs nothing, and where the site side is.
    expect(stdout).toMatch(/This demo bundle is connected-side only: .* no Kubernetes,\nso `ferry install` on it refuses \(INSTALL_REFUSED\)/);
    expect(stdout).toMatch(/npm run site -- up +# the first run builds Kubernetes and its components from source: tens of/);
    const bundle = path.join(out, 'demo-0.1.0.ferry.tar');
    const { stdout: listing } = await execFileP('tar', ['-tf', bundle]);
    expect(listing.split('\n').slice(0, 3)).toEqual(['bundle.json', 'checksums.txt', 'checksums.txt.sig']);
    expect((await fs.stat(path.join(out, 'store', 'index.json'))).isFile()).toBe(true);
    expect(await snapshot()).toEqual(before);
    await fs.rm(out, { recursive: true, force: true });
  }, 300_000);
});
