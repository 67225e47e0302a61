import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

const SLOT_BYTES = 1 << 20;

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
    h.update(ring.subarray(m.slot * ${SLOT_BYTES}, m.slot * ${SLOT_BYTES} + m.len));
    parentPort.postMessage(m.slot);
  }
  if (m.end) {
    open.delete(m.id);
    parentPort.postMessage({ id: m.id, digest: h.digest('hex') });
  }
});`;

/** An entry being hashed: feed it bytes in order, then end it for its hex digest. */
export interface EntryHash {
  update(chunk: Buffer): Promise<void>;
  digest(): Promise<string>;
}

/** Below this an entry is hashed on the calling thread: a worker round trip costs more. */
const INLINE_MAX = 256 << 10;

/**
 * SHA-256 of entries on worker threads, one Hash per entry in one worker, entries dealt out in
 * turn, so a sequential reader keeps every core hashing. In-flight bytes are bounded: update()
 * waits while all `slots` 1 MiB slots of a shared ring are being hashed. A fixed ring rather
 * than a fresh buffer per chunk: those piled up ungarbage-collected and doubled peak RSS.
 */
export class HashWorkers {
  private readonly workers: Worker[] = [];
  private next = 0;
  private nextId = 0;
  private ring: Uint8Array | undefined;
  private readonly free: number[] = [];
  private waiters: (() => void)[] = [];
  private readonly done = new Map<number, { resolve: (hex: string) => void; reject: (e: Error) => void }>();
  private failure: Error | undefined;

  constructor(
    private readonly count = Math.max(1, Math.min(availableParallelism(), 8)),
    private readonly slots = 8,
  ) {}

  private fail(e: Error): void {
    this.failure ??= e;
    for (const d of this.done.values()) d.reject(e);
    this.done.clear();
    for (const w of this.waiters.splice(0)) w();
  }

  private worker(): Worker {
    const i = this.next++ % this.count;
    let w = this.workers[i];
    if (!w) {
      if (!this.ring) {
        this.ring = new Uint8Array(new SharedArrayBuffer(this.slots * SLOT_BYTES));
        for (let s = 0; s < this.slots; s++) this.free.push(s);
      }
      w = new Worker(WORKER, { eval: true, workerData: this.ring.buffer });
      w.on('message', (m: number | { id: number; digest: string }) => {
        if (typeof m === 'number') {
          this.free.push(m);
          this.waiters.shift()?.();
        } else {
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

  private async slot(): Promise<number> {
    for (;;) {
      if (this.failure) throw this.failure;
      const s = this.free.pop();
      if (s !== undefined) return s;
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  /** A hash for an entry of `size` bytes. */
  entry(size: number): EntryHash {
    if (size <= INLINE_MAX || this.count < 2) {
      const h = createHash('sha256');
      return { update: async (c) => void h.update(c), digest: async () => h.digest('hex') };
    }
    const w = this.worker();
    const id = this.nextId++;
    const digest = new Promise<string>((resolve, reject) => this.done.set(id, { resolve, reject }));
    digest.catch(() => {});
    return {
      update: async (c) => {
        // A copy: the reader's buffer may hold the next entry's bytes too, so it cannot be transferred.
        for (let off = 0; off < c.length; off += SLOT_BYTES) {
          const part = c.subarray(off, off + SLOT_BYTES);
          const slot = await this.slot();
          this.ring!.set(part, slot * SLOT_BYTES);
          w.postMessage({ id, slot, len: part.length });
        }
      },
      digest: () => {
        w.postMessage({ id, end: true });
        return digest;
      },
    };
  }

  async close(): Promise<void> {
    const ws = this.workers.splice(0);
    this.failure ??= new Error('the hashing workers are closed');
    for (const w of ws) w.removeAllListeners('exit');
    await Promise.all(ws.map((w) => w.terminate()));
  }
}
