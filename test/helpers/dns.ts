import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { execFileP, waitFor } from './peers.js';

/**
 * A real DNS server (bind9's named) serving one zone of A records on ip:port. It plays the site
 * DNS that the ferry-bootstrap DaemonSet serves in a cluster (CoreDNS is not installable here).
 */
export interface DnsPeer {
  stop(): Promise<void>;
}

export async function startNamed(dir: string, listen: { ip: string; port: number }, zone: string, records: { name: string; ip: string }[], netns?: string): Promise<DnsPeer> {
  await fs.mkdir(dir, { recursive: true });
  const lines = [`$TTL 60`, `@ IN SOA ns.${zone}. admin.${zone}. 1 60 60 60 60`, `@ IN NS ns.${zone}.`, `ns IN A ${listen.ip}`];
  for (const r of records) lines.push(`${r.name}. IN A ${r.ip}`);
  await fs.writeFile(path.join(dir, 'zone.db'), `${lines.join('\n')}\n`);
  await execFileP('named-checkzone', [zone, path.join(dir, 'zone.db')]);
  await fs.writeFile(
    path.join(dir, 'named.conf'),
    `options { directory "${dir}"; pid-file "${dir}/named.pid"; listen-on port ${listen.port} { ${listen.ip}; }; listen-on-v6 { none; }; recursion no; dnssec-validation no; };\nzone "${zone}" { type master; file "${dir}/zone.db"; };\n`,
  );
  const argv = ['named', '-g', '-u', 'root', '-c', path.join(dir, 'named.conf')];
  // In a namespace, `ip netns exec` execs named, so the pid is named's own.
  const proc: ChildProcess = netns ? spawn('ip', ['netns', 'exec', netns, ...argv], { stdio: ['ignore', 'ignore', 'pipe'] }) : spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  await waitFor(async () => /running/.test(log), `named (${log.slice(-300)})`);
  return {
    async stop() {
      proc.kill('SIGTERM');
      await new Promise((r) => (proc.exitCode !== null ? r(null) : proc.once('exit', r)));
    },
  };
}
