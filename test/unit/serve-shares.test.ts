import { describe, expect, it } from 'vitest';
import { connectionsFor, DEFAULT_CEILING, MIN_SHARE, shareOf } from '../../src/site/connections.js';
import { shareBuffers } from '../../src/site/respond.js';
import { workerLimits } from '../../src/site/workers.js';

describe('the site service bounds its memory as one service, whatever the number of workers', () => {
  it('splits the connection cap across the workers, so that more cores do not hold more connections', async () => {
    expect(shareOf(DEFAULT_CEILING, 1)).toBe(DEFAULT_CEILING);
    expect(shareOf(DEFAULT_CEILING, 64) * 64).toBe(DEFAULT_CEILING);
    expect((await workerLimits({ maxConnections: 20 }, 2)).maxConnections).toBe(10);
    // By default the service's ceiling, shared, and never above what one process's open files allow.
    const auto = (await workerLimits(undefined, 64)).maxConnections!;
    expect(auto).toBe(Math.min(DEFAULT_CEILING / 64, connectionsFor(1 << 20)));
    // A tiny cap still leaves each worker a few.
    expect((await workerLimits({ maxConnections: 3 }, 4)).maxConnections).toBe(MIN_SHARE);
  });

  it('shrinks the buffer pools to a worker share', () => {
    expect(shareBuffers(1)).toEqual({ big: 32, spareChunks: 64 });
    expect(shareBuffers(64)).toEqual({ big: 2, spareChunks: 2 });
    expect(shareBuffers(4)).toEqual({ big: 8, spareChunks: 16 });
  });
});
