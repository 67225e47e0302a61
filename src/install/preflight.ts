import { existsSync, promises as fs, statfsSync } from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import type { BundleManifest } from '../bundle/format.js';
import { detectAddresses, type InstallAnswers } from './answers.js';
import type { Host } from './host.js';
import { archOf } from './node-steps.js';
import { ADMIN_CONF, API_PORT, CONTROL_PLANE_PORTS, SITE_PORT, STATE_DIR } from './paths.js';

/*
 * The first server's preflight: what this machine must be before ferry changes anything. Each check
 * has a name (--ignore-preflight NAME skips it). The node's own checks that joins share live with
 * their subject: cgroups.ts (cgroup v1), kernel.ts (modules, sysctls).
 */

/** Checks ferry cannot fix by itself, each with what to do. */
export interface PreflightContext {
  host: Host;
  answers: InstallAnswers;
  /** Checks to skip by name (root, arch, swap, address, ports, disk, clock). */
  ignorePreflight?: string[];
}

export async function preflight(ctx: PreflightContext, manifest: Pick<BundleManifest, 'platforms' | 'contentSize' | 'created'>): Promise<string[]> {
  const skip = new Set(ctx.ignorePreflight ?? []);
  const problems: string[] = [];
  const add = (name: string, msg: string) => !skip.has(name) && problems.push(`${name}: ${msg}`);
  if (process.getuid?.() !== 0) add('root', 'ferry install must run as root (sudo sh install.sh …)');
  const arch = `linux/${archOf()}`;
  if (!manifest.platforms.includes(arch)) add('arch', `this machine is ${arch}, the bundle carries ${manifest.platforms.join(', ')}`);
  const swaps = (await fs.readFile('/proc/swaps', 'utf8').catch(() => '')).trim().split('\n').slice(1).filter(Boolean);
  if (swaps.length) add('swap', `swap is on (${swaps.map((l) => l.split(/\s+/)[0]).join(', ')}); kubelet needs it off: swapoff -a, and remove it from /etc/fstab`);
  // The node IP is what kubeadm advertises and the site DNS answers: it must be one of this machine's.
  const own = detectAddresses({ loopback: true });
  const hasIp = own.includes(ctx.answers.node.ip);
  if (!hasIp) add('address', `${ctx.answers.node.ip} (node.ip) is not an address of this machine; it has ${own.join(', ') || 'no IPv4 address'}`);
  // Once ferry has started its services (a re-run after a failure), the ports are ours.
  if (hasIp && !(await ctx.host.read(ADMIN_CONF)) && !(await ctx.host.read(`${STATE_DIR}/services`))) {
    for (const port of [API_PORT, ...CONTROL_PLANE_PORTS, SITE_PORT]) {
      const free = await new Promise<boolean>((resolve) => {
        const s = net.createServer();
        s.once('error', () => resolve(false));
        s.listen(port, ctx.answers.node.ip, () => s.close(() => resolve(true)));
      });
      if (!free) add('ports', `port ${port} on ${ctx.answers.node.ip} is in use; stop what holds it (ss -ltnp 'sport = :${port}')`);
    }
  }
  try {
    // Measured where it exists (a dry run writes nothing): the nearest directory up from /var/lib.
    let dir = ctx.host.p('/var/lib');
    while (!existsSync(dir) && path.dirname(dir) !== dir) dir = path.dirname(dir);
    const st = statfsSync(dir);
    const free = Number(st.bavail) * Number(st.bsize);
    const need = manifest.contentSize * 2 + 2 * 1024 ** 3;
    if (free < need) add('disk', `${dir} has ${(free / 1024 ** 3).toFixed(1)} GiB free; the bundle and the images unpacked need about ${(need / 1024 ** 3).toFixed(1)} GiB`);
  } catch {
    /* not a filesystem we can measure */
  }
  if (Date.now() < Date.parse(manifest.created) - 5 * 60_000) add('clock', `the clock says ${new Date().toISOString()}, before the bundle was made (${manifest.created}); set the time (certificates depend on it)`);
  return problems;
}

