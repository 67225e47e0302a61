import net from 'node:net';
import path from 'node:path';
import { promises as fs } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { preflight } from '../../src/install/preflight.js';
import { Host } from '../../src/install/host.js';
import { silentReporter } from '../../src/util/progress.js';
import { tmpdir } from '../helpers/peers.js';

const manifest = { platforms: ['linux/amd64', 'linux/arm64'], contentSize: 1000, created: new Date(0).toISOString() };

async function ctxFor(root: string) {
  return {
    host: new Host(root),
    bundle: 'unused',
    answers: { apiVersion: 'ferry.dev/v1alpha1' as const, kind: 'InstallAnswers' as const, domain: 'site.test', node: { name: 'n1', ip: '127.0.0.1' }, podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' },
    verify: {},
    reporter: silentReporter,
    ignorePreflight: ['root', 'swap', 'disk'],
  };
}

describe('preflight', () => {
  it('names a port that is taken, and stops checking ports once ferry runs its own services', async () => {
    const root = await tmpdir();
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(10259, '127.0.0.1', r));
    try {
      const first = await preflight(await ctxFor(root), manifest);
      expect(first.join('\n')).toMatch(/ports: port 10259 on 127\.0\.0\.1 is in use/);
      await fs.mkdir(path.join(root, 'var/lib/ferry/state'), { recursive: true });
      await fs.writeFile(path.join(root, 'var/lib/ferry/state/services'), 'started');
      expect((await preflight(await ctxFor(root), manifest)).filter((p) => p.startsWith('ports'))).toEqual([]);
    } finally {
      holder.close();
    }
  });

  it('refuses a machine whose architecture the bundle does not carry, and a clock before the bundle', async () => {
    const p = await preflight(await ctxFor(await tmpdir()), { platforms: ['linux/s390x'], contentSize: 1, created: new Date(Date.now() + 86_400_000).toISOString() });
    expect(p.join('\n')).toMatch(/arch: this machine is linux\/\w+, the bundle carries linux\/s390x/);
    expect(p.join('\n')).toMatch(/clock: the clock says .* before the bundle was made/);
  });
});

describe('preflight of the node IP', () => {
  it("refuses a node IP this machine does not have, naming the addresses it has", async () => {
    const ctx = await ctxFor(await tmpdir());
    const p = await preflight({ ...ctx, answers: { ...ctx.answers, node: { name: 'n1', ip: '192.0.2.77' } } }, manifest);
    expect(p.find((x) => x.startsWith('address:'))).toMatch(/^address: 192\.0\.2\.77 \(node\.ip\) is not an address of this machine; it has .*127\.0\.0\.1/);
    // Ports are not probed on an address the machine lacks: that would only repeat the problem.
    expect(p.filter((x) => x.startsWith('ports'))).toEqual([]);
  });
});
