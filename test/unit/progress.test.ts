import { afterEach, describe, expect, it, vi } from 'vitest';
import { ConsoleReporter } from '../../src/util/progress.js';

afterEach(() => {
  vi.useRealTimers();
});

describe('progress on a plain log', () => {
  it('prints a line every 10 s while blobs move, and nothing once they are all done', () => {
    vi.useFakeTimers();
    const lines: string[] = [];
    const stream = { write: (s: string) => lines.push(s), isTTY: false } as unknown as NodeJS.WriteStream;
    const r = new ConsoleReporter({ verbosity: 'normal', stream, tty: false });
    r.blobStart(100);
    r.bytes(40);
    vi.advanceTimersByTime(12_000);
    // At the first tick, then 10 s later.
    expect(lines.filter((l) => l.startsWith('progress:'))).toHaveLength(2);
    r.bytes(60);
    r.blobDone();
    vi.advanceTimersByTime(60_000);
    // An install goes on for minutes after its unpack: no more "64/64" lines with a falling rate.
    expect(lines.filter((l) => l.startsWith('progress:'))).toHaveLength(2);
    r.blobStart(10);
    vi.advanceTimersByTime(5_000);
    expect(lines.filter((l) => l.startsWith('progress:'))).toHaveLength(3);
  });
});
