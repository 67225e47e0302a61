import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Codes, FerryError, HostError, IntegrityError } from '../errors.js';
import { ioError, removeOnSignal, sweepStaleTemps, tempPathFor } from '../util/fsx.js';
import { sha256Hex } from '../util/digest.js';
import { HashWorkers, type EntryHash, type Slot } from '../util/hash-workers.js';
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

/** Writes all of `b` at `position`: a write may take fewer bytes than it is given. */
async function writeAll(fh: FileHandle, b: Buffer, position: number): Promise<void> {
  for (let off = 0; off < b.length; ) {
    const { bytesWritten } = await fh.write(b, off, b.length - off, position + off);
    off += bytesWritten;
  }
}

/**
 * Where archive bytes go: one file, or parts of at most `partSize` bytes. Each output is written to
 * a temp name and renamed only when the whole archive is done, so an interrupted build leaves no
 * file that looks finished; a signal removes the temp files.
 */
class Sink {
  private fh: FileHandle | undefined;
  private partBytes = 0;
  private partHash: EntryHash | undefined;
  private current = '';
  readonly parts: PartInfo[] = [];
  private readonly temps: { tmp: string; final: string; release: () => void }[] = [];

  constructor(
    private readonly out: string,
    private readonly partSize: number | undefined,
    private readonly hashes: HashWorkers,
  ) {}

  private async openNext(): Promise<void> {
    await this.closeCurrent();
    const final = this.partSize ? partFileOf(this.out, this.parts.length + 1) : this.out;
    const tmp = tempPathFor(final);
    this.temps.push({ tmp, final, release: removeOnSignal(tmp) });
    this.fh = await fs.open(tmp, 'w');
    this.partBytes = 0;
    this.current = path.basename(final);
    // The last lane: parts are hashed beside the entries, not behind them.
    this.partHash = this.partSize ? this.hashes.entry(undefined, PART_LANE) : undefined;
  }

  private async closeCurrent(): Promise<void> {
    if (!this.fh) return;
    await this.fh.close();
    this.fh = undefined;
    if (this.partHash) this.parts.push({ name: this.current, size: this.partBytes, sha256: await this.partHash.digest() });
  }

  /** Writes `b` (bytes of a leased slot, hashed in place for the part) after everything before it. */
  async write(b: Buffer): Promise<void> {
    let rest = b;
    while (rest.length) {
      if (!this.fh || (this.partSize && this.partBytes >= this.partSize)) await this.openNext();
      const room = this.partSize ? this.partSize - this.partBytes : rest.length;
      const piece = rest.length <= room ? rest : rest.subarray(0, room);
      if (this.partHash) await this.partHash.update(piece);
      await writeAll(this.fh!, piece, this.partBytes);
      this.partBytes += piece.length;
      rest = rest.subarray(piece.length);
    }
  }

