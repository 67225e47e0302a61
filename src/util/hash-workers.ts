import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/*
 * SHA-256 on worker threads over one ring of shared memory, for the build (which reads straight
 * into leased slots, so the bytes it writes are hashed in place) and for verify (whose reader's
 * buffers are copied into slots). One Hash per entry, in one worker, so an entry's bytes are
 * hashed in order; entries are dealt to the workers in turn unless pinned to a lane. A fixed ring
 * rather than a fresh buffer per chunk: those piled up ungarbage-collected and doubled peak RSS.
 */

// Inline source: the CLI ships as one esbuild file, so a worker script file would not be beside it.
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const ring = new Uint8Array(workerData);
const open = new Map();
parentPort.on('message', (m) => {
  let h = open.get(m.id);
  if (!h) open.set(m.id, (h = createHash('sha256')));
  if (m.len) {
    h.update(ring.subarray(m.off, m.off + m.len));
    parentPort.postMessage(m.slot);
  }
  if (m.end) {
    open.delete(m.id);
    parentPort.postMessage({ id: m.id, digest: h.digest('hex') });
  }
});`;

/** An entry being hashed: feed it bytes in order, then end it for its hex digest. */
export interface EntryHash {
  /**
   * Hashes the entry's next bytes. Resolves once `chunk` is the caller's again: bytes of a leased
   * slot are hashed in place (the slot stays busy until they are), any others are copied first.
   */
  update(chunk: Buffer): Promise<void>;
  digest(): Promise<string>;
}

/** A slot of the ring, to fill with bytes that are then hashed in place. */
export interface Slot {
  readonly buf: Buffer;
  /** Done with it; it is reused once every hash of its bytes is done too. */
  release(): void;
}

export interface HashWorkersOptions {
  /** Worker threads; 0 hashes on the calling thread. Default: every core up to 8, none on one core. */
  workers?: number;
  /** Slots in the ring: bounds the bytes in flight. */
  slots?: number;
  slotBytes?: number;
  /** Entries of at most this many bytes are hashed on the calling thread: a worker round trip costs more. */
  inlineMax?: number;
}

const defaultWorkers = () => {
  const n = availableParallelism();
  return n < 2 ? 0 : Math.min(n, 8);
};

export class HashWorkers {
  readonly slotBytes: number;
  private readonly count: number;
  private readonly slots: number;
  private readonly inlineMax: number;
  private readonly workers: Worker[] = [];
  private next = 0;
  private nextId = 0;
  private ring: Buffer | undefined;
  /** Per slot: a lease plus the hashes of its bytes still to be done. */
  private holds: number[] = [];
  private readonly free: number[] = [];
  private waiters: (() => void)[] = [];
  private readonly done = new Map<number, { resolve: (hex: string) => void; reject: (e: Error) => void }>();
  private failure: Error | undefined;

  constructor(o: HashWorkersOptions = {}) {
    this.count = o.workers ?? defaultWorkers();
    this.slots = o.slots ?? 8;
    this.slotBytes = o.slotBytes ?? 1 << 20;
    this.inlineMax = o.inlineMax ?? 256 << 10;
  }

  /** A pool whose workers are already running; if none can start, one that hashes on the calling thread. */
  static async start(o: HashWorkersOptions = {}): Promise<HashWorkers> {
    const pool = new HashWorkers(o);
    try {
      await Promise.all(
        Array.from({ length: pool.count }, (_, i) => {
          const w = pool.worker(i);
          return new Promise<void>((resolve, reject) => {
            w.once('online', resolve);
            w.once('error', reject);
          });
        }),
      );
      return pool;
    } catch {
      await pool.close();
      return new HashWorkers({ ...o, workers: 0 });
    }
  }

  private fail(e: Error): void {
    this.failure ??= e;
    for (const d of this.done.values()) d.reject(e);
    this.done.clear();
    for (const w of this.waiters.splice(0)) w();
  }

  private ringBuf(): Buffer {
    if (!this.ring) {
      this.ring = Buffer.from(new SharedArrayBuffer(this.slots * this.slotBytes));
      this.holds = new Array<number>(this.slots).fill(0);
      for (let s = this.slots - 1; s >= 0; s--) this.free.push(s);
    }
    return this.ring;
  }

  private worker(i: number): Worker {
    let w = this.workers[i];
    if (!w) {
      w = new Worker(WORKER, { eval: true, workerData: this.ringBuf().buffer });
      w.on('message', (m: number | { id: number; digest: string }) => {
        if (typeof m === 'number') this.drop(m);
        else {
          const d = this.done.get(m.id);
          this.done.delete(m.id);
          d?.resolve(m.digest);
        }
      });
      w.on('error', (e) => this.fail(e));
      w.on('exit', (code) => this.fail(new Error(`a hashing worker exited (code ${code})`)));
      this.workers[i] = w;
    }
    return w;
  }

  private drop(slot: number): void {
    if (--this.holds[slot]! > 0) return;
    this.free.push(slot);
    this.waiters.shift()?.();
  }

  private async acquire(): Promise<number> {
    this.ringBuf();
    for (;;) {
      if (this.failure) throw this.failure;
      const s = this.free.pop();
      if (s !== undefined) {
        this.holds[s] = 1;
        return s;
      }
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  /** A free slot of the ring (waits for one): bytes read into it are hashed without a copy. */
  async lease(): Promise<Slot> {
    const s = await this.acquire();
    let held = true;
    return {
      buf: this.ring!.subarray(s * this.slotBytes, (s + 1) * this.slotBytes),
      release: () => {
        if (held) this.drop(s);
        held = false;
      },
    };
  }

  /**
   * A hash for an entry of `size` bytes (unknown: as if large), on worker `lane` (modulo the
   * workers) when given, so two streams the caller runs side by side hash on different cores.
   */
  entry(size?: number, lane?: number): EntryHash {
    if (this.count === 0 || (size !== undefined && size <= this.inlineMax)) {
      const h = createHash('sha256');
      return { update: async (c) => void h.update(c), digest: async () => h.digest('hex') };
    }
    const w = this.worker((lane ?? this.next++) % this.count);
    const id = this.nextId++;
    const digest = new Promise<string>((resolve, reject) => this.done.set(id, { resolve, reject }));
    digest.catch(() => {});
    const ring = this.ringBuf();
    const post = (slot: number, off: number, len: number) => w.postMessage({ id, slot, off, len });
    return {
      update: async (c) => {
        if (this.failure) throw this.failure;
        if (c.buffer === ring.buffer) {
          const slot = Math.floor(c.byteOffset / this.slotBytes);
          if (c.byteOffset + c.length > (slot + 1) * this.slotBytes) throw new Error('a hashed chunk spans two slots');
          if (!c.length) return;
          this.holds[slot]!++;
          post(slot, c.byteOffset, c.length);
          return;
        }
        // A copy: the reader's buffer may hold the next entry's bytes too, so it cannot be transferred.
        for (let off = 0; off < c.length; off += this.slotBytes) {
          const part = c.subarray(off, off + this.slotBytes);
          const slot = await this.acquire();
          ring.set(part, slot * this.slotBytes);
          post(slot, slot * this.slotBytes, part.length);
        }
      },
      digest: () => {
        if (!this.failure) w.postMessage({ id, end: true });
        return digest;
      },
    };
  }

  async close(): Promise<void> {
    const ws = this.workers.splice(0);
    for (const w of ws) w.removeAllListeners('exit');
    // Nothing waits forever on a closed pool.
    this.fail(new Error('the hashing workers are closed'));
    await Promise.all(ws.map((w) => w.terminate()));
  }
}
