import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { execFileP, waitFor } from './peers.js';

/**
 * Test hosts as network namespaces on a bridge, each with its own sshd and host key (PEERS.md).
 * Names and the subnet are picked per run so parallel runs never collide.
 */
export interface NetnsHost {
  name: string;
  ns: string;
  ip: string;
  hostKeyPub: string;
  sshd: ChildProcess;
}

export interface Lab {
  bridge: string;
  gatewayIp: string;
  hosts: NetnsHost[];
  identity: string;
  knownHosts: string;
  down(): Promise<void>;
}

export async function startLab(dir: string, names: string[]): Promise<Lab> {
  const tag = `${process.pid % 10000}${Math.floor(Math.random() * 90 + 10)}`.slice(-5);
  const third = 100 + (process.pid % 100) + Math.floor(Math.random() * 50);
  const subnet = `10.${200 + (Number(tag) % 50)}.${third % 250}`;
  const bridge = `fbr${tag}`;
  await execFileP('ip', ['link', 'add', bridge, 'type', 'bridge']);
  await execFileP('ip', ['addr', 'add', `${subnet}.1/24`, 'dev', bridge]);
  await execFileP('ip', ['link', 'set', bridge, 'up']);
  const identity = path.join(dir, 'id_ed25519');
  await execFileP('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', identity]);
  const hosts: NetnsHost[] = [];
  const lab: Lab = {
    bridge,
    gatewayIp: `${subnet}.1`,
    hosts,
    identity,
    knownHosts: path.join(dir, 'known_hosts'),
    async down() {
      for (const h of hosts) {
        h.sshd.kill('SIGTERM');
        await execFileP('ip', ['netns', 'del', h.ns]).catch(() => {});
      }
      await execFileP('ip', ['link', 'del', bridge]).catch(() => {});
    },
  };
  try {
    for (const [i, name] of names.entries()) {
      const ns = `f${tag}${i}`;
      const ip = `${subnet}.${11 + i}`;
      const veth = `v${tag}${i}`;
      await execFileP('ip', ['netns', 'add', ns]);
      await execFileP('ip', ['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      await execFileP('ip', ['link', 'set', veth, 'master', bridge, 'up']);
      await execFileP('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
      await execFileP('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
      await execFileP('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      const hd = path.join(dir, `sshd-${name}`);
      await fs.mkdir(hd, { recursive: true });
      await execFileP('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(hd, 'host_key')]);
      await fs.copyFile(`${identity}.pub`, path.join(hd, 'authorized_keys'));
      await fs.writeFile(
        path.join(hd, 'sshd_config'),
        `ListenAddress ${ip}:22\nHostKey ${hd}/host_key\nPidFile ${hd}/sshd.pid\nAuthorizedKeysFile ${hd}/authorized_keys\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n`,
      );
      const sshd = spawn('ip', ['netns', 'exec', ns, 'unshare', '-m', '--propagation', 'private', 'sh', '-c', `mount -t tmpfs -o mode=755 tmpfs /run && mkdir -m755 /run/sshd && exec /usr/sbin/sshd -D -e -f ${hd}/sshd_config`], { stdio: ['ignore', 'ignore', 'pipe'] });
      let log = '';
      sshd.stderr!.on('data', (d: Buffer) => (log += d.toString()));
      hosts.push({ name, ns, ip, hostKeyPub: (await fs.readFile(path.join(hd, 'host_key.pub'), 'utf8')).trim(), sshd });
      await waitFor(async () => {
        const r = await execFileP('ip', ['netns', 'exec', ns, 'bash', '-c', `exec 3<>/dev/tcp/${ip}/22 2>/dev/null && echo up || true`], { shell: false }).catch(() => ({ stdout: '' }));
        return r.stdout.includes('up') || /Server listening/.test(log);
      }, `sshd in ${ns} (${log})`);
    }
  } catch (e) {
    await lab.down();
    throw e;
  }
  return lab;
}

/** A known_hosts line for a lab host, as ssh-keyscan would write it. */
export function knownHostsLine(h: NetnsHost): string {
  const [type, key] = h.hostKeyPub.split(' ');
  return `${h.ip} ${type} ${key}`;
}
