import { createCipheriv, createDecipheriv, createHash, hkdfSync } from 'node:crypto';
import { Codes, IntegrityError } from '../errors.js';

/*
 * A sealed stream: plaintext cut into chunks, each sealed with AES-256-GCM under a key derived for
 * this one stream (HKDF-SHA256 of the long-term key and a random salt), its nonce the chunk's index.
 * Every chunk's associated data binds the stream's header, the index and whether it is the last, so
 * chunks cannot be reordered, dropped, moved to another stream, or cut off at a chunk boundary (the
 * STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár). Memory: one chunk at a time.
 *
 * Frame: u32 BE (bit 31: last; bits 0-30: plaintext length) · ciphertext · 16-byte GCM tag.
 */

export const SEAL_TAG_BYTES = 16;
const LAST = 0x8000_0000;

function subkey(key: Buffer, salt: Buffer, info: string): Buffer {
  if (key.length !== 32) throw new Error('a sealed stream needs a 32-byte key');
  return Buffer.from(hkdfSync('sha256', key, salt, info, 32));
}

function nonceOf(index: bigint): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64BE(index, 4);
  return n;
}

function aadOf(headerDigest: Buffer, index: bigint, last: boolean): Buffer {
  const a = Buffer.alloc(32 + 8 + 1);
  headerDigest.copy(a, 0);
  a.writeBigUInt64BE(index, 32);
  a[40] = last ? 1 : 0;
  return a;
}

/** The digest of a stream's header bytes: what every chunk is bound to. */
export const headerDigest = (header: Buffer) => createHash('sha256').update(header).digest();

/**
 * Seals what is written to it into frames handed to `out` in order. The last chunk is held back
 * until more comes or `end()` says there is no more, so the last frame is marked as such.
 */
export class SealWriter {
  private readonly k: Buffer;
  private readonly hd: Buffer;
  private index = 0n;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private held: Buffer | undefined;
  plaintextBytes = 0;

  constructor(
    key: Buffer,
    salt: Buffer,
    info: string,
    header: Buffer,
    private readonly chunkBytes: number,
    private readonly out: (frame: Buffer) => Promise<void>,
  ) {
    if (!Number.isInteger(chunkBytes) || chunkBytes < 1 || chunkBytes >= LAST) throw new Error(`chunk size ${chunkBytes} out of range`);
    this.k = subkey(key, salt, info);
    this.hd = headerDigest(header);
  }

  async write(b: Buffer): Promise<void> {
    this.plaintextBytes += b.length;
    let off = 0;
    while (off < b.length) {
      const take = Math.min(this.chunkBytes - this.pendingBytes, b.length - off);
      this.pending.push(b.subarray(off, off + take));
      this.pendingBytes += take;
      off += take;
      if (this.pendingBytes === this.chunkBytes) {
        const full = Buffer.concat(this.pending);
        this.pending = [];
        this.pendingBytes = 0;
        if (this.held) await this.seal(this.held, false);
        this.held = full;
      }
    }
  }

  async end(): Promise<void> {
    if (this.pendingBytes) {
      if (this.held) await this.seal(this.held, false);
      this.held = Buffer.concat(this.pending);
      this.pending = [];
      this.pendingBytes = 0;
    }
    await this.seal(this.held ?? Buffer.alloc(0), true);
    this.held = undefined;
  }

  private async seal(plain: Buffer, last: boolean): Promise<void> {
    const c = createCipheriv('aes-256-gcm', this.k, nonceOf(this.index), { authTagLength: SEAL_TAG_BYTES });
    c.setAAD(aadOf(this.hd, this.index, last));
    const head = Buffer.alloc(4);
    head.writeUInt32BE((last ? LAST : 0) + plain.length);
    const body = c.update(plain);
    const rest = c.final();
    this.index++;
    await this.out(Buffer.concat([head, body, rest, c.getAuthTag()]));
  }
}

/** Reads exact byte counts from an async stream of buffers, holding at most what one read asks for. */
export class ByteReader {
  private buf: Buffer = Buffer.alloc(0);
  private done = false;
  readonly it: AsyncIterator<Buffer>;
  consumed = 0;

  constructor(source: AsyncIterable<Buffer>) {
    this.it = source[Symbol.asyncIterator]();
  }

  private async fill(n: number): Promise<boolean> {
    const parts = [this.buf];
    let have = this.buf.length;
    while (have < n && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else {
        parts.push(r.value);
        have += r.value.length;
      }
    }
    if (parts.length > 1) this.buf = Buffer.concat(parts);
    return this.buf.length >= n;
  }

  /** Exactly n bytes, or undefined when the stream ends first (what it had is then `short`). */
  async read(n: number): Promise<Buffer | undefined> {
    if (!(await this.fill(n))) return undefined;
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    this.consumed += n;
    return out;
  }

  /** True when nothing is left. */
  async atEnd(): Promise<boolean> {
    return !(await this.fill(1));
  }
}

/**
 * Opens a sealed stream: yields each chunk's plaintext once its tag checks. A stream cut before its
 * last frame is BACKUP_TRUNCATED; a frame that fails its tag, or bytes after the last, BACKUP_CORRUPT.
 */
export async function* openSealed(r: ByteReader, key: Buffer, salt: Buffer, info: string, header: Buffer, maxChunk: number, what: string): AsyncGenerator<Buffer> {
  const k = subkey(key, salt, info);
  const hd = headerDigest(header);
  const truncated = () => new IntegrityError(Codes.backupTruncated, `${what} ends early, at byte ${r.consumed}`, { hint: 'The file was cut short (a copy or a save that did not finish). Use another backup.' });
  for (let index = 0n; ; index++) {
    const head = await r.read(4);
    if (!head) throw truncated();
    const word = head.readUInt32BE(0);
    const last = (word & LAST) !== 0;
    const len = word & ~LAST;
    if (len > maxChunk) throw new IntegrityError(Codes.backupCorrupt, `${what}: frame ${index} claims ${len} bytes, over the ${maxChunk} its header allows`, { hint: 'The file is damaged. Use another backup.' });
    const body = await r.read(len + SEAL_TAG_BYTES);
    if (!body) throw truncated();
    const d = createDecipheriv('aes-256-gcm', k, nonceOf(index), { authTagLength: SEAL_TAG_BYTES });
    d.setAAD(aadOf(hd, index, last));
    d.setAuthTag(body.subarray(len));
    let plain: Buffer;
    try {
      plain = Buffer.concat([d.update(body.subarray(0, len)), d.final()]);
    } catch {
      throw new IntegrityError(Codes.backupCorrupt, `${what}: frame ${index} (at byte ${r.consumed - len - SEAL_TAG_BYTES - 4}) fails its authentication tag`, { hint: 'The file was changed or damaged after it was written. Use another backup.' });
    }
    yield plain;
    if (last) {
      if (!(await r.atEnd())) throw new IntegrityError(Codes.backupCorrupt, `${what} has bytes after its last frame`, { hint: 'The file was changed after it was written. Use another backup.' });
      return;
    }
  }
}
