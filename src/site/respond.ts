import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import type http from 'node:http';
import path from 'node:path';
import type { Route } from './metrics.js';

// How the site service answers: one request's context, errors as the distribution spec words them,
// bodies, files with ranges and ETags, and the log-safe form of what a client sent.

/**
 * The error codes of the OCI distribution spec, the only ones a client may be sent (500 says
 * UNKNOWN, as distribution does). ferry's own detail goes in `message` and `detail`.
 */
export const SPEC_ERROR_CODES = [
  'BLOB_UNKNOWN',
  'BLOB_UPLOAD_INVALID',
  'BLOB_UPLOAD_UNKNOWN',
  'DIGEST_INVALID',
  'MANIFEST_BLOB_UNKNOWN',
  'MANIFEST_INVALID',
  'MANIFEST_UNKNOWN',
  'NAME_INVALID',
  'NAME_UNKNOWN',
  'SIZE_INVALID',
  'UNAUTHORIZED',
  'DENIED',
  'UNSUPPORTED',
  'TOOMANYREQUESTS',
] as const;
export type SpecErrorCode = (typeof SPEC_ERROR_CODES)[number] | 'UNKNOWN';

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: SpecErrorCode,
    message: string,
    readonly detail?: unknown,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export const API_HEADER = { 'Docker-Distribution-API-Version': 'registry/2.0' };

/** What one response reads or hands to its socket at a time. */
export const CHUNK = 64 << 10;

