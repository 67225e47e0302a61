/*
 * Site hosts: each is Linux namespaces (mount, pid, net, uts, ipc, cgroup) with its own cgroup root
 * in every v1 hierarchy, its own root (an overlay of this machine's /, see host-init.sh) and real
 * systemd as its PID 1, on a bridge with no address and so no route beyond it.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, openSync, promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { SITE_SCRIPTS } from './config.js';

export interface HostSpec {
  name: string;
  ip: string;
  role: 'server' | 'agent';
}

export interface HostState extends HostSpec {
  /** PID 1 of the host (systemd): `nsenter -t PID -a -r -w CMD` runs CMD on the host. */
  pid: number;
  dir: string;
  cgroup: string;
  /** The peak memory of its boots before the last kill, in MiB. */
  peakMiB?: number | undefined;
}

export interface Net {
  bridge: string;
  prefix: number;
}

const sh = (cmd: string, args: string[], allowFail = false) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0 && !allowFail) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr || r.stdout}`);
  return r;
};

/** The v1 controllers this machine mounts, each its own hierarchy (name=systemd apart). */
export function controllers(): string[] {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'cgroup' && !f[3]!.includes('name='))
    .map((f) => path.basename(f[1]!));
}

const cgroupDirs = (cg: string) => [...controllers(), 'systemd'].map((c) => `/sys/fs/cgroup/${c}/${cg}`);

export function createBridge(n: Net): void {
  sh('ip', ['link', 'add', n.bridge, 'type', 'bridge']);
  sh('ip', ['link', 'set', n.bridge, 'up']);
}

export function deleteBridge(n: Net): void {
  sh('ip', ['link', 'del', n.bridge], true);
}

async function waitFor<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Runs a command on a host (in all its namespaces and its root), in the host's cgroups. */
export function onHost(h: Pick<HostState, 'pid' | 'cgroup'>, cmd: string[], opts: { input?: string; stdio?: 'inherit' | 'pipe' } = {}) {
  const join = cgroupDirs(h.cgroup).map((d) => `echo $$ > ${d}/cgroup.procs`).join('; ');
  return spawn('sh', ['-c', `${join}; exec nsenter -t ${h.pid} -a -r -w env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb "$@"`, 'on-host', ...cmd], {
    stdio: [opts.input === undefined ? 'ignore' : 'pipe', opts.stdio ?? 'pipe', opts.stdio ?? 'pipe'],
  });
}

/** Runs a command on a host and returns its output; throws with stderr on failure. */
export function hostExec(h: Pick<HostState, 'pid' | 'cgroup'>, cmd: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = onHost(h, cmd, { input });
    let stdout = '';
    let stderr = '';
    c.stdout?.on('data', (d: Buffer) => (stdout += d));
    c.stderr?.on('data', (d: Buffer) => (stderr += d));
    if (input !== undefined) c.stdin?.end(input);
    c.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

const isMountpoint = (d: string) => spawnSync('mountpoint', ['-q', d]).status === 0;

/** The bridge port of a host (this machine's end of its veth). */
const portOf = (n: Net, name: string) => `${n.bridge.slice(0, 6)}-${name}`.slice(0, 15);

/**
 * Boots a host: the first time on a fresh root, later (`site start`) on the root it had when it
 * was killed, as a machine boots from its disk after a power cut.
 */
export async function createHost(site: string, work: string, n: Net, h: HostSpec): Promise<HostState> {
  const dir = path.join(work, 'hosts', h.name);
  const cgroup = `${site}-${h.name}`;
  await fs.mkdir(path.join(dir, 't'), { recursive: true });
  // The host's root lives here, in this machine's mount namespace, so that killing the host keeps it.
  if (!isMountpoint(path.join(dir, 't'))) sh('mount', ['-t', 'tmpfs', '-o', 'mode=755', 'tmpfs', path.join(dir, 't')]);
  for (const d of cgroupDirs(cgroup)) {
    await fs.mkdir(d, { recursive: true });
    if (d.includes('/cpuset/')) {
      for (const f of ['cpuset.cpus', 'cpuset.mems']) await fs.writeFile(`${d}/${f}`, await fs.readFile(`/sys/fs/cgroup/cpuset/${f}`));
    }
  }
  const log = openSync(path.join(dir, 'host.log'), 'a');
  const join = cgroupDirs(cgroup).map((d) => `echo $$ > ${d}/cgroup.procs`).join('; ');
  const init = path.join(SITE_SCRIPTS, 'host-init.sh');
  const child = spawn(
    'sh',
    ['-c', `${join}; exec unshare --mount --pid --net --uts --ipc --cgroup --fork --propagation private sh "$@"`, 'site-host', init, h.name, dir, `${h.ip}/${n.prefix}`, controllers().join(' ')],
    { detached: true, stdio: ['ignore', log, log] },
  );
  child.unref();
  const unsharePid = child.pid!;
  const pid = await waitFor(`${h.name}'s init`, () => {
    const f = `/proc/${unsharePid}/task/${unsharePid}/children`;
    const kids = existsSync(f) ? readFileSync(f, 'utf8').trim() : '';
    return kids ? Number(kids.split(' ')[0]) : undefined;
  }, 10_000);
  const veth = portOf(n, h.name);
  sh('ip', ['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(pid)]);
  sh('ip', ['link', 'set', veth, 'master', n.bridge, 'up']);
  const st: HostState = { ...h, pid, dir, cgroup };
  // systemd is up when it answers; "degraded" still means it runs (some unit of the machine failed).
  await waitFor(`systemd on ${h.name}`, async () => {
    const r = await hostExec(st, ['systemctl', 'is-system-running']);
    return /^(running|degraded)/.test(r.stdout.trim()) ? true : undefined;
  }, 180_000).catch(async (e) => {
    throw new Error(`${(e as Error).message}; see ${path.join(dir, 'host.log')}: ${(await fs.readFile(path.join(dir, 'host.log'), 'utf8')).slice(-1500)}`);
  });
  return st;
}

/**
 * The host's own sshd (Debian's ssh.service under the host's systemd), with fresh host keys and
 * `pubKey` authorized for root: what `ferry join` reaches the host by.
 */
export async function startSshd(h: HostState, pubKey: string): Promise<void> {
  // Fresh keys of its own: the root's lower layer is this machine's /, whose host keys every host would share.
  const script = 'rm -f /etc/ssh/ssh_host_* && ssh-keygen -A -q && mkdir -p -m 700 /root/.ssh && cat > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys && systemctl enable --now ssh.service';
  const r = await hostExec(h, ['sh', '-c', script], pubKey);
  if (r.code !== 0) throw new Error(`sshd on ${h.name}: ${r.stderr}`);
}

const alive = (pid: number) => existsSync(`/proc/${pid}`);

export const isUp = (h: HostState) => alive(h.pid);

/**
 * Stops a host as a power cut would: its bridge port goes down, and SIGKILL to its PID 1 takes down
 * every process in its pid namespace at once. Its disk (and root) stay for `startHost`.
 */
export async function killHost(h: HostState, n: Net): Promise<void> {
  sh('ip', ['link', 'set', portOf(n, h.name), 'down'], true);
  if (alive(h.pid)) process.kill(h.pid, 'SIGKILL');
  await waitFor(`${h.name} to stop`, () => (alive(h.pid) ? undefined : true), 30_000);
  // Processes entered into its cgroups from outside (never expected) go too.
  for (const d of cgroupDirs(h.cgroup)) {
    const procs = existsSync(`${d}/cgroup.procs`) ? readFileSync(`${d}/cgroup.procs`, 'utf8').trim().split('\n').filter(Boolean) : [];
    for (const p of procs) process.kill(Number(p), 'SIGKILL');
  }
  // The net namespace went with its last process, and the veth pair with it.
  sh('ip', ['link', 'del', portOf(n, h.name)], true);
  // The next boot gets fresh cgroups, as after a power cut.
  for (const d of cgroupDirs(h.cgroup)) await rmCgroup(d);
}

/** Removes a cgroup directory tree, deepest first (cgroupfs only removes empty groups). */
async function rmCgroup(d: string): Promise<void> {
  if (!existsSync(d)) return;
  for (const e of await fs.readdir(d, { withFileTypes: true })) if (e.isDirectory()) await rmCgroup(path.join(d, e.name));
  for (let i = 0; ; i++) {
    try {
      await fs.rmdir(d);
      return;
    } catch (e) {
      if (i > 50) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

export async function removeHost(h: HostState, n: Net): Promise<void> {
  await killHost(h, n);
  unmountRoot(h.dir);
  await fs.rm(h.dir, { recursive: true, force: true });
}

function unmountRoot(dir: string): void {
  const t = path.join(dir, 't');
  if (isMountpoint(t)) sh('umount', ['-l', t]);
}

/** Every cgroup this machine has for a site's hosts, for a `down` that has lost its state. */
export async function strayCgroups(site: string): Promise<string[]> {
  const out: string[] = [];
  for (const c of [...controllers(), 'systemd']) {
    for (const e of await fs.readdir(`/sys/fs/cgroup/${c}`).catch(() => [] as string[])) if (e.startsWith(`${site}-`)) out.push(`/sys/fs/cgroup/${c}/${e}`);
  }
  return out;
}

export async function removeStray(site: string): Promise<void> {
  for (const d of await strayCgroups(site)) {
    for (const p of readFileSync(`${d}/cgroup.procs`, 'utf8').trim().split('\n').filter(Boolean)) {
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
  await new Promise((r) => setTimeout(r, 500));
  for (const d of await strayCgroups(site)) await rmCgroup(d);
}

/** Unmounts the hosts' roots under `work` that a lost state no longer names. */
export function unmountStray(work: string): void {
  const mounts = readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1] ?? '');
  for (const m of mounts.filter((x) => x.startsWith(`${work}/`)).sort().reverse()) sh('umount', ['-l', m], true);
}

/**
 * The site's own internal resolver (the kind a real site has for its corporate names): CoreDNS in a
 * bare network namespace on the bridge, answering one zone. Nodes have it in resolv.conf before
 * ferry comes, and ferry makes it the site DNS's upstream (no `upstreamDns` answer is given).
 */
export interface Resolver {
  netns: string;
  ip: string;
  pid: number;
}

export async function startResolver(n: Net, work: string, coredns: string, r: { ip: string; zone: string; records: Record<string, string> }): Promise<Resolver> {
  const netns = 'ferry-site-dns';
  const dir = path.join(work, 'resolver');
  await fs.mkdir(dir, { recursive: true });
  // Like a real corporate resolver it is authoritative for its zone (a zone file with an SOA) and
  // answers NXDOMAIN for a name nobody holds: the hosts plugin would answer SERVFAIL, and a pod's
  // lookup that walks its search list gives up on that.
  const zone = [`$ORIGIN ${r.zone}.`, `@ 60 IN SOA ns.${r.zone}. hostmaster.${r.zone}. 1 7200 1800 86400 60`, ...Object.entries(r.records).map(([name, ip]) => `${name}. 60 IN A ${ip}`), ''];
  await fs.writeFile(path.join(dir, `db.${r.zone}`), zone.join('\n'));
  await fs.writeFile(path.join(dir, 'Corefile'), [`${r.zone}:53 {`, `    bind ${r.ip}`, `    file ${path.join(dir, `db.${r.zone}`)}`, '}', '.:53 {', `    bind ${r.ip}`, '    template ANY ANY {', '        rcode NXDOMAIN', '    }', '}', ''].join('\n'));
  sh('ip', ['netns', 'add', netns]);
  const port = portOf(n, 'dns');
  sh('ip', ['link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns]);
  sh('ip', ['link', 'set', port, 'master', n.bridge, 'up']);
  for (const a of [['addr', 'add', `${r.ip}/${n.prefix}`, 'dev', 'eth0'], ['link', 'set', 'eth0', 'up'], ['link', 'set', 'lo', 'up']]) sh('ip', ['netns', 'exec', netns, 'ip', ...a]);
  const log = openSync(path.join(dir, 'coredns.log'), 'a');
  const c = spawn('ip', ['netns', 'exec', netns, coredns, '-conf', path.join(dir, 'Corefile')], { detached: true, stdio: ['ignore', log, log], cwd: dir });
  c.unref();
  await waitFor('the internal resolver', () => (sh('ip', ['netns', 'exec', netns, 'ss', '-Hlun', `sport = :53`]).stdout.includes(r.ip) ? true : undefined), 15_000);
  return { netns, ip: r.ip, pid: c.pid! };
}

export function stopResolver(n: Net, r?: Resolver): void {
  if (r && alive(r.pid)) process.kill(r.pid, 'SIGKILL');
  for (const p of sh('ip', ['netns', 'pids', 'ferry-site-dns'], true).stdout.split('\n').filter(Boolean)) process.kill(Number(p), 'SIGKILL');
  sh('ip', ['netns', 'del', 'ferry-site-dns'], true);
  sh('ip', ['link', 'del', portOf(n, 'dns')], true);
}
