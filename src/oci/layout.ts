import { createReadStream, promises as fs, type ReadStream } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Hash } from 'node:crypto';
import { Codes, IntegrityError, StoreError } from '../errors.js';
import { digestOf, newHash, sha256 } from '../util/digest.js';
import { exists, ioError, parseTempName, staleTemps, sweepStaleTemps, tempPathFor, withDirLock, writeFileAtomic } from '../util/fsx.js';
import { assertDigest } from './reference.js';
import type { Descriptor, ImageIndex } from './media.js';
import { MediaType } from './media.js';

export const REF_NAME = 'org.opencontainers.image.ref.name';
export const CONTAINERD_NAME = 'io.containerd.image.name';

/**
 * Writes one blob: bytes go to a temp file beside the final path while they are hashed, and the
 * blob becomes visible only through a rename after its digest and size check out. `offset` is how
 * many bytes are already written, so a cut download can resume with a Range request.
 */
export class BlobWriter {
  private readonly hash: Hash;
  private fh: FileHandle | undefined;
  private written = 0;
  private closed = false;
  /** Chunks hashed but not yet on disk; flushed with one writev per ~1 MiB. */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private flushing: Promise<void> | undefined;
  /** The first write that failed: every later push and the close throw it. */
  private failed: unknown;

  constructor(
    readonly expected: Descriptor,
    private readonly tmp: string,
    private readonly final: string,
  ) {
    this.hash = newHash(expected.digest);
  }

  get offset(): number {
    return this.written;
  }

  /** A writer that carries on from the prefix already in `tmp` (a killed pull's), hashing it first. */
  static async resume(expected: Descriptor, tmp: string, final: string): Promise<BlobWriter> {
    const w = new BlobWriter(expected, tmp, final);
    for await (const c of createReadStream(tmp, { highWaterMark: 1 << 20 })) {
      w.hash.update(c as Buffer);
      w.written += (c as Buffer).length;
    }
    if (w.written > expected.size) throw new Error(`${tmp} is larger than the blob`);
    return w;
  }

  async write(chunk: Buffer): Promise<void> {
    await this.push(chunk);
  }

  /**
   * Hashes and queues a chunk without waiting. It returns a promise only when the caller should
   * wait before the next chunk (a MiB is ready while the last MiB is still being written), so a
   * socket is paused only then, and most chunks cost no promise at all.
   */
  push(chunk: Buffer): Promise<void> | undefined {
    if (this.failed) throw this.failed;
    if (this.written + chunk.length > this.expected.size) {
      throw new IntegrityError(
        Codes.sizeMismatch,
        `blob ${this.expected.digest} is larger than the ${this.expected.size} bytes its descriptor states`,
        { hint: 'The source serves different content than its manifest describes. Nothing was stored; check the registry or mirror.' },
      );
    }
    this.hash.update(chunk);
    this.written += chunk.length;
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes < FLUSH_BYTES) return undefined;
    // At most one write in flight: the disk works while the next MiB arrives and is hashed.
    if (!this.flushing) {
      this.startFlush();
      return undefined;
    }
    return this.flushing.then(() => {
      if (this.failed) throw this.failed;
      if (this.pendingBytes >= FLUSH_BYTES && !this.flushing) this.startFlush();
    });
  }

  private startFlush(): void {
    // A failed write is kept and thrown at the next push or at close, never left unhandled.
    const f: Promise<void> = this.flush().then(
      () => {
        if (this.flushing === f) this.flushing = undefined;
      },
      (e: unknown) => {
        this.failed ??= e;
        if (this.flushing === f) this.flushing = undefined;
      },
    );
    this.flushing = f;
  }

  private async flush(): Promise<void> {
    const chunks = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    if (!chunks.length) return;
    try {
      this.fh ??= await fs.open(this.tmp, 'a');
      await this.fh.writev(chunks);
    } catch (e) {
      throw ioError(`cannot write ${this.tmp}`, e);
    }
  }

  private async closeFile(): Promise<void> {
    try {
      while (this.flushing) await this.flushing;
      if (this.failed) throw this.failed;
      await this.flush();
      // An empty blob still needs a file.
      this.fh ??= await fs.open(this.tmp, 'a');
    } finally {
      await this.fh?.close();
      this.fh = undefined;
    }
  }

  /** Checks size and digest, then renames into place. A failed check removes the temp file. */
  async commit(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.closeFile();
      if (this.written !== this.expected.size) {
        throw new IntegrityError(
          Codes.sizeMismatch,
          `blob ${this.expected.digest}: got ${this.written} bytes, expected ${this.expected.size}`,
          { hint: 'The transfer ended early or the source is inconsistent. Nothing was stored; re-run to retry.' },
        );
      }
      const actual = digestOf(this.hash, this.expected.digest);
      if (actual !== this.expected.digest) {
        throw new IntegrityError(Codes.digestMismatch, `blob digest mismatch: expected ${this.expected.digest}, got ${actual}`, {
          hint: 'The source served corrupt or tampered content. Nothing was stored. Check the registry or mirror and re-run.',
          details: { expected: this.expected.digest, actual },
        });
      }
      await fs.mkdir(path.dirname(this.final), { recursive: true });
      await fs.rename(this.tmp, this.final);
    } catch (e) {
      await fs.rm(this.tmp, { force: true });
      throw e;
    }
  }

  /**
   * Stops writing. With `keepPartial`, bytes already written stay in the temp file (a prefix of the
   * blob, all of it hashed), so the next run resumes there; else they are removed.
   */
  async abort(keepPartial = false): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.closeFile();
    } catch {
      keepPartial = false;
    }
    if (!keepPartial || this.written === 0) await fs.rm(this.tmp, { force: true });
  }
}

