import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { execFileP, tmpdir, waitFor } from './peers.js';

/** A real containerd (with runc) on a private socket, as PEERS.md describes. */
export interface ContainerdPeer {
  dir: string;
  sock: string;
  ctr(args: string[], opts?: { timeout?: number }): Promise<string>;
  stop(): Promise<void>;
}

export async function startContainerd(): Promise<ContainerdPeer> {
  const dir = await tmpdir('ferry-ctd-');
  const sock = path.join(dir, 'sock');
  await fs.writeFile(
    path.join(dir, 'config.toml'),
    `version = 2\nroot = "${dir}/root"\nstate = "${dir}/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "${sock}"\n[ttrpc]\n  address = "${sock}.ttrpc"\n`,
  );
  const log = await fs.open(path.join(dir, 'containerd.log'), 'w');
  const proc: ChildProcess = spawn('containerd', ['--config', path.join(dir, 'config.toml')], { stdio: ['ignore', log.fd, log.fd] });
  const ctr = async (args: string[], opts: { timeout?: number } = {}) => (await execFileP('ctr', ['-a', sock, ...args], { timeout: opts.timeout ?? 60_000, maxBuffer: 16 << 20 })).stdout;
  await waitFor(async () => (await ctr(['version'])).includes('Server'), 'containerd');
  return {
    dir,
    sock,
    ctr,
    async stop() {
      proc.kill('SIGTERM');
      await new Promise((r) => (proc.exitCode !== null ? r(null) : proc.once('exit', r)));
      await log.close();
      // Snapshots may hold mounts; unmount before removing.
      await execFileP('sh', ['-c', `grep -o '${dir}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l`]).catch(() => {});
      await fs.rm(dir, { recursive: true, force: true }).catch(() => {});
    },
  };
}
