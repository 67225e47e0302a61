import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { promises as fs, statfsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signedTable, tarOf, type RawEntry } from '../../fixtures/hostile.js';
import { unpackBundle } from '../../src/bundle/unpack.js';
import { loadPublicKey } from '../../src/sign/keys.js';
import { silentReporter } from '../../src/util/progress.js';
import { ferry } from '../helpers/cli.js';
import { listTree, miniProject, type MiniProject } from '../helpers/mini-bundle.js';
import { tmpdir } from '../helpers/peers.js';

/*
 * Issue 10 item 14: each failure gets the code that says what to do. A host that cannot take the
 * bytes (disk full, no inodes, read-only) is an io failure, exit 6, not "do not use this bundle";
 * entries that cannot all be files are the bundle's fault, each with its own code.
 */
let work: string;
let p: MiniProject;
let bundle: string;
const mounts: string[] = [];

/** A tmpfs of our own, as small as the test needs (root only). */
async function tmpfs(name: string, opts: string): Promise<string> {
  const dir = path.join(work, name);
  await fs.mkdir(dir, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', opts, 'tmpfs', dir]);
  mounts.push(dir);
  return dir;
}

beforeAll(async () => {
  work = await tmpdir('ferry-codes-');
  p = await miniProject(path.join(work, 'project'), { binaries: Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`tool${i}`, 50_000])) });
  bundle = path.join(work, 'mini.ferry.tar');
  const b = await p.build(bundle);
  expect(b.code, b.stderr).toBe(0);
}, 120_000);

afterAll(async () => {
  for (const m of mounts.reverse()) execFileSync('umount', ['-l', m]);
  await fs.rm(work, { recursive: true, force: true });
});

describe('a host that cannot take the bundle is an io failure (exit 6), not a bad bundle', () => {
  it('no inodes left during unpack: STORE_IO, exit 6, and nothing left behind', async () => {
    const disk = await tmpfs('noinodes', 'size=128m,nr_inodes=16');
    const u = await ferry(['bundle', 'unpack', bundle, '--to', path.join(disk, 'bundle'), '--trust', p.pub]);
    expect(u.stderr).toContain('error[STORE_IO]');
    expect(u.stderr).toMatch(/ENOSPC/);
    expect(u.stderr).toContain('disk is full');
    expect(u.code).toBe(6);
    expect(await listTree(disk)).toEqual([]);
  });

  it('the disk fills while the bundle is unpacked: STORE_IO, exit 6, and the staging directory is gone', async () => {
    const disk = await tmpfs('fills', 'size=128m');
    let filled = false;
    // Another writer takes the free space once unpack is past its preflight.
    const reporter = {
      ...silentReporter,
      blobStart() {
        if (filled) return;
        filled = true;
        const free = Number(statfsSync(disk).bavail) * Number(statfsSync(disk).bsize);
        try {
          writeFileSync(path.join(disk, 'filler'), Buffer.alloc(free));
        } catch {
          /* full: what we wanted */
        }
      },
    };
    const err = await unpackBundle(bundle, path.join(disk, 'bundle'), { trust: await loadPublicKey(p.pub), reporter }).then(
      () => expect.unreachable(),
      (e: unknown) => e as { code: string; exit: string; message: string },
    );
    expect(filled).toBe(true);
    expect(err).toMatchObject({ code: 'STORE_IO', exit: 'io' });
    expect(err.message).toMatch(/ENOSPC/);
    expect(await fs.readdir(disk)).toEqual(['filler']);
  });

  it.each([
    ['an earlier unpack on a filesystem now read-only', 'bundle'],
    ['a directory to create below a read-only one', 'deeper/bundle'],
  ])('a read-only target (%s): STORE_IO with a read-only hint, exit 6', async (_what, rel) => {
    const disk = await tmpfs(`ro-${rel.replace('/', '-')}`, 'size=128m');
    expect((await ferry(['bundle', 'unpack', bundle, '--to', path.join(disk, 'bundle'), '--trust', p.pub])).code).toBe(0);
    // A re-unpack with work to do: bundle.json is gone (over a complete tree of the same bundle it would do nothing).
    await fs.rm(path.join(disk, 'bundle', 'bundle.json'));
    execFileSync('mount', ['-o', 'remount,ro', disk]);
    const u = await ferry(['bundle', 'unpack', bundle, '--to', path.join(disk, rel), '--trust', p.pub, '--json']);
    expect(u.stderr).toContain('error[STORE_IO]');
    expect(u.stderr).toMatch(/EROFS/);
    expect(u.stderr).toContain('read-only');
    expect(u.code).toBe(6);
  });
});