/** A killed pull's partial blob older than this is not resumed but removed. */
const PARTIAL_TTL_MS = 24 * 3600_000;

const FLUSH_BYTES = 1 << 20;

/**
 * The store: an OCI image layout (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`) that skopeo,
 * containerd and umoci read as is. Blobs are content-addressed and shared by every image in it.
 */
export class Layout {
  constructor(readonly dir: string) {}

  static async open(dir: string): Promise<Layout> {
    const l = new Layout(path.resolve(dir));
    await l.init();
    return l;
  }

  async init(): Promise<void> {
    try {
      await fs.mkdir(path.join(this.dir, 'blobs', 'sha256'), { recursive: true });
    } catch (e) {
      throw ioError(`cannot create store ${this.dir}`, e);
    }
    const marker = path.join(this.dir, 'oci-layout');
    if (!(await exists(marker))) await writeFileAtomic(marker, JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    // What killed runs left: index and marker temps, and partial blobs that are done or too old.
    await sweepStaleTemps(this.dir);
    await this.deadPartials(path.join(this.dir, 'blobs', 'sha256'));
    const idx = path.join(this.dir, 'index.json');
    if (!(await exists(idx))) {
      await withDirLock(this.lockDir(), async () => {
        if (!(await exists(idx))) await this.writeIndex({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] });
      });
    }
  }

  blobPath(digest: string): string {
    assertDigest(digest);
    const [alg, hex] = digest.split(':') as [string, string];
    return path.join(this.dir, 'blobs', alg, hex);
  }

  /** True when the blob is present with the expected size (the digest was checked when it was written). */
  async hasBlob(digest: string, size?: number): Promise<boolean> {
    try {
      const st = await fs.stat(this.blobPath(digest));
      return size === undefined || st.size === size;
    } catch {
      return false;
    }
  }

  /**
   * Brings a blob in from another store (the cache) by hard link, or by copy across filesystems.
   * Returns false when the other store does not have it.
   */
  async adopt(from: Layout, desc: Descriptor): Promise<boolean> {
    if (from.dir === this.dir) return this.hasBlob(desc.digest, desc.size);
    if (!(await from.hasBlob(desc.digest, desc.size))) return false;
    const src = from.blobPath(desc.digest);
    const dst = this.blobPath(desc.digest);
    const tmp = tempPathFor(dst);
    try {
      await fs.mkdir(path.dirname(dst), { recursive: true });
      try {
        await fs.link(src, tmp);
      } catch {
        await fs.copyFile(src, tmp);
      }
      await fs.rename(tmp, dst);
      return true;
    } catch (e) {
      await fs.rm(tmp, { force: true });
      throw ioError(`cannot bring ${desc.digest} into ${this.dir}`, e);
    }
  }

