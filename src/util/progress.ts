import { formatBytes } from './size.js';

export type Verbosity = 'quiet' | 'normal' | 'verbose';

/**
 * What long-running work reports to. The CLI makes one that draws a live line on a TTY and prints
 * plain lines otherwise; library callers and tests use `silentReporter`.
 */
export interface Reporter {
  info(msg: string): void;
  verbose(msg: string): void;
  warn(msg: string): void;
  /** Bytes are about to be fetched for one blob. */
  blobStart(size: number): void;
  /** Bytes arrived (any blob). */
  bytes(n: number): void;
  /** A blob finished (stored or already present). */
  blobDone(): void;
  /** Stops any live display; call once at the end. */
  done(): void;
  /** A new phase counts other things (a bundle's entries, not blobs): counts start again under this name. */
  counting?(noun: string): void;
}

export const silentReporter: Reporter = {
  info() {},
  verbose() {},
  warn() {},
  blobStart() {},
  bytes() {},
  blobDone() {},
  done() {},
};

export interface ConsoleReporterOptions {
  verbosity: Verbosity;
  /** Write stream for messages and progress; stderr so that stdout stays for results. */
  stream?: NodeJS.WriteStream;
  tty?: boolean;
}

export class ConsoleReporter implements Reporter {
  private readonly out: NodeJS.WriteStream;
  private readonly tty: boolean;
  private readonly verbosity: Verbosity;
  private timer: NodeJS.Timeout | undefined;
  private totalBytes = 0;
  private gotBytes = 0;
  private blobsTotal = 0;
  private blobsDone = 0;
  private noun = 'blobs';
  private started = Date.now();
  private lastPlain = 0;
  private drawn = false;

  constructor(opts: ConsoleReporterOptions) {
    this.out = opts.stream ?? process.stderr;
    this.tty = opts.tty ?? !!this.out.isTTY;
    this.verbosity = opts.verbosity;
  }

  private clear() {
    if (this.drawn) {
      this.out.write('\r\x1b[2K');
      this.drawn = false;
    }
  }
  private line(msg: string) {
    this.clear();
    this.out.write(`${msg}\n`);
  }
  info(msg: string) {
    if (this.verbosity !== 'quiet') this.line(msg);
  }
  verbose(msg: string) {
    if (this.verbosity === 'verbose') this.line(msg);
  }
  warn(msg: string) {
    this.line(`warning: ${msg}`);
  }
  blobStart(size: number) {
    this.blobsTotal++;
    this.totalBytes += size;
    this.ensureTimer();
  }
  bytes(n: number) {
    this.gotBytes += n;
  }
  blobDone() {
    this.blobsDone++;
  }
  counting(noun: string) {
    this.noun = noun;
    this.blobsTotal = this.blobsDone = this.totalBytes = this.gotBytes = 0;
    this.started = Date.now();
  }
  private status(): string {
    const secs = Math.max((Date.now() - this.started) / 1000, 0.001);
    return `${this.noun} ${this.blobsDone}/${this.blobsTotal}  ${formatBytes(this.gotBytes)}/${formatBytes(this.totalBytes)}  ${formatBytes(Math.round(this.gotBytes / secs))}/s`;
  }
  private ensureTimer() {
    if (this.timer || this.verbosity === 'quiet') return;
    this.timer = setInterval(() => this.tick(), this.tty ? 200 : 1000);
    this.timer.unref();
  }
  private tick() {
    // Idle once every blob started so far is done: later work (an install's next steps) is not a transfer.
    if (this.blobsDone >= this.blobsTotal) {
      clearInterval(this.timer);
      this.timer = undefined;
      this.clear();
      return;
    }
    if (this.tty) {
      this.out.write(`\r\x1b[2K${this.status()}`);
      this.drawn = true;
    } else if (Date.now() - this.lastPlain >= 10_000) {
      // Plain logs get a line every 10 s at most, so CI logs stay readable.
      this.lastPlain = Date.now();
      this.out.write(`progress: ${this.status()}\n`);
    }
  }
  done() {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.clear();
    if (this.blobsTotal > 0 && this.verbosity !== 'quiet') this.out.write(`done: ${this.status()}\n`);
  }
}
