import { createHash, type Hash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Codes, FerryError, HostError } from '../errors.js';
import { ioError, tempPathFor } from '../util/fsx.js';
import { silentReporter, type Reporter } from '../util/progress.js';
import { partFileOf, type PartInfo } from './format.js';
import { END_OF_ARCHIVE, fileHeader, padding } from './tarwriter.js';

export interface ArchiveEntry {
  path: string;
  size: number;
  sha256: string;
  mode?: number;
  /** A file to stream from (the cache), or bytes we made. */
  source: string | Buffer;
}

/**
 * Where archive bytes go: one file, or parts of at most `partSize` bytes. Each output is written to
 * a temp name and renamed only when the whole archive is done, so an interrupted build leaves no
 * file that looks finished.
 */
class Sink {
  private fh: FileHandle | undefined;
  private partBytes = 0;
  private hash: Hash | undefined;
  private current = '';
  readonly parts: PartInfo[] = [];
  private readonly temps: { tmp: string; final: string }[] = [];
  private buf: Buffer[] = [];
  private bufBytes = 0;

  constructor(
    private readonly out: string,
    private readonly partSize: number | undefined,
  ) {}

  private async openNext(): Promise<void> {
    await this.closeCurrent();
    const final = this.partSize ? partFileOf(this.out, this.parts.length + 1) : this.out;
    const tmp = tempPathFor(final);
    this.temps.push({ tmp, final });
    this.fh = await fs.open(tmp, 'w');
    this.partBytes = 0;
    this.current = path.basename(final);
    this.hash = this.partSize ? createHash('sha256') : undefined;
  }

  private async closeCurrent(): Promise<void> {
    await this.flush();
    if (!this.fh) return;
    await this.fh.close();
    this.fh = undefined;
    if (this.hash) this.parts.push({ name: this.current, size: this.partBytes, sha256: this.hash.digest('hex') });
  }

  private async flush(): Promise<void> {
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
      this.hash?.update(piece);
      this.buf.push(piece);
      this.bufBytes += piece.length;
      this.partBytes += piece.length;
      if (this.bufBytes >= 4 << 20) await this.flush();
      rest = rest.subarray(piece.length);
    }
  }

  async finish(): Promise<void> {
    await this.closeCurrent();
    for (const t of this.temps) await fs.rename(t.tmp, t.final);
  }

  async abort(): Promise<void> {
    try {
      await this.fh?.close();
    } catch {
      /* failing already */
    }
    for (const t of this.temps) await fs.rm(t.tmp, { force: true });
  }
}

/** Streams a file into the archive in large reads; checks it still has the size we planned. */
async function copyFile(sink: Sink, e: ArchiveEntry, buf: Buffer, reporter: Reporter): Promise<void> {
  const fh = await fs.open(e.source as string, 'r');
  try {
    let off = 0;
    while (off < e.size) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, e.size - off), off);
      if (bytesRead === 0) break;
      // The sink keeps references until it flushes, so hand it a copy of the shared buffer.
      await sink.write(Buffer.from(buf.subarray(0, bytesRead)));
      off += bytesRead;
      reporter.bytes(bytesRead);
    }
    if (off !== e.size || (await fh.stat()).size !== e.size) {
      throw new HostError(Codes.bundleBuild, `${e.source} changed size while the bundle was written (${e.path})`, {
        hint: 'Something modified the ferry cache during the build. Re-run the build.',
      });
    }
  } finally {
    await fh.close();
  }
}

/**
 * Writes the archive in one pass: `head` entries first (the signed table), then `content` in byte
 * order of path. Zero mtimes and owners make two builds of the same inputs byte-identical.
 */
export async function writeArchive(out: string, head: ArchiveEntry[], content: ArchiveEntry[], opts: { partSize?: number; reporter?: Reporter } = {}): Promise<{ parts: PartInfo[]; size: number }> {
  const reporter = opts.reporter ?? silentReporter;
  const sorted = [...content].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const sink = new Sink(out, opts.partSize);
  const buf = Buffer.allocUnsafe(4 << 20);
  let size = 0;
  try {
    await fs.mkdir(path.dirname(path.resolve(out)), { recursive: true });
    for (const e of [...head, ...sorted]) {
      const h = fileHeader(e.path, e.size, e.mode ?? 0o644);
      await sink.write(h);
      reporter.blobStart(e.size);
      if (Buffer.isBuffer(e.source)) {
        await sink.write(e.source);
        reporter.bytes(e.size);
      } else await copyFile(sink, e, buf, reporter);
      const pad = padding(e.size);
      await sink.write(pad);
      reporter.blobDone();
      size += h.length + e.size + pad.length;
    }
    await sink.write(END_OF_ARCHIVE);
    size += END_OF_ARCHIVE.length;
    await sink.finish();
  } catch (e) {
    await sink.abort();
    if (e instanceof FerryError) throw e;
    throw ioError(`cannot write ${out}`, e);
  }
  return { parts: sink.parts, size };
}