  writer(desc: Descriptor): BlobWriter {
    const final = this.blobPath(desc.digest);
    return new BlobWriter(desc, tempPathFor(final), final);
  }

  /**
   * A writer that resumes what a killed pull left of this blob: the longest partial of a dead
   * process is claimed by rename (atomic, so two runs never share one) and hashed, and the fetch
   * asks only for the rest. Without one, a fresh writer.
   */
  async resumableWriter(desc: Descriptor): Promise<BlobWriter> {
    const final = this.blobPath(desc.digest);
    const tmp = tempPathFor(final);
    // The one that got furthest first.
    const found = [...((await this.deadPartials(path.dirname(final))).get(path.basename(final)) ?? [])].sort((a, b) => b.size - a.size);
    for (const [i, f] of found.entries()) {
      try {
        await fs.rename(f.path, tmp);
      } catch {
        continue; // another run claimed it
      }
      for (const rest of found.slice(i + 1)) await fs.rm(rest.path, { force: true }).catch(() => {});
      try {
        return await BlobWriter.resume(desc, tmp, final);
      } catch {
        await fs.rm(tmp, { force: true });
        break;
      }
    }
    return new BlobWriter(desc, tmp, final);
  }

  private readonly partials = new Map<string, Promise<Map<string, { path: string; size: number }[]>>>();

  /**
   * Partial blobs of dead pulls in a blob directory, by blob: listed once per store (a pull asks
   * for many blobs), after removing those whose blob is complete or that are too old to resume.
   */
  private deadPartials(dir: string): Promise<Map<string, { path: string; size: number }[]>> {
    let p = this.partials.get(dir);
    if (!p) {
      p = (async () => {
        const byBlob = new Map<string, { path: string; size: number }[]>();
        for (const f of await staleTemps(dir)) {
          const base = parseTempName(path.basename(f))!.base;
          const st = await fs.stat(f).catch(() => undefined);
          if (!st || (await exists(path.join(dir, base))) || Date.now() - st.mtimeMs > PARTIAL_TTL_MS) {
            await fs.rm(f, { force: true }).catch(() => {});
            continue;
          }
          byBlob.set(base, [...(byBlob.get(base) ?? []), { path: f, size: st.size }]);
        }
        return byBlob;
      })();
      this.partials.set(dir, p);
    }
    return p;
  }

