import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Host } from '../../src/install/host.js';
import { withHostLock } from '../../src/install/plan.js';
import { tmpdir } from '../helpers/peers.js';

describe("a node's operation lock", () => {
  it('makes a second run wait while the first one lives, then lets it in', async () => {
    const host = new Host(await tmpdir());
    const order: string[] = [];
    let release!: () => void;
    const first = withHostLock(host, 'upgrade', () => new Promise<void>((r) => (release = () => (order.push('first'), r()))));
    await new Promise((r) => setTimeout(r, 50));
    const waited: number[] = [];
    const second = withHostLock(host, 'upgrade', async () => void order.push('second'), { onWait: (pid) => waited.push(pid) });
    await new Promise((r) => setTimeout(r, 300));
    expect(order).toEqual([]);
    expect(waited).toEqual([process.pid]);
    release();
    await Promise.all([first, second]);
    expect(order).toEqual(['first', 'second']);
    await expect(fs.stat(host.p('/var/lib/ferry/state/upgrade.lock'))).rejects.toThrow();
  });

  it('takes over the lock of a process that is gone', async () => {
    const host = new Host(await tmpdir());
    const dead = spawn('true');
    await new Promise((r) => dead.on('close', r));
    const file = host.p('/var/lib/ferry/state/upgrade.lock');
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(file, `${dead.pid}\n`);
    expect(await withHostLock(host, 'upgrade', async () => 'ran', { waitMs: 5000 })).toBe('ran');
  });
});
