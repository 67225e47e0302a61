import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Codes, FerryError, HostError, IntegrityError } from '../errors.js';
import { ioError, removeOnSignal, sweepStaleTemps, tempPathFor } from '../util/fsx.js';
import { sharedBuffer, startHasher, type StreamHasher } from '../util/hash-worker.js';
import { silentReporter, type Reporter } from '../util/progress.js';
import { partFileOf, type PartInfo } from './format.js';
import { END_OF_ARCHIVE, fileHeader, padding } from './tarwriter.js';

export interface ArchiveEntry {
  path: string;
  size: number;
  /** What the signed table lists; the bytes written are hashed and must match it. */
  sha256: string;
  mode?: number;
  /** A file to stream from (the cache), or bytes we made. */
  source: string | Buffer;
}

/**
 * Where archive bytes go: one file, or parts of at most `partSize` bytes. Each output is written to
 * a temp name and renamed only when the whole archive is done, so an interrupted build leaves no
 * file that looks finished; a signal removes the temp files.
 */
class Sink {
  private fh: FileHandle | undefined;
  private partBytes = 0;
  private partHash: number | undefined;
  private current = '';
  readonly parts: PartInfo[] = [];
  private readonly temps: { tmp: string; final: string; release: () => void }[] = [];
  private buf: Buffer[] = [];
  private bufBytes = 0;

  constructor(
    private readonly out: string,
    private readonly partSize: number | undefined,
    private readonly hasher: StreamHasher,
  ) {}

  private async openNext(): Promise<void> {
    await this.closeCurrent();
    const final = this.partSize ? partFileOf(this.out, this.parts.length + 1) : this.out;
    const tmp = tempPathFor(final);
    this.temps.push({ tmp, final, release: removeOnSignal(tmp) });
    this.fh = await fs.open(tmp, 'w');
    this.partBytes = 0;
    this.current = path.basename(final);
    this.partHash = this.partSize ? this.hasher.stream(1) : undefined;
  }

  private async closeCurrent(): Promise<void> {
    await this.flush();
    if (!this.fh) return;
    await this.fh.close();
    this.fh = undefined;
    if (this.partHash !== undefined) this.parts.push({ name: this.current, size: this.partBytes, sha256: await this.hasher.digest(this.partHash) });
  }

  /** Writes what is buffered; after it, the buffers handed to `write` are the caller's again. */
  async flush(): Promise<void> {
    if (!this.bufBytes || !this.fh) return;
    const chunks = this.buf;
    this.buf = [];
    this.bufBytes = 0;
    await this.fh.writev(chunks);
  }

  async write(b: Buffer): Promise<void> {
    let rest = b;
    while (rest.length) {
      if (!this.fh || (this.partSize && this.partBytes >= this.partSize)) await this.openNext();
      const room = this.partSize ? this.partSize - this.partBytes : rest.length;
      const piece = rest.length <= room ? rest : rest.subarray(0, room);
      if (this.partHash !== undefined) this.hasher.update(this.partHash, piece);
      this.buf.push(piece);
      this.bufBytes += piece.length;
      this.partBytes += piece.length;
      if (this.bufBytes >= 4 << 20) await this.flush();
      rest = rest.subarray(piece.length);
    }
  }

  async finish(): Promise<void> {
    await this.closeCurrent();
    for (const t of this.temps) {
      await fs.rename(t.tmp, t.final);
      t.release();
    }
  }

  async abort(): Promise<void> {
    try {
      await this.fh?.close();
    } catch {
      /* failing already */
    }
    for (const t of this.temps) {
      await fs.rm(t.tmp, { force: true });
      t.release();
    }
  }
}

/** The error for bytes that do not hash to what the signed table lists for them. */
function mismatch(e: ArchiveEntry, got: string): IntegrityError {
  const made = Buffer.isBuffer(e.source);
  return new IntegrityError(Codes.bundleInputMismatch, `${e.path}: ${made ? 'the bytes ferry made' : e.source} hash to ${got}, not the ${e.sha256} the bundle lists; no bundle was written`, {
    hint: made
      ? 'This is a bug in ferry: please report it.'
      : `The file is corrupt or was changed (a damaged or tampered cache). Remove ${e.source} and build again: ferry fetches it anew and checks it.`,
    details: { path: e.path, ...(made ? {} : { source: e.source }), expected: e.sha256, actual: got },
  });
}

const READ_SIZE = 4 << 20;
const POOL = 4;

