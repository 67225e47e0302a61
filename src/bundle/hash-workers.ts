import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

// Inline source: the CLI ships as one esbuild file, so a worker script file would not be beside it.
const WORKER = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const open = new Map();
parentPort.on('message', (m) => {
  let h = open.get(m.id);
  if (!h) open.set(m.id, (h = createHash('sha256')));
  if (m.chunk) {
    h.update(new Uint8Array(m.chunk, 0, m.len));
    parentPort.postMessage({ ack: m.chunk }, [m.chunk]);
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
const SLOT = 1 << 20;

/**
 * SHA-256 of entries on worker threads, one Hash per entry in one worker, entries dealt out in
 * turn, so a sequential reader keeps every core hashing. In-flight bytes are bounded: update()
 * waits while all `slots` buffers of 1 MiB are with the workers. The buffers go to a worker and
 * come back, rather than being made per chunk: fresh ones pile up ungarbage-collected (RSS doubled).
 */
export class HashWorkers {
  private readonly workers: Worker[] = [];
  private next = 0;
  private nextId = 0;
  private readonly free: ArrayBuffer[] = [];
  private made = 0;
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
      w = new Worker(WORKER, { eval: true });
      w.on('message', (m: { ack?: ArrayBuffer; id?: number; digest?: string }) => {
        if (m.ack) {
          this.free.push(m.ack);
          this.waiters.shift()?.();
        } else {
          const d = this.done.get(m.id!);
          this.done.delete(m.id!);
          d?.resolve(m.digest!);
        }
      });
      w.on('error', (e) => this.fail(e));
      w.on('exit', (code) => this.fail(new Error(`a hashing worker exited (code ${code})`)));
      this.workers[i] = w;
    }
    return w;
  }

  private async slot(): Promise<ArrayBuffer> {
    for (;;) {
      if (this.failure) throw this.failure;
      const b = this.free.pop();
      if (b) return b;
      if (this.made < this.slots) {
        this.made++;
        return new ArrayBuffer(SLOT);
      }
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
        for (let off = 0; off < c.length; off += SLOT) {
          const part = c.subarray(off, off + SLOT);
          const ab = await this.slot();
          new Uint8Array(ab).set(part);
          w.postMessage({ id, chunk: ab, len: part.length }, [ab]);
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
