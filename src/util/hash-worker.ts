import { createHash, type Hash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

/*
 * sha256 off the main thread, so a writer can hash every byte it writes while the disk works:
 * the main thread reads and writes, one worker hashes. Buffers in SharedArrayBuffers are hashed
 * in place; any other bytes are copied once. Streams are numbered; the worker answers in order, so
 * one answer means every earlier message is done with its bytes.
 */

/** The worker, as source: a separate file would not survive bundling into ferry.mjs. */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hashes = new Map();
parentPort.on('message', (m) => {
  if (m.op === 'update') {
    let h = hashes.get(m.id);
    if (!h) hashes.set(m.id, (h = createHash('sha256')));
    h.update(m.sab ? new Uint8Array(m.sab, m.off, m.len) : m.bytes);
    if (m.seq !== undefined) parentPort.postMessage({ seq: m.seq });
  } else if (m.op === 'digest') {
    const h = hashes.get(m.id) ?? createHash('sha256');
    hashes.delete(m.id);
    parentPort.postMessage({ seq: m.seq, hex: h.digest('hex') });
  } else parentPort.postMessage({ seq: m.seq });
});
`;

export interface StreamHasher {
  /** A new stream, hashed on worker `lane` (modulo the number of workers), so two streams can run at once. */
  stream(lane?: number): number;
  /** Hashes `bytes` into stream `id`. A shared buffer must stay untouched until `settled()` resolves. */
  update(id: number, bytes: Buffer): void;
  digest(id: number): Promise<string>;
  /** Resolves when every update so far has been hashed, so their buffers may be reused. */
  settled(): Promise<void>;
  close(): Promise<void>;
}

/** A Buffer over shared memory, which the hashing worker reads in place. */
export const sharedBuffer = (size: number): Buffer => Buffer.from(new SharedArrayBuffer(size));

/** One worker and the answers it owes. */
class Lane {
  private seq = 0;
  private readonly waiting = new Map<number, { resolve: (hex: string | undefined) => void; reject: (e: unknown) => void }>();
  failed: unknown;

  constructor(readonly worker: Worker) {
    worker.on('message', (m: { seq: number; hex?: string }) => {
      this.waiting.get(m.seq)?.resolve(m.hex);
      this.waiting.delete(m.seq);
    });
    worker.on('error', (e) => this.fail(e));
    worker.on('exit', (code) => this.fail(new Error(`the hashing worker exited (${code})`)));
  }

  private fail(e: unknown): void {
    this.failed ??= e;
    for (const w of this.waiting.values()) w.reject(e);
    this.waiting.clear();
  }

  ask(msg: Record<string, unknown>): Promise<string | undefined> {
    if (this.failed) return Promise.reject(this.failed);
    const seq = this.seq++;
    return new Promise((resolve, reject) => {
      this.waiting.set(seq, { resolve, reject });
      this.worker.postMessage({ ...msg, seq });
    });
  }

  post(id: number, bytes: Buffer): void {
    if (this.failed) throw this.failed;
    if (bytes.buffer instanceof SharedArrayBuffer) {
      this.worker.postMessage({ op: 'update', id, sab: bytes.buffer, off: bytes.byteOffset, len: bytes.length });
    } else {
      const copy = new Uint8Array(bytes);
      this.worker.postMessage({ op: 'update', id, bytes: copy }, [copy.buffer]);
    }
  }
}

class WorkerHasher implements StreamHasher {
  private next = 0;
  private readonly laneOf = new Map<number, Lane>();

  constructor(private readonly lanes: Lane[]) {}

  stream(lane = 0): number {
    const id = this.next++;
    this.laneOf.set(id, this.lanes[lane % this.lanes.length]!);
    return id;
  }

  update(id: number, bytes: Buffer): void {
    this.laneOf.get(id)!.post(id, bytes);
  }

  async digest(id: number): Promise<string> {
    const lane = this.laneOf.get(id)!;
    this.laneOf.delete(id);
    return (await lane.ask({ op: 'digest', id }))!;
  }

  async settled(): Promise<void> {
    await Promise.all(this.lanes.map((l) => l.ask({ op: 'settled' })));
  }

  async close(): Promise<void> {
    for (const l of this.lanes) l.worker.removeAllListeners('exit');
    await Promise.all(this.lanes.map((l) => l.worker.terminate()));
  }
}

/** The same, on the calling thread: where a worker cannot start. */
class InlineHasher implements StreamHasher {
  private next = 0;
  private readonly hashes = new Map<number, Hash>();
  stream(): number {
    const id = this.next++;
    this.hashes.set(id, createHash('sha256'));
    return id;
  }
  update(id: number, bytes: Buffer): void {
    this.hashes.get(id)!.update(bytes);
  }
  async digest(id: number): Promise<string> {
    const h = this.hashes.get(id)!;
    this.hashes.delete(id);
    return h.digest('hex');
  }
  async settled(): Promise<void> {}
  async close(): Promise<void> {}
}

/** A hasher with `workers` threads of its own (on the calling thread if none can start); close it when done. */
export async function startHasher(workers = 1): Promise<StreamHasher> {
  const started: Worker[] = [];
  try {
    for (let i = 0; i < workers; i++) {
      const w = new Worker(WORKER_SOURCE, { eval: true });
      started.push(w);
      await new Promise<void>((resolve, reject) => {
        w.once('online', resolve);
        w.once('error', reject);
      });
    }
    return new WorkerHasher(started.map((w) => new Lane(w)));
  } catch {
    await Promise.all(started.map((w) => w.terminate()));
    return new InlineHasher();
  }
}