describe('entries that cannot all be files are refused by their own code, in verify and unpack', () => {
  const key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const honest = [{ path: 'install.sh', data: Buffer.from('#!/bin/sh\n') }];

  /** A correctly signed archive of `content`, entries written in the order given. */
  async function signed(name: string, content: { path: string; data: Buffer }[]): Promise<string> {
    const file = path.join(work, `${name}.tar`);
    const entries: RawEntry[] = [...signedTable(key.privateKey, content), ...content.map((c) => ({ name: c.path, data: c.data }))];
    await fs.writeFile(file, tarOf(entries));
    await fs.writeFile(path.join(work, `${name}.pub`), key.publicKey.export({ type: 'spki', format: 'pem' }) as string);
    return file;
  }

  const cases: [string, string, { path: string; data: Buffer }[]][] = [
    ['a file, then a file below it', 'BUNDLE_ENTRY_CONFLICT', [...honest, { path: 'files/a', data: Buffer.from('1') }, { path: 'files/a/b', data: Buffer.from('2') }]],
    ['a file below another, then that file', 'BUNDLE_ENTRY_CONFLICT', [...honest, { path: 'files/a/b', data: Buffer.from('2') }, { path: 'files/a', data: Buffer.from('1') }]],
    ['a file deep below another', 'BUNDLE_ENTRY_CONFLICT', [...honest, { path: 'files/a', data: Buffer.from('1') }, { path: 'files/a/b/c/d', data: Buffer.from('2') }]],
    ['a file below bundle.json', 'BUNDLE_ENTRY_CONFLICT', [...honest, { path: 'bundle.json/x', data: Buffer.from('1') }]],
    ['a file below checksums.txt.sig', 'BUNDLE_ENTRY_CONFLICT', [...honest, { path: 'checksums.txt.sig/x', data: Buffer.from('1') }]],
    ['a file whose name ends in a slash', 'BUNDLE_PATH_TRAVERSAL', [...honest, { path: 'files/x/', data: Buffer.from('1') }]],
  ];

  it.each(cases)('%s → %s (exit 5)', async (name, code, content) => {
    const file = await signed(name.replace(/\W+/g, '-'), content);
    const pub = file.replace(/\.tar$/, '.pub');
    const v = await ferry(['bundle', 'verify', file, '--trust', pub]);
    expect(v.stderr).toContain(`error[${code}]`);
    expect(v.code).toBe(5);
    const to = path.join(work, 'site', name.replace(/\W+/g, '-'));
    const u = await ferry(['bundle', 'unpack', file, '--to', to, '--trust', pub]);
    expect(u.stderr).toContain(`error[${code}]`);
    expect(u.code).toBe(5);
    expect(await listTree(path.join(work, 'site'))).toEqual([]);
  });

  it('an unlisted entry whose name ends in a slash is refused for its name', async () => {
    const file = path.join(work, 'unlisted-slash.tar');
    await fs.writeFile(file, tarOf([...signedTable(key.privateKey, honest), { name: 'install.sh', data: honest[0]!.data }, { name: 'zz/', data: Buffer.from('x') }]));
    await fs.writeFile(path.join(work, 'unlisted-slash.pub'), key.publicKey.export({ type: 'spki', format: 'pem' }) as string);
    const v = await ferry(['bundle', 'verify', file, '--trust', path.join(work, 'unlisted-slash.pub')]);
    expect(v.stderr).toContain('error[BUNDLE_PATH_TRAVERSAL]');
    expect(v.code).toBe(5);
  });
});