  async finish(): Promise<void> {
    if (!this.fh) await this.openNext();
    await this.closeCurrent();
    // Named once the count is known: 1,231 parts are part0001 … part1231.
    for (const [i, t] of this.temps.entries()) {
      const final = this.partSize ? partFileOf(this.out, i + 1, this.temps.length) : t.final;
      await fs.rename(t.tmp, final);
      if (this.partSize) this.parts[i]!.name = path.basename(final);
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

/** One write: large, at an offset that is a multiple of it; 4 MiB blocks took Node 24 over 150 MB RSS. */
const BLOCK = 2 << 20;
/** Blocks in flight: one being filled, the one before it being written, others still hashing. */
const BLOCKS = 4;
const ENTRY_LANE = 0;
const PART_LANE = 1;

/**
 * The archive's bytes, assembled in blocks of the hashing ring: files are read straight into a
 * block, entries are hashed in place from it on a worker, and the block is written whole while
 * the next one fills. So every byte is read once, hashed from the buffer it is written from, and
 * never copied in between; a block is reused only once it is written and hashed.
 */
class Blocks {
  private slot: Slot | undefined;
  private fill = 0;
  private writing: Promise<void> = Promise.resolve();
  /** The first failure: a write, a hash, or a mismatch found by a digest; checked before each read. */
  failure: unknown;

  constructor(
    private readonly sink: Sink,
    private readonly hashes: HashWorkers,
  ) {}

  /** Free room in the current block. */
  async room(): Promise<Buffer> {
    if (this.failure) throw this.failure;
    if (!this.slot) {
      this.slot = await this.hashes.lease();
      this.fill = 0;
    }
    return this.slot.buf.subarray(this.fill);
  }

  /** `n` bytes of the room are filled; a full block goes to the disk. */
  filled(n: number): void {
    this.fill += n;
    if (this.fill === this.slot!.buf.length) this.submit();
  }

  private submit(): void {
    const s = this.slot;
    const n = this.fill;
    this.slot = undefined;
    if (!s) return;
    this.writing = this.writing
      .then(() => (this.failure || !n ? undefined : this.sink.write(s.buf.subarray(0, n))))
      .catch((e: unknown) => {
        this.failure ??= e;
      })
      .finally(() => s.release());
  }

  /** Copies `b` in (a header, padding, bytes ferry made); `h` hashes the copy that is written. */
  async put(b: Buffer, h?: EntryHash): Promise<void> {
    for (let off = 0; off < b.length; ) {
      const room = await this.room();
      const n = b.copy(room, 0, off, Math.min(b.length, off + room.length));
      if (h) await h.update(room.subarray(0, n));
      this.filled(n);
      off += n;
    }
  }

  /** Reads `size` bytes of a file into the blocks, hashing them into `h`; returns how many there were. */
  async read(fh: FileHandle, size: number, h: EntryHash, reporter: Reporter): Promise<number> {
    let off = 0;
    while (off < size) {
      const room = await this.room();
      const { bytesRead } = await fh.read(room, 0, Math.min(room.length, size - off), off);
      if (bytesRead === 0) break;
      await h.update(room.subarray(0, bytesRead));
      this.filled(bytesRead);
      off += bytesRead;
      reporter.bytes(bytesRead);
    }
    return off;
  }

  /** Lets the writes in flight end (those not yet begun are skipped), so nothing writes after an abort. */
  async stop(why: unknown): Promise<void> {
    this.failure ??= why;
    await this.writing;
  }

  /** Writes what is left; throws the first failure. */
  async drain(): Promise<void> {
    this.submit();
    await this.writing;
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
  // A bundle holds entries (a blob is one kind): the count matches the entries the build names.
  reporter.counting?.('entries');
  const sorted = [...content].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  // Entries on one worker, parts (when split) on a second, so the two hashes of a byte run side by side.
  const hashes = await HashWorkers.start({ workers: opts.partSize ? 2 : 1, slots: BLOCKS, slotBytes: BLOCK });
  const sink = new Sink(out, opts.partSize, hashes);
  const blocks = new Blocks(sink, hashes);
  const checks: Promise<void>[] = [];
  const check = (e: ArchiveEntry, digest: Promise<string>) =>
    checks.push(
      digest.then(
        (got) => {
          if (got !== e.sha256) blocks.failure ??= mismatch(e, got);
        },
        (err: unknown) => {
          blocks.failure ??= err;
        },
      ),
    );
  let size = 0;
  try {
    const dir = path.dirname(path.resolve(out));
    await fs.mkdir(dir, { recursive: true });
    // What an earlier, killed build of this output left behind.
    await sweepStaleTemps(dir, (base) => base === path.basename(out) || /^\.part\d{3,}$/.test(base.slice(path.basename(out).length)));
    for (const e of [...head, ...sorted]) {
      const h = fileHeader(e.path, e.size, e.mode ?? 0o644);
      await blocks.put(h);
      reporter.blobStart(e.size);
      const hash = hashes.entry(e.size, ENTRY_LANE);
      if (Buffer.isBuffer(e.source)) {
        if (e.source.length !== e.size) throw mismatch(e, sha256Hex(e.source));
        await blocks.put(e.source, hash);
        reporter.bytes(e.size);
      } else {
        const fh = await fs.open(e.source, 'r');
        try {
          const got = await blocks.read(fh, e.size, hash, reporter);
          if (got !== e.size || (await fh.stat()).size !== e.size) {
            throw new HostError(Codes.bundleBuild, `${e.source} changed size while the bundle was written (${e.path})`, {
              hint: 'Something modified the ferry cache during the build. Re-run the build.',
            });
          }
        } finally {
          await fh.close();
        }
      }
      check(e, hash.digest());
      await blocks.put(padding(e.size));
      reporter.blobDone();
      size += h.length + e.size + padding(e.size).length;
    }
    await blocks.put(END_OF_ARCHIVE);
    size += END_OF_ARCHIVE.length;
    await blocks.drain();
    await Promise.all(checks);
    if (blocks.failure) throw blocks.failure;
    await sink.finish();
  } catch (e) {
    await blocks.stop(e);
    await sink.abort();
    if (e instanceof FerryError) throw e;
    throw ioError(`cannot write ${out}`, e);
  } finally {
    await hashes.close();
  }
  return { parts: sink.parts, size };
}
