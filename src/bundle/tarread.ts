
/**
 * A strict, streaming tar reader for ferry's own archives. It yields each entry's raw header bytes
 * (so the verifier can demand the canonical header ferry writes), its fields, and its data as a
 * stream; it checks padding and the end-of-archive blocks are zero. Only ustar and PAX 'x' headers
 * are understood, because that is all ferry writes.
 */
export interface TarEntryHead {
  /** Every header byte of the entry, PAX header included. */
  raw: Buffer;
  path: string;
  type: string;
  size: number;
  mode: number;
  linkpath: string;
}

export class TarFormatError extends Error {
  constructor(
    message: string,
    readonly kind: 'truncated' | 'format',
  ) {
    super(message);
  }
}

const TYPES: Record<string, string> = { '0': 'File', '\0': 'OldFile', '1': 'Link', '2': 'SymbolicLink', '3': 'CharacterDevice', '4': 'BlockDevice', '5': 'Directory', '6': 'FIFO', '7': 'ContiguousFile', x: 'ExtendedHeader', g: 'GlobalExtendedHeader', L: 'GNULongPath', K: 'GNULongLink' };

/** Pulls exact byte counts out of a stream without copying more than it must. */
class ByteReader {
  private chunks: Buffer[] = [];
  private have = 0;
  private done = false;
  private readonly it: AsyncIterator<Buffer>;
  consumed = 0;

  constructor(src: AsyncIterable<Buffer>) {
    this.it = src[Symbol.asyncIterator]();
  }

  private async fill(n: number): Promise<void> {
    while (this.have < n && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else {
        this.chunks.push(r.value);
        this.have += r.value.length;
      }
    }
  }

  /** Exactly n bytes, or fewer at the end of the stream. Copies only when a read spans chunks. */
  async read(n: number): Promise<Buffer> {
    await this.fill(n);
    const take = Math.min(n, this.have);
    const parts: Buffer[] = [];
    let need = take;
    while (need > 0) {
      const c = this.chunks[0]!;
      if (c.length <= need) {
        parts.push(c);
        this.chunks.shift();
        need -= c.length;
      } else {
        parts.push(c.subarray(0, need));
        this.chunks[0] = c.subarray(need);
        need = 0;
      }
    }
    this.have -= take;
    this.consumed += take;
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, take);
  }

  /** Up to n bytes as they arrive, in the chunks the source gave. */
  async *stream(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (!this.have) await this.fill(1);
      if (!this.have) return;
      const c = this.chunks.shift()!;
      if (c.length <= left) {
        this.have -= c.length;
        left -= c.length;
        this.consumed += c.length;
        yield c;
      } else {
        this.chunks.unshift(c.subarray(left));
        this.have -= left;
        this.consumed += left;
        const part = c.subarray(0, left);
        left = 0;
        yield part;
      }
    }
  }

  async atEnd(): Promise<boolean> {
    await this.fill(1);
    return this.have === 0;
  }
}

function str(b: Buffer, off: number, len: number): string {
  const s = b.subarray(off, off + len);
  const z = s.indexOf(0);
  return s.subarray(0, z < 0 ? len : z).toString('utf8');
}

function octal(b: Buffer, off: number, len: number, what: string): number {
  const s = str(b, off, len).trim();
  if (!/^[0-7]*$/.test(s)) throw new TarFormatError(`header field ${what} is not octal`, 'format');
  return s ? parseInt(s, 8) : 0;
}

function checksumOk(h: Buffer): boolean {
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
  return octal(h, 148, 8, 'checksum') === sum;
}

/**
 * PAX records are `<length> <key>=<value>\n`, where the length counts bytes, so the body is read
 * as bytes: a name with non-ASCII characters is longer in bytes than in characters.
 */
function parsePax(body: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  const malformed = () => new TarFormatError('malformed PAX record', 'format');
  let i = 0;
  while (i < body.length) {
    const sp = body.indexOf(0x20, i);
    if (sp < 0 || sp - i > 20) throw malformed();
    const digits = body.toString('latin1', i, sp);
    if (!/^[1-9][0-9]*$/.test(digits)) throw malformed();
    const len = Number(digits);
    if (i + len > body.length || len <= sp - i + 2 || body[i + len - 1] !== 0x0a) throw malformed();
    const rec = body.subarray(sp + 1, i + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) throw malformed();
    out[rec.toString('utf8', 0, eq)] = rec.toString('utf8', eq + 1);
    i += len;
  }
  return out;
}

