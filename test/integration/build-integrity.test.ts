import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildFixtureSet } from '../../fixtures/images.js';
import { ferry } from '../helpers/cli.js';
import { miniProject, type MiniProject } from '../helpers/mini-bundle.js';
import { pushFixtures, startRegistry, tmpdir, type RegistryPeer } from '../helpers/peers.js';

/*
 * Issue 10 item 5: the build hashes every byte it writes into the archive, in the same pass, and
 * refuses to keep a bundle whose bytes are not what its signed table lists. The attack: one byte
 * flipped, same size, in what the cache holds (an image layer, a binary, the runtime).
 */
const execFileP = promisify(execFile);
let work: string;
let reg: RegistryPeer;
let p: MiniProject;
let version = 0;

beforeAll(async () => {
  work = await tmpdir('ferry-build-integrity-');
  reg = await startRegistry();
  const fx = await buildFixtureSet(path.join(work, 'fx'), 0.2);
  await pushFixtures(fx, reg.host, 'fx');
  p = await miniProject(path.join(work, 'project'), { images: [`${reg.host}/fx/single:v1`] });
  // Warm the cache: everything the later builds pack is in it.
  const first = await p.build(path.join(work, 'first.ferry.tar'));
  expect(first.stderr).not.toMatch(/error/);
  expect(first.code).toBe(0);
}, 120_000);

afterAll(async () => {
  await reg?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

/** Flips one byte in the middle of a file, keeping its size. */
async function flipByte(file: string): Promise<() => Promise<void>> {
  const good = await fs.readFile(file);
  const bad = Buffer.from(good);
  bad[Math.floor(bad.length / 2)]! ^= 0x01;
  await fs.writeFile(file, bad);
  return () => fs.writeFile(file, good);
}

/** The largest blob in the cache store: a layer. */
async function largestBlob(): Promise<string> {
  const dir = path.join(p.cache, 'oci', 'blobs', 'sha256');
  const sized = await Promise.all((await fs.readdir(dir)).filter((n) => /^[a-f0-9]{64}$/.test(n)).map(async (n) => ({ n, size: (await fs.stat(path.join(dir, n))).size })));
  return path.join(dir, sized.sort((a, b) => b.size - a.size)[0]!.n);
}

/** A new metadata version, so the build signs checksums no earlier build signed. */
async function bumpVersion(): Promise<void> {
  const text = await fs.readFile(p.specFile, 'utf8');
  await fs.writeFile(p.specFile, text.replace(/version: 0\.1\.\d+\}/, `version: 0.1.${++version}}`));
}

const corrupted: [string, () => Promise<string>][] = [
  ['an image layer in the cache store', largestBlob],
  ['a binary in the file cache', async () => path.join(p.cache, 'files', 'sha256', p.binaries.tool!)],
  ['the Node runtime in the file cache', async () => {
    const dir = path.join(p.cache, 'files', 'sha256');
    const node = (await fs.readdir(dir)).find((n) => !Object.values(p.binaries).includes(n))!;
    return path.join(dir, node);
  }],
];

describe('the build hashes what it writes and refuses bytes that do not match what it signs', () => {
  it.each(corrupted)('one flipped byte in %s fails the build, names the file, and leaves no bundle, temp file or signature', async (_what, target) => {
    const file = await target();
    const restore = await flipByte(file);
    try {
      await bumpVersion();
      const sigs = path.join(p.cache, 'signatures');
      const sigsBefore = await fs.readdir(sigs);
      for (const split of [false, true]) {
        const out = path.join(work, `bad-${version}-${split}`, 'mini.ferry.tar');
        const r = await p.build(out, split ? ['--split-size', '200k'] : []);
        expect(r.code, r.stderr).toBe(5);
        expect(r.stderr).toContain('error[BUNDLE_INPUT_MISMATCH]');
        expect(r.stderr).toContain(file);
        expect(r.stderr).toContain(`Remove ${file}`);
        // Nothing that looks like a bundle, no part, no temp file: the output directory is empty.
        expect(await fs.readdir(path.dirname(out))).toEqual([]);
      }
      // No signature over checksums that were never computed outlives the build.
      expect(await fs.readdir(sigs)).toEqual(sigsBefore);
    } finally {
      await restore();
    }
  });

  it('builds again once the corrupt file is removed, as the hint says, and the bundle verifies', async () => {
    const layer = await largestBlob();
    await flipByte(layer);
    await bumpVersion();
    const bad = await p.build(path.join(work, 'again', 'x.ferry.tar'));
    expect(bad.code).toBe(5);
    await fs.rm(layer);
    const out = path.join(work, 'again', 'mini.ferry.tar');
    const good = await p.build(out, ['--split-size', '200k']);
    expect(good.code, good.stderr).toBe(0);
    const v = await ferry(['bundle', 'verify', `${out}.parts.json`, '--trust', p.pub], { env: p.env });
    expect(v.code, v.stderr).toBe(0);
  });
});

describe('a local runtime override is hashed again only when it changed', () => {
  it('carries the new bytes of an override rewritten in place with the same size', async () => {
    const node = path.join(p.dir, 'vendor', 'node');
    const before = await p.build(path.join(work, 'memo-1', 'mini.ferry.tar'));
    expect(before.code, before.stderr).toBe(0);
    const restore = await flipByte(node);
    try {
      const out = path.join(work, 'memo-2', 'mini.ferry.tar');
      const r = await p.build(out);
      expect(r.code, r.stderr).toBe(0);
      const manifest = JSON.parse((await execFileP('tar', ['-xOf', out, 'bundle.json'], { maxBuffer: 16 << 20 })).stdout) as { runtime: { sha256: string }[] };
      expect(manifest.runtime[0]!.sha256).toBe(createHash('sha256').update(await fs.readFile(node)).digest('hex'));
      const v = await ferry(['bundle', 'verify', out, '--trust', p.pub], { env: p.env });
      expect(v.code, v.stderr).toBe(0);
    } finally {
      await restore();
    }
  });
});