/**
 * Copies files into the sink through a few shared buffers: each read is written by this thread
 * and hashed by the worker at the same time, so every byte is hashed once, as it is written. A
 * buffer is read into again only once the worker is done with it.
 */
class FileCopier {
  private readonly pool = Array.from({ length: POOL }, () => ({ buf: sharedBuffer(READ_SIZE), free: Promise.resolve() }));
  private slot = 0;
  private readonly checks: Promise<void>[] = [];
  /** The first mismatch (or hashing failure) found; checked between reads, so a bad file stops the build early. */
  private failure: unknown;

  constructor(
    private readonly sink: Sink,
    private readonly hasher: StreamHasher,
    private readonly reporter: Reporter,
  ) {}

  async copy(e: ArchiveEntry): Promise<void> {
    const id = this.hasher.stream(0);
    const fh = await fs.open(e.source as string, 'r');
    try {
      let off = 0;
      while (off < e.size) {
        if (this.failure) throw this.failure;
        const s = this.pool[this.slot++ % POOL]!;
        await s.free;
        const { bytesRead } = await fh.read(s.buf, 0, Math.min(READ_SIZE, e.size - off), off);
        if (bytesRead === 0) break;
        const chunk = s.buf.subarray(0, bytesRead);
        this.hasher.update(id, chunk);
        await this.sink.write(chunk);
        await this.sink.flush();
        s.free = this.hasher.settled().catch((e: unknown) => {
          this.failure ??= e;
        });
        off += bytesRead;
        this.reporter.bytes(bytesRead);
      }
      if (off !== e.size || (await fh.stat()).size !== e.size) {
        throw new HostError(Codes.bundleBuild, `${e.source} changed size while the bundle was written (${e.path})`, {
          hint: 'Something modified the ferry cache during the build. Re-run the build.',
        });
      }
    } finally {
      await fh.close();
    }
    this.checks.push(
      this.hasher.digest(id).then(
        (got) => {
          if (got !== e.sha256) this.failure ??= mismatch(e, got);
        },
        (err: unknown) => {
          this.failure ??= err;
        },
      ),
    );
  }

  /** Waits for every file's digest; throws the first mismatch. */
  async verified(): Promise<void> {
    await Promise.all(this.checks);
    if (this.failure) throw this.failure;
  }
}

/**
 * Writes the archive in one pass: `head` entries first (the signed table), then `content` in byte
 * order of path. Zero mtimes and owners make two builds of the same inputs byte-identical. Every
 * byte is hashed as it is written and checked against its entry's sha256; on a mismatch no output
 * appears and the error names the file.
 */
export async function writeArchive(out: string, head: ArchiveEntry[], content: ArchiveEntry[], opts: { partSize?: number; reporter?: Reporter } = {}): Promise<{ parts: PartInfo[]; size: number }> {
  const reporter = opts.reporter ?? silentReporter;
  const sorted = [...content].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  // Parts are hashed too: on a second worker, so the two hashes of each byte run side by side.
  const hasher = await startHasher(opts.partSize ? 2 : 1);
  const sink = new Sink(out, opts.partSize, hasher);
  const files = new FileCopier(sink, hasher, reporter);
  let size = 0;
  try {
    const dir = path.dirname(path.resolve(out));
    await fs.mkdir(dir, { recursive: true });
    // What an earlier, killed build of this output left behind.
    await sweepStaleTemps(dir, (base) => base === path.basename(out) || /^\.part\d{3}$/.test(base.slice(path.basename(out).length)));
    for (const e of [...head, ...sorted]) {
      const h = fileHeader(e.path, e.size, e.mode ?? 0o644);
      await sink.write(h);
      reporter.blobStart(e.size);
      if (Buffer.isBuffer(e.source)) {
        const got = createHash('sha256').update(e.source).digest('hex');
        if (got !== e.sha256 || e.source.length !== e.size) throw mismatch(e, got);
        await sink.write(e.source);
        reporter.bytes(e.size);
      } else await files.copy(e);
      const pad = padding(e.size);
      await sink.write(pad);
      reporter.blobDone();
      size += h.length + e.size + pad.length;
    }
    await sink.write(END_OF_ARCHIVE);
    size += END_OF_ARCHIVE.length;
    await sink.flush();
    await files.verified();
    await sink.finish();
  } catch (e) {
    await sink.abort();
    if (e instanceof FerryError) throw e;
    throw ioError(`cannot write ${out}`, e);
  } finally {
    await hasher.close();
  }
  return { parts: sink.parts, size };
}