const isZero = (b: Buffer) => b.every((x) => x === 0);

export interface TarEntry extends TarEntryHead {
  /** Where the entry's data starts in the archive's byte stream. */
  offset: number;
  data: AsyncGenerator<Buffer>;
}

/**
 * Yields entries one at a time; the caller must consume (or drain) `data` before asking for the
 * next. Throws TarFormatError for a cut or malformed archive.
 */
export async function* readTar(src: AsyncIterable<Buffer>): AsyncGenerator<TarEntry> {
  const r = new ByteReader(src);
  let previous: string | undefined;
  // Which entry a bad header belongs to: the name it claims (not trusted, only shown), where it sits, what came before.
  const badChecksum = (h: Buffer) =>
    new TarFormatError(`the header of entry ${JSON.stringify(str(h, 0, 100))} at byte ${r.consumed - 512}${previous ? ` (after ${previous})` : ' (the first entry)'} has a checksum that does not match`, 'format');
  for (;;) {
    let raw = await r.read(512);
    if (raw.length === 0) throw new TarFormatError('the archive ends without its end-of-archive blocks', 'truncated');
    if (raw.length < 512) throw new TarFormatError('the archive ends inside a header', 'truncated');
    if (isZero(raw)) {
      const second = await r.read(512);
      if (second.length < 512) throw new TarFormatError('the archive ends inside its end-of-archive blocks', 'truncated');
      if (!isZero(second)) throw new TarFormatError('a zero block is followed by data', 'format');
      // Anything after the end must be zero padding (some writers pad to a record size).
      for await (const c of r.stream(Number.MAX_SAFE_INTEGER)) if (!isZero(c)) throw new TarFormatError('data follows the end of the archive', 'format');
      return;
    }
    if (!checksumOk(raw)) throw badChecksum(raw);
    let pax: Record<string, string> = {};
    const head: Buffer[] = [];
    if (String.fromCharCode(raw[156]!) === 'x') {
      const size = octal(raw, 124, 12, 'size');
      if (size > 1 << 20) throw new TarFormatError('a PAX header is too large', 'format');
      const body = await r.read(size + ((512 - (size % 512)) % 512));
      if (body.length < size) throw new TarFormatError('the archive ends inside a PAX header', 'truncated');
      pax = parsePax(body.subarray(0, size));
      head.push(raw, body);
      raw = await r.read(512);
      if (raw.length < 512) throw new TarFormatError('the archive ends inside a header', 'truncated');
      if (!checksumOk(raw)) throw badChecksum(raw);
    }
    head.push(raw);
    const typeChar = String.fromCharCode(raw[156]!);
    const type = TYPES[typeChar] ?? `Unknown(${JSON.stringify(typeChar)})`;
    const name = str(raw, 0, 100);
    const prefix = raw.subarray(257, 263).toString('latin1') === 'ustar\0' ? str(raw, 345, 155) : '';
    const p = pax.path ?? (prefix ? `${prefix}/${name}` : name);
    const size = pax.size !== undefined ? Number(pax.size) : octal(raw, 124, 12, 'size');
    if (!Number.isSafeInteger(size) || size < 0) throw new TarFormatError('an entry size is invalid', 'format');
    const dataSize = type === 'File' || type === 'OldFile' || type === 'ContiguousFile' ? size : 0;
    const entry: TarEntry = {
      raw: Buffer.concat(head),
      path: p,
      type,
      size: dataSize,
      mode: octal(raw, 100, 8, 'mode'),
      linkpath: pax.linkpath ?? str(raw, 157, 100),
      offset: r.consumed,
      data: (async function* () {
        let got = 0;
        for await (const c of r.stream(dataSize)) {
          got += c.length;
          yield c;
        }
        if (got < dataSize) throw new TarFormatError(`the archive ends inside ${p}`, 'truncated');
        const pad = (512 - (dataSize % 512)) % 512;
        if (pad) {
          const z = await r.read(pad);
          if (z.length < pad) throw new TarFormatError(`the archive ends inside the padding of ${p}`, 'truncated');
          if (!isZero(z)) throw new TarFormatError(`the padding after ${p} is not zero`, 'format');
        }
      })(),
    };
    previous = p;
    yield entry;
  }
}