/** Log-safe: no control characters, bounded length. */
export const clean = (s: string, max = 512) => {
  const t = s.replace(/[\x00-\x1f\x7f"\\]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return t.length > max ? `${t.slice(0, max)}…` : t;
};

export interface Ctx {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  route: Route;
  sent: number;
  head: boolean;
  /** The server is shutting down: answers ask the client to close the connection. */
  closing: () => boolean;
}

export type RangeResult = { kind: 'full' } | { kind: 'partial'; start: number; end: number } | { kind: 'unsatisfiable' };

/**
 * One `bytes=` range is honoured. Other units and multi-range requests are ignored (RFC 9110 lets a
 * server do so, and it spares us multipart bodies and their amplification). A single byte range
 * that is malformed or lies outside the content is refused with 416.
 */
export function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return { kind: 'full' };
  const m = /^\s*bytes\s*=\s*(.*)$/i.exec(header);
  if (!m) return { kind: 'full' };
  const spec = m[1]!.trim();
  if (spec.includes(',')) return { kind: 'full' };
  const r = /^(\d*)-(\d*)$/.exec(spec);
  if (!r || (r[1] === '' && r[2] === '')) return { kind: 'unsatisfiable' };
  // Numbers are compared as exact integers: a 30-digit position is just "past the end".
  const num = (s: string) => (s.length > 15 ? Number.MAX_SAFE_INTEGER : Number(s));
  if (r[1] === '') {
    const n = num(r[2]!);
    if (n === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'partial', start: Math.max(0, size - n), end: size - 1 };
  }
  const start = num(r[1]!);
  const last = r[2] === '' ? undefined : num(r[2]!);
  if (start >= size || (last !== undefined && last < start)) return { kind: 'unsatisfiable' };
  return { kind: 'partial', start, end: last === undefined ? size - 1 : Math.min(last, size - 1) };
}

export const setCommon = (c: Ctx) => {
  c.res.setHeader('X-Content-Type-Options', 'nosniff');
  if (c.closing()) c.res.setHeader('Connection', 'close');
};

export const sendBody = (c: Ctx, status: number, body: Buffer | string, headers: Record<string, string | number>) => {
  const buf = typeof body === 'string' ? Buffer.from(body) : body;
  setCommon(c);
  c.res.writeHead(status, { 'Content-Length': buf.length, ...headers });
  if (c.head) c.res.end();
  else if (buf.length <= CHUNK) {
    c.sent += buf.length;
    c.res.end(buf);
  } else {
    // A large manifest goes out a chunk per 'drain', as files do (TLS would copy it whole).
    let at = 0;
    void pump(c, async () => (at < buf.length ? buf.subarray(at, (at += CHUNK)) : undefined));
  }
};

/**
 * Buffers for file reads, reused. A fresh buffer per read left garbage until the next collection,
 * and malloc kept the pages it had grown to, so RSS stayed at its high-water mark after a flood.
 * These are resizable ArrayBuffers, which V8 maps itself: resizing one to nothing hands its pages
 * back at once.
 *
 * Two sizes. Every response may take CHUNK buffers (two at a time: one in the socket, one read
 * ahead), so a connection that stops reading holds 128 KiB. A response whose client keeps up also
 * takes BIG ones from a pool shared by the process and bounded by BIG_MAX: each read, write and
 * drain costs about the same whatever its size, and a sixteenth as many of them is what the CPU
 * profile asked for. A connection earns big buffers once EARN_BYTES have drained from it (more than
 * the kernel's socket buffers take from a client that never reads) and while it drains promptly, so
 * clients that never read never hold them, and one that stops holds two until the connection cap
 * closes it.
 */
interface Resizable extends ArrayBuffer {
  readonly resizable: boolean;
  readonly maxByteLength: number;
  resize(n: number): void;
}
const newBuffer = (n: number) => new (ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => Resizable)(n, { maxByteLength: n });
export const BIG = 1 << 20;
/** Big buffers in use or spare at once, in the whole service: 32 MiB, two each for 16 connections. */
const BIG_MAX = 32;
const EARN_BYTES = 16 << 20;
/** Bytes each connection has drained, counted up to EARN_BYTES. */
const drainedBytes = new WeakMap<object, number>();
/** A drain slower than this sends the response back to CHUNK buffers. */
const PROMPT_DRAIN_MS = 200;
class Pool {
  private readonly spare: Resizable[] = [];
  private out = 0;
  /** With a `max`, buffers handed out and not given back. One a response dropped (a write whose
   * callback never came) is counted back when it is collected, so a leak cannot shrink the pool for
   * good. Without one nothing is tracked: the tracking kept freed chunks mapped for seconds longer. */
  private readonly taken = new WeakMap<Resizable, number>();
  private readonly outIds = new Set<number>();
  private nextId = 0;
  private readonly lost = new FinalizationRegistry<number>((id) => {
    if (this.outIds.delete(id)) this.out--;
  });
  /** The fewest spare buffers since the last trim: that many were not needed. */
  private low = 0;
  private trimmer: NodeJS.Timeout | undefined;
  /**
   * `spareMax` spare buffers are kept. With `trimMs`, spares are kept up to `max`, so that a steady
   * load never frees and maps again, and every `trimMs` those that went unused are freed.
   */
  constructor(
    readonly size: number,
    private spareMax: number,
    private max = Infinity,
    private readonly trimMs = 0,
  ) {}
  /** Narrows the pool to a share of itself (a worker's): what is out stays out until given back. */
  narrow(spareMax: number, max: number): void {
    this.spareMax = spareMax;
    if (this.max !== Infinity) this.max = max;
    while (this.spare.length > spareMax) this.spare.pop()!.resize(0);
  }
  take(): Buffer | undefined {
    if (this.out >= this.max) return undefined;
    let ab = this.spare.pop();
    const counted = this.max !== Infinity;
    if (!ab) {
      ab = newBuffer(this.size);
      if (counted) {
        const id = this.nextId++;
        this.taken.set(ab, id);
        this.lost.register(ab, id);
      }
    }
    this.low = Math.min(this.low, this.spare.length);
    if (counted) {
      this.out++;
      this.outIds.add(this.taken.get(ab)!);
    }
    return Buffer.from(ab);
  }
  /** Takes back a buffer from take (or a view of one) once nothing uses it any more. */
  give(ab: Resizable): void {
    if (this.max !== Infinity) {
      if (!this.outIds.delete(this.taken.get(ab)!)) return;
      this.out--;
    }
    if (this.spare.length < this.spareMax) this.spare.push(ab);
    else ab.resize(0);
    if (this.trimMs && !this.trimmer) {
      this.low = this.spare.length;
      this.trimmer = setInterval(() => this.trim(), this.trimMs).unref();
    }
  }
  private trim(): void {
    for (let n = this.low; n > 0; n--) this.spare.shift()!.resize(0);
    this.low = this.spare.length;
    if (!this.spare.length) {
      clearInterval(this.trimmer);
      this.trimmer = undefined;
    }
  }
}
const SPARE_CHUNKS = 64;
const chunks = new Pool(CHUNK, SPARE_CHUNKS);
const bigs = new Pool(BIG, BIG_MAX, BIG_MAX, 2000);

/**
 * This process is one of `workers` serving the one service: the buffer pools, sized for the whole
 * service, shrink to its share, so that more cores do not mean more memory.
 */
export function shareBuffers(workers: number): { big: number; spareChunks: number } {
  const big = Math.max(2, Math.floor(BIG_MAX / Math.max(1, workers)));
  const spareChunks = Math.max(2, Math.floor(SPARE_CHUNKS / Math.max(1, workers)));
  bigs.narrow(big, big);
  chunks.narrow(spareChunks, Infinity);
  return { big, spareChunks };
}
/**
 * Bytes of buffers responses hold now, and the most they held at once: what the memory bound is
 * about, counted where buffers are taken and given back, so a test need not wait for the collector.
 */
let held = 0;
let heldPeak = 0;
export const bufferBytes = () => ({ held, peak: heldPeak });
const takeChunk = (big: boolean) => {
  const b = (big && bigs.take()) || chunks.take()!;
  held += b.length;
  heldPeak = Math.max(heldPeak, held);
  return b;
};
const giveChunk = (b: Buffer) => {
  const ab = b.buffer as Resizable;
  if (!ab.resizable || ab.byteLength !== ab.maxByteLength) return;
  held -= ab.maxByteLength;
  if (ab.maxByteLength === CHUNK) chunks.give(ab);
  else if (ab.maxByteLength === BIG) bigs.give(ab);
};

/** true once the response drains, false if it closes first. */
const drained = (res: http.ServerResponse) =>
  new Promise<boolean>((resolve) => {
    if (res.destroyed) return resolve(false);
    const settle = (ok: boolean) => () => {
      res.off('drain', onDrain);
      res.off('close', onClose);
      resolve(ok);
    };
    const onDrain = settle(true);
    const onClose = settle(false);
    res.on('drain', onDrain);
    res.on('close', onClose);
  });

/**
 * Writes what `read` returns (undefined at the end) to the response. The next chunk is read while the
 * socket sends the last, and nothing more is handed over until the socket drains: a client that
 * stops reading holds two chunks, whatever the size of the body. Each chunk goes to `done` exactly
 * once, when the socket is done with it or it was never written. A failed read cuts the response,
 * whose length is already promised.
 */
async function pump(c: Ctx, read: (prompt: boolean) => Promise<Buffer | undefined>, done: (b: Buffer) => void = () => {}): Promise<void> {
  const res = c.res;
  /** The connection has shown that it reads, and drained the last write promptly. */
  const sock = res.socket ?? res;
  let prompt = (drainedBytes.get(sock) ?? 0) >= EARN_BYTES;
  let unDrained = 0;
  let next = read(prompt);
  try {
    for (;;) {
      const chunk = await next;
      if (!chunk) break;
      next = Promise.resolve(undefined);
      if (res.destroyed) {
        done(chunk);
        return;
      }
      c.sent += chunk.length;
      const room = res.write(chunk, () => done(chunk));
      unDrained += chunk.length;
      next = read(prompt);
      if (room) continue;
      const t = performance.now();
      if (!(await drained(res))) return;
      const earned = Math.min(EARN_BYTES, (drainedBytes.get(sock) ?? 0) + unDrained);
      unDrained = 0;
      drainedBytes.set(sock, earned);
      prompt = earned >= EARN_BYTES && performance.now() - t < PROMPT_DRAIN_MS;
    }
    res.end();
  } catch {
    res.destroy();
  } finally {
    // The read ahead finishes before the caller closes the file, and its chunk goes back.
    const left = await next.catch(() => undefined);
    if (left) done(left);
  }
}

export const sendError = (c: Ctx, err: HttpError) => {
  const body = JSON.stringify({ errors: [{ code: err.code, message: err.message, ...(err.detail !== undefined ? { detail: err.detail } : {}) }] });
  const api = c.route === 'files' || c.route === 'files_index' ? {} : API_HEADER;
  sendBody(c, err.status, body, { 'Content-Type': 'application/json', ...api, ...err.headers });
};

export const notModified = (c: Ctx, etag: string): boolean => {
  const inm = c.req.headers['if-none-match'];
  if (!inm || !inm.split(',').some((t) => t.trim() === etag || t.trim() === '*')) return false;
  setCommon(c);
  c.res.writeHead(304, { ETag: etag });
  c.res.end();
  return true;
};

/** Streams a file (or a range of it) from an open handle; never holds it in memory. */
export const sendFile = async (c: Ctx, file: string, headers: Record<string, string>, etag: string, onMissing: () => HttpError) => {
  let fh: FileHandle;
  try {
    fh = await fs.open(file, 'r');
  } catch {
    throw onMissing();
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw onMissing();
    if (notModified(c, etag)) return;
    const range = parseRange(c.req.headers.range, st.size);
    if (range.kind === 'unsatisfiable') {
      throw new HttpError(416, 'UNSUPPORTED', 'the requested range cannot be satisfied', { size: st.size, range: clean(c.req.headers.range ?? '', 100) }, { 'Content-Range': `bytes */${st.size}` });
    }
    const start = range.kind === 'partial' ? range.start : 0;
    const end = range.kind === 'partial' ? range.end : st.size - 1;
    const len = st.size === 0 ? 0 : end - start + 1;
    setCommon(c);
    c.res.writeHead(range.kind === 'partial' ? 206 : 200, {
      ...headers,
      ETag: etag,
      'Accept-Ranges': 'bytes',
      'Content-Length': len,
      ...(range.kind === 'partial' ? { 'Content-Range': `bytes ${start}-${end}/${st.size}` } : {}),
    });
    if (c.head || len === 0) {
      c.res.end();
      return;
    }
    let pos = start;
    await pump(
      c,
      async (prompt) => {
        if (pos > end) return undefined;
        const b = takeChunk(prompt && end - pos >= CHUNK);
        let bytesRead;
        try {
          ({ bytesRead } = await fh.read(b, 0, Math.min(b.length, end - pos + 1), pos));
        } catch (e) {
          giveChunk(b);
          throw e;
        }
        if (bytesRead === 0) {
          giveChunk(b);
          throw new Error(`${file} ended at ${pos} of ${st.size} bytes`);
        }
        pos += bytesRead;
        return bytesRead === b.length ? b : b.subarray(0, bytesRead);
      },
      giveChunk,
    );
  } finally {
    await fh.close().catch(() => {});
  }
};

/** The real path of a regular file under `rootReal`, or undefined: symlinks may not lead outside. */
export async function realFileUnder(rootReal: string, candidate: string): Promise<string | undefined> {
  try {
    const real = await fs.realpath(candidate);
    if (real !== rootReal && !real.startsWith(rootReal + path.sep)) return undefined;
    return (await fs.stat(real)).isFile() ? real : undefined;
  } catch {
    return undefined;
  }
}
