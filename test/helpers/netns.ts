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
  /** The first host key's public line (`type base64 comment`). */
  hostKeyPub: string;
  /** Every host key sshd offers: key type (ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa) → public line. */
  hostKeys: Record<string, string>;
  ports: number[];
  sshd: ChildProcess;
  /** What sshd logged so far (LogLevel VERBOSE). */
  log(): string;
  /** What the SFTP server logged so far: every open, with the mode a new file is created with. */
  sftpLog(): Promise<string>;
}

export type HostKeyKind = 'ed25519' | 'ecdsa' | 'rsa';
export interface LabHostOptions {
  /** Host keys sshd offers (default ed25519 only). */
  hostKeys?: HostKeyKind[];
  /** Ports sshd listens on (default 22). */
  ports?: number[];
}

export interface Lab {
  bridge: string;
  gatewayIp: string;
  hosts: NetnsHost[];
  identity: string;
  knownHosts: string;
  down(): Promise<void>;
}

export async function startLab(dir: string, names: string[], opts: Record<string, LabHostOptions> = {}): Promise<Lab> {
  const tag = `${process.pid % 10000}${Math.floor(Math.random() * 90 + 10)}`.slice(-5);
  const third = 100 + (process.pid % 100) + Math.floor(Math.random() * 50);
  // 10.200-239: clear of the default pod (10.244/16) and service (10.96/12) CIDRs, which answers refuse node IPs in.
  const subnet = `10.${200 + (Number(tag) % 40)}.${third % 250}`;
  const bridge = `fbr${tag}`;
  await fs.mkdir(dir, { recursive: true });
  const identity = path.join(dir, 'id_ed25519');
  await execFileP('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', identity]);
  await execFileP('ip', ['link', 'add', bridge, 'type', 'bridge']);
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
    await execFileP('ip', ['addr', 'add', `${subnet}.1/24`, 'dev', bridge]);
    await execFileP('ip', ['link', 'set', bridge, 'up']);
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
      const kinds = opts[name]?.hostKeys ?? ['ed25519'];
      const ports = opts[name]?.ports ?? [22];
      const hostKeys: Record<string, string> = {};
      for (const k of kinds) {
        await execFileP('ssh-keygen', ['-q', '-t', k, ...(k === 'rsa' ? ['-b', '2048'] : []), '-N', '', '-f', path.join(hd, `host_key_${k}`)]);
        const pub = (await fs.readFile(path.join(hd, `host_key_${k}.pub`), 'utf8')).trim();
        hostKeys[pub.split(' ')[0]!] = pub;
      }
      await fs.copyFile(`${identity}.pub`, path.join(hd, 'authorized_keys'));
      // sftp-server logs to its own file: internal-sftp would log to syslog, which a namespace lacks.
      await fs.writeFile(path.join(hd, 'sftp-server'), `#!/bin/sh\nexec /usr/lib/openssh/sftp-server -e -l VERBOSE 2>>${hd}/sftp.log\n`, { mode: 0o755 });
      await fs.writeFile(
        path.join(hd, 'sshd_config'),
        `${ports.map((p) => `ListenAddress ${ip}:${p}\n`).join('')}${kinds.map((k) => `HostKey ${hd}/host_key_${k}\n`).join('')}PidFile ${hd}/sshd.pid\nAuthorizedKeysFile ${hd}/authorized_keys\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nLogLevel VERBOSE\nSubsystem sftp ${hd}/sftp-server\n`,
      );
      const sshd = spawn('ip', ['netns', 'exec', ns, 'unshare', '-m', '--propagation', 'private', 'sh', '-c', `mount -t tmpfs -o mode=755 tmpfs /run && mkdir -m755 /run/sshd && exec /usr/sbin/sshd -D -e -f ${hd}/sshd_config`], { stdio: ['ignore', 'ignore', 'pipe'] });
      let log = '';
      sshd.stderr!.on('data', (d: Buffer) => (log += d.toString()));
      hosts.push({ name, ns, ip, hostKeyPub: Object.values(hostKeys)[0]!, hostKeys, ports, sshd, log: () => log, sftpLog: () => fs.readFile(path.join(hd, 'sftp.log'), 'utf8').catch(() => '') });
      await waitFor(async () => (log.match(/Server listening/g) ?? []).length >= ports.length, `sshd in ${ns} (${log})`);
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
