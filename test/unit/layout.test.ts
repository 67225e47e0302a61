import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BlobWriter, Layout } from '../../src/oci/layout.js';
import { sha256 } from '../../src/util/digest.js';
import { tmpdir } from '../helpers/peers.js';

const desc = (data: Buffer) => ({ mediaType: 'application/octet-stream', digest: sha256(data), size: data.length });

describe('the layout store', () => {
  it('makes a blob visible only after its digest and size check out', async () => {
    const store = await Layout.open(await tmpdir());
    const data = Buffer.from('hello layers');
    const w = store.writer(desc(data));
    await w.write(data.subarray(0, 5));
    expect(await store.hasBlob(sha256(data))).toBe(false);
    await w.write(data.subarray(5));
    await w.commit();
    expect(await fs.readFile(store.blobPath(sha256(data)), 'utf8')).toBe('hello layers');
  });

  it('refuses more bytes than the descriptor states, before writing them', async () => {
    const store = await Layout.open(await tmpdir());
    const data = Buffer.from('0123456789');
    const w = store.writer({ ...desc(data), size: 4 });
    await expect(w.write(data)).rejects.toMatchObject({ code: 'SIZE_MISMATCH' });
    await w.abort();
    expect(await fs.readdir(path.join(store.dir, 'blobs', 'sha256'))).toEqual([]);
  });

  it('refuses a short blob and leaves no temp file', async () => {
    const store = await Layout.open(await tmpdir());
    const data = Buffer.from('0123456789');
    const w = store.writer(desc(data));
    await w.write(data.subarray(0, 3));
    await expect(w.commit()).rejects.toMatchObject({ code: 'SIZE_MISMATCH', hint: expect.stringContaining('re-run') });
    expect(await fs.readdir(path.join(store.dir, 'blobs', 'sha256'))).toEqual([]);
  });

  it('keeps every name when many writers add refs at once', async () => {
    const store = await Layout.open(await tmpdir());
    const d = await store.putBytes(Buffer.from('{}'));
    await Promise.all(Array.from({ length: 40 }, (_, i) => store.addRefs([{ name: `example.com/app:v${i}`, descriptor: d }])));
    const idx = await store.readIndex();
    expect(idx.manifests).toHaveLength(40);
    expect(idx.manifests.map((m) => m.annotations!['org.opencontainers.image.ref.name'])).toEqual([...idx.manifests.map((m) => m.annotations!['org.opencontainers.image.ref.name'])].sort());
  });

  it('gives a name to the last of several refs added at once for it, as one write at a time did', async () => {
    const store = await Layout.open(await tmpdir());
    const ds = await Promise.all(Array.from({ length: 5 }, (_, i) => store.putBytes(Buffer.from(`{"n":${i}}`))));
    await Promise.all(ds.map((d) => store.addRefs([{ name: 'example.com/app:v1', descriptor: d }])));
    expect((await store.resolve('example.com/app:v1'))?.digest).toBe(ds[4]!.digest);
  });

  it('reports a disk write that fails mid-blob as a store I/O error, not an unhandled rejection', async () => {
    const dir = await tmpdir();
    const data = Buffer.alloc(4 << 20, 7);
    // A directory where the temp file should be: opening it for writing fails as a full disk would.
    const tmp = path.join(dir, 'blob.tmp');
    await fs.mkdir(tmp);
    const w = new BlobWriter(desc(data), tmp, path.join(dir, 'blob'));
    let failure: unknown;
    for (let off = 0; off < data.length && !failure; off += 64 << 10) {
      try {
        await w.write(data.subarray(off, off + (64 << 10)));
      } catch (e) {
        failure = e;
      }
      // Let the failed write settle between chunks, as it does between socket reads.
      await new Promise((r) => setImmediate(r));
    }
    failure ??= await w.commit().catch((e: unknown) => e);
    expect(failure).toMatchObject({ code: 'STORE_IO', message: expect.stringContaining('cannot write') });
    await expect(fs.stat(path.join(dir, 'blob'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('detects a corrupt blob when reading a manifest back', async () => {
    const store = await Layout.open(await tmpdir());
    const d = await store.putBytes(Buffer.from('{"schemaVersion":2}'));
    await fs.writeFile(store.blobPath(d.digest), '{"schemaVersion":3}');
    await expect(store.readBlob(d.digest)).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
  });
});
