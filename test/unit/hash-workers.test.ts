import { createHash, generateKeyPairSync } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { unpackBundle } from '../../src/bundle/unpack.js';
import { verifyBundle } from '../../src/bundle/verify.js';
import { signedTable, tarOf, type RawEntry } from '../../fixtures/hostile.js';
import { randomChunks } from '../../fixtures/images.js';
import { HashWorkers } from '../../src/util/hash-workers.js';
import { tmpdir } from '../helpers/peers.js';

const key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const bytes = (seed: string, n: number) => Buffer.concat([...randomChunks(seed, n)]);

// Entries above the inline limit (256 KiB), so they are hashed on the worker threads.
const big = [0, 1, 2, 3].map((i) => ({ path: `files/big${i}`, data: bytes(`big${i}`, (3 << 20) + i * 4099) }));

async function bundleOf(dir: string, name: string, content: { path: string; data: Buffer }[], body: RawEntry[], end = true): Promise<string> {
  const file = path.join(dir, name);
  await fs.writeFile(file, tarOf([...signedTable(key.privateKey, content), ...body], end));
  return file;
}
const honestBody = big.map((c) => ({ name: c.path, data: c.data }));
const tampered = honestBody.map((e, i) => (i === 1 ? { ...e, data: Buffer.from(e.data).fill(7, 1 << 20, (1 << 20) + 1) } : e));

describe('entries hashed on worker threads', () => {
  it('give the digest one thread would, however the bytes are chunked and interleaved', async () => {
    const w = new HashWorkers({ workers: 2, slots: 2 });
    try {
      const hs = big.map((c) => w.entry(c.data.length));
      for (let off = 0; off < big[3]!.data.length; off += 700_001) {
        for (const [i, c] of big.entries()) await hs[i]!.update(c.data.subarray(off, off + 700_001));
      }
      expect(await Promise.all(hs.map((h) => h.digest()))).toEqual(big.map((c) => sha(c.data)));
    } finally {
      await w.close();
    }
  });

  it('hash bytes read into a leased slot in place, and hand the slot out again only once they are hashed', async () => {
    const w = new HashWorkers({ workers: 1, slots: 1, slotBytes: 1 << 20 });
    try {
      const data = big[0]!.data;
      const h = w.entry(data.length);
      for (let off = 0; off < data.length; off += 1 << 20) {
        const slot = await w.lease();
        const n = data.copy(slot.buf, 0, off);
        await h.update(slot.buf.subarray(0, n));
        slot.release();
        // The one slot again: were it handed out before the worker hashed it, this would change what it hashes.
        const again = await w.lease();
        again.buf.fill(0xee);
        again.release();
      }
      expect(await h.digest()).toBe(sha(data));
    } finally {
      await w.close();
    }
  });

  it('hash on the calling thread with no workers, with the same digests', async () => {
    const w = new HashWorkers({ workers: 0, slots: 1 });
    try {
      const h = w.entry(big[1]!.data.length);
      const slot = await w.lease();
      const n = big[1]!.data.copy(slot.buf);
      await h.update(slot.buf.subarray(0, n));
      slot.release();
      await h.update(big[1]!.data.subarray(n));
      expect(await h.digest()).toBe(sha(big[1]!.data));
    } finally {
      await w.close();
    }
  });

  it('verify and unpack a bundle of large entries', async () => {
    const dir = await tmpdir();
    const file = await bundleOf(dir, 'ok.tar', big, honestBody);
    expect((await verifyBundle(file, { trust: key.publicKey })).entries).toBe(big.length + 3);
    await unpackBundle(file, path.join(dir, 'out'), { trust: key.publicKey });
    expect(sha(await fs.readFile(path.join(dir, 'out', 'files', 'big2')))).toBe(sha(big[2]!.data));
  });

  it.each([
    ['alone', [] as RawEntry[], true],
    ['followed by an unlisted entry', [{ name: 'files/extra', data: Buffer.from('x') }], true],
    ['followed by a cut', [], false],
  ])('refuse a tampered entry with BUNDLE_CHECKSUM_MISMATCH, %s: the earlier check still wins', async (_what, after, end) => {
    const dir = await tmpdir();
    const file = await bundleOf(dir, 'bad.tar', big, [...tampered, ...after], end);
    await expect(verifyBundle(file, { trust: key.publicKey })).rejects.toMatchObject({ code: 'BUNDLE_CHECKSUM_MISMATCH', message: expect.stringContaining('files/big1') });
    await expect(unpackBundle(file, path.join(dir, 'site', 'bundle'), { trust: key.publicKey })).rejects.toMatchObject({ code: 'BUNDLE_CHECKSUM_MISMATCH' });
    expect(await fs.readdir(path.join(dir, 'site'))).toEqual([]);
  });
});