  /** Stores small content (manifests, configs) we already hold in memory. */
  async putBytes(data: Uint8Array, expected?: Descriptor): Promise<Descriptor> {
    const desc: Descriptor = expected ?? { mediaType: 'application/octet-stream', digest: sha256(data), size: data.length };
    if (await this.hasBlob(desc.digest, desc.size)) return desc;
    const w = this.writer(desc);
    try {
      await w.write(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
      await w.commit();
    } catch (e) {
      await w.abort();
      throw e;
    }
    return desc;
  }

  openBlob(digest: string, start?: number, end?: number): ReadStream {
    return createReadStream(this.blobPath(digest), { start, end, highWaterMark: 1 << 20 });
  }

  async readBlob(digest: string, maxSize = 8 << 20): Promise<Buffer> {
    const p = this.blobPath(digest);
    let st;
    try {
      st = await fs.stat(p);
    } catch (e) {
      throw new StoreError(Codes.storeMissing, `the store ${this.dir} has no blob ${digest}`, {
        hint: 'The store is incomplete. Re-run `ferry images pull` to fill it.',
        cause: e,
      });
    }
    if (st.size > maxSize) {
      throw new StoreError(Codes.storeInvalid, `blob ${digest} is ${st.size} bytes, more than the ${maxSize} allowed for a manifest`, {
        hint: 'The store holds something that is not a manifest under this digest.',
      });
    }
    const buf = await fs.readFile(p);
    if (sha256(buf) !== digest) {
      throw new IntegrityError(Codes.digestMismatch, `blob ${digest} in ${this.dir} is corrupt`, {
        hint: `Delete ${p} and re-run the pull to fetch it again.`,
      });
    }
    return buf;
  }

  async readJson<T>(digest: string): Promise<T> {
    const buf = await this.readBlob(digest);
    try {
      return JSON.parse(buf.toString('utf8')) as T;
    } catch (e) {
      throw new StoreError(Codes.storeInvalid, `blob ${digest} is not valid JSON`, { cause: e, hint: 'The store is damaged; re-pull the image.' });
    }
  }

  private lockDir(): string {
    return path.join(this.dir, '.index.lock');
  }

  async readIndex(): Promise<ImageIndex> {
    const p = path.join(this.dir, 'index.json');
    let text: string;
    try {
      text = await fs.readFile(p, 'utf8');
    } catch (e) {
      throw new StoreError(Codes.storeInvalid, `${this.dir} is not an OCI image layout (no index.json)`, {
        hint: 'Point --store at a directory written by `ferry images pull`.',
        cause: e,
      });
    }
    try {
      const idx = JSON.parse(text) as ImageIndex;
      if (!Array.isArray(idx.manifests)) throw new Error('manifests is not a list');
      return idx;
    } catch (e) {
      throw new StoreError(Codes.storeInvalid, `${p} is not a valid image index: ${(e as Error).message}`, { cause: e });
    }
  }

  private async writeIndex(idx: ImageIndex): Promise<void> {
    await writeFileAtomic(path.join(this.dir, 'index.json'), `${JSON.stringify(idx, null, 2)}\n`);
  }

  /**
   * Names top-level descriptors. An entry with the same ref name is replaced, so re-tagging moves the
   * name. Sorted by name so the file is stable. Safe under concurrent writers (a lock around
   * read-modify-write, and an atomic rename).
   */
  addRefs(entries: { name: string; descriptor: Descriptor }[]): Promise<void> {
    // Writers in this process queue here; the directory lock is for other processes, and its
    // polling would otherwise make concurrent pulls in one process wait on each other's sleeps.
    // Calls that arrive while the index is being written share the next write (one fsync, not one each).
    return new Promise((resolve, reject) => {
      this.refsWaiting.push({ entries, resolve, reject });
      this.indexWriter ??= this.writeWaitingRefs();
    });
  }

  private refsWaiting: { entries: { name: string; descriptor: Descriptor }[]; resolve: () => void; reject: (e: unknown) => void }[] = [];
  private indexWriter: Promise<void> | undefined;

  private async writeWaitingRefs(): Promise<void> {
    while (this.refsWaiting.length) {
      const batch = this.refsWaiting.splice(0);
      try {
        // In call order, so a later call's name wins, as it did one write at a time.
        await this.addRefsLocked(batch.flatMap((b) => b.entries));
        for (const b of batch) b.resolve();
      } catch (e) {
        for (const b of batch) b.reject(e);
      }
    }
    this.indexWriter = undefined;
  }

  private async addRefsLocked(entries: { name: string; descriptor: Descriptor }[]): Promise<void> {
    await withDirLock(this.lockDir(), async () => {
      const idx = await this.readIndex();
      const byName = new Map<string, Descriptor>();
      const unnamed: Descriptor[] = [];
      for (const d of idx.manifests) {
        const n = d.annotations?.[REF_NAME];
        if (n) byName.set(n, d);
        else unnamed.push(d);
      }
      for (const { name, descriptor } of entries) {
        const { platform: _p, ...d } = descriptor;
        byName.set(name, { ...d, annotations: { ...(d.annotations ?? {}), [REF_NAME]: name, [CONTAINERD_NAME]: name } });
      }
      const manifests = [...unnamed, ...[...byName.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, d]) => d)];
      await this.writeIndex({ ...idx, schemaVersion: 2, mediaType: MediaType.ociIndex, manifests });
    });
  }

  async resolve(name: string): Promise<Descriptor | undefined> {
    const idx = await this.readIndex();
    return idx.manifests.find((d) => d.annotations?.[REF_NAME] === name);
  }
}
