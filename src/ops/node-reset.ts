import { promises as fs } from 'node:fs';
import { Codes, UsageError } from '../errors.js';
import type { Host } from '../install/host.js';
import { BIN_DIR, CRI_SOCKET, ETC_HOSTS, FERRY_LAUNCHER, FERRY_ROOT, STATE_DIR, SYSTEM_SITE_CA, SYSTEMD_DIR } from '../install/paths.js';
import { SERVICE_ROUTE_UNIT } from '../install/routes.js';
import { readPayload } from './node-op.js';

/*
 * What `ferry reset` does on the node itself (`ferry node-reset`, or `ferry reset --local`): it
 * takes the node back to before ferry, so that `ferry join` of the same host works with no reboot.
 * It acts only where ferry's markers show ferry set the node up, and removes only what is ferry's:
 * units that say "Written by ferry", the state kubeadm, kubelet, containerd and the CNI keep for the
 * cluster ferry made, the iptables chains of kube-proxy and the CNI, and ferry's own files.
 */

export interface NodeResetPayload {
  name: string;
  role: 'server' | 'agent';
}

export const NODE_RESET_SCHEMA = {
  $id: 'ferry.dev/node-reset-payload',
  type: 'object',
  additionalProperties: false,
  required: ['name', 'role'],
  properties: { name: { type: 'string', minLength: 1 }, role: { enum: ['server', 'agent'] } },
};
export const readNodeResetPayload = (text: string) => readPayload<NodeResetPayload>(text, NODE_RESET_SCHEMA, 'node-reset');

/** ferry's units, stopped in this order (kubelet before containerd, so nothing restarts a pod). */
export const FERRY_UNITS = ['ferry-certs.timer', 'ferry-certs.service', 'ferry-state-mirror.timer', 'ferry-state-mirror.service', 'kubelet.service', 'ferry-serve.service', 'containerd.service', SERVICE_ROUTE_UNIT];
/** A unit file is ferry's when it says so on its first line. */
export const FERRY_UNIT_MARK = '# Written by ferry';

/** Chains kube-proxy, flannel and the CNI plugins make (iptables-save names). */
export const OWN_CHAIN = /^(KUBE-|FLANNEL-|CNI-)/;
/** The CNI's interfaces on a node (flannel's VXLAN device and bridge). */
export const CNI_INTERFACES = ['flannel.1', 'flannel-v6.1', 'cni0'];
/** Directories whose mounts (pod volumes, sandboxes' network namespaces, snapshots) go before the directories. */
export const MOUNT_ROOTS = ['/var/lib/kubelet', '/run/containerd', '/var/lib/containerd', '/run/netns'];
/** State of the cluster ferry made: emptied (each directory stays: it may be a mount point). */
export const STATE_TREES = ['/var/lib/kubelet', '/var/lib/containerd', '/run/containerd', '/var/lib/etcd', '/etc/kubernetes', '/var/lib/cni', '/run/flannel', '/etc/ferry'];
const CNI_CONF_DIR = '/etc/cni/net.d';

/**
 * iptables-save output without ferry's cluster's chains and every rule in them or jumping to them
 * (pure). Tables that had nothing of theirs come back unchanged; the rest of the rules stay.
 */
export function withoutOwnRules(save: string): { text: string; removed: number } {
  let removed = 0;
  const out: string[] = [];
  for (const line of save.split('\n')) {
    const chain = /^:(\S+)\s/.exec(line)?.[1];
    if (chain && OWN_CHAIN.test(chain)) {
      removed++;
      continue;
    }
    if (line.startsWith('-A ')) {
      const [, owner] = line.split(/\s+/);
      const target = /\s-[jg]\s+(\S+)/.exec(line)?.[1];
      if ((owner && OWN_CHAIN.test(owner)) || (target && OWN_CHAIN.test(target))) {
        removed++;
        continue;
      }
    }
    out.push(line);
  }
  return { text: out.join('\n'), removed };
}

/**
 * The commands that take ferry's cluster's rules out one by one (pure): in each table, the jumps into
 * its chains deleted from the other chains, then its chains flushed and deleted.
 */
export function ownRuleDeletions(save: string): string[][] {
  const out: string[][] = [];
  const chains: [string, string][] = [];
  let table = 'filter';
  for (const line of save.split('\n')) {
    if (line.startsWith('*')) table = line.slice(1).trim();
    const chain = /^:(\S+)\s/.exec(line)?.[1];
    if (chain && OWN_CHAIN.test(chain)) chains.push([table, chain]);
    if (line.startsWith('-A ')) {
      const [, owner] = line.split(/\s+/);
      const target = /\s-[jg]\s+(\S+)/.exec(line)?.[1];
      if (owner && !OWN_CHAIN.test(owner) && target && OWN_CHAIN.test(target)) out.push(['-t', table, '-D', ...splitRule(line.slice(3))]);
    }
  }
  for (const [t, c] of chains) out.push(['-t', t, '-F', c]);
  for (const [t, c] of chains) out.push(['-t', t, '-X', c]);
  return out;
}

/** An iptables-save rule's words, with its quoted comments kept whole. */
function splitRule(rule: string): string[] {
  return [...rule.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)].map((m) => (m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!));
}

/** /etc/hosts without ferry's block (pure). */
export function withoutHostsBlock(text: string): string {
  const lines = text.split('\n');
  const a = lines.indexOf('# BEGIN ferry');
  const b = lines.indexOf('# END ferry');
  if (a < 0 || b < a) return text;
  return [...lines.slice(0, a), ...lines.slice(b + 1)].join('\n');
}

/** Mount points under the roots, deepest first (pure; from /proc/self/mountinfo). */
export function mountsUnder(mountinfo: string, roots: string[]): string[] {
  const points = mountinfo
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => !!p)
    .map((p) => p.replace(/\\040/g, ' '))
    // Only below each root: the root itself may be a disk of its own, which stays mounted.
    .filter((p) => roots.some((r) => p.startsWith(`${r}/`)));
  return [...new Set(points)].sort((a, b) => b.split('/').length - a.split('/').length || b.localeCompare(a));
}

export interface ResetItem {
  /** What is removed, as the operator reads it. */
  what: string;
  apply: () => Promise<void>;
}

const entriesOf = (host: Host, dir: string) => fs.readdir(host.p(dir)).catch(() => [] as string[]);

/** Removes everything in a directory and keeps the directory (a mount point stays one). */
async function emptyDir(host: Host, dir: string): Promise<void> {
  await Promise.all((await entriesOf(host, dir)).map((e) => host.rm(`${dir}/${e}`)));
}

const which = async (host: Host, cmd: string) => (await host.run('sh', ['-c', `command -v ${cmd}`], { allowFail: true })).code === 0;

/** Whether ferry set this node up (its step markers are there). */
export async function isFerryNode(host: Host): Promise<boolean> {
  return (await host.list(STATE_DIR)).length > 0;
}

/**
 * The node's cleanup as a list of items, each only when there is something to remove: a dry run
 * prints them, a real run applies them in order.
 */
export async function nodeResetPlan(host: Host, p: NodeResetPayload): Promise<ResetItem[]> {
  if (!(await isFerryNode(host))) {
    throw new UsageError(Codes.resetNotOurs, `${p.name} has no ferry step markers under ${STATE_DIR}: nothing on it is provably ferry's`, { hint: 'ferry reset cleans only nodes ferry installed or joined. Clean this machine by hand (kubeadm reset) if it was set up otherwise.' });
  }
  const live = host.root === '/';
  const items: ResetItem[] = [];
  const run = (cmd: string, args: string[], timeoutMs = 120_000) => host.run(cmd, args, { allowFail: true, timeoutMs });

  if ((await host.exists('/etc/kubernetes')) && (await which(host, 'kubeadm'))) {
    items.push({ what: `kubeadm reset (kubelet stopped, the node's containers removed, /etc/kubernetes and ${p.role === 'server' ? '/var/lib/etcd' : 'kubelet state'} cleaned)`, apply: async () => void (await run('kubeadm', ['reset', '--force', '--cri-socket', CRI_SOCKET], 300_000)) });
  }
  const units: string[] = [];
  for (const u of FERRY_UNITS) if ((await host.read(`${SYSTEMD_DIR}/${u}`))?.startsWith(FERRY_UNIT_MARK)) units.push(u);
  if (units.length) {
    items.push({
      what: `ferry's units stopped, disabled and removed: ${units.join(', ')}`,
      apply: async () => {
        for (const u of units) {
          if (u === 'containerd.service' && (await which(host, 'crictl'))) {
            // Pods kubeadm reset left (none, normally): removed while containerd still runs, so their shims exit.
            await run('crictl', ['--runtime-endpoint', CRI_SOCKET, '--timeout', '20s', 'rmp', '-af'], 60_000);
          }
          await run('systemctl', ['disable', '--now', u], 90_000);
        }
        for (const u of units) await host.rm(`${SYSTEMD_DIR}/${u}`);
        await host.rm(`${SYSTEMD_DIR}/kubelet.service.d/10-kubeadm.conf`);
        // The drop-in directory goes too when nothing else is in it.
        await fs.rmdir(host.p(`${SYSTEMD_DIR}/kubelet.service.d`)).catch(() => {});
        await run('systemctl', ['daemon-reload']);
        await run('systemctl', ['reset-failed']);
      },
    });
  }
  if (live) {
    items.push({
      what: `containerd shims left running (${BIN_DIR}/containerd-shim*) killed`,
      apply: async () => {
        for (const pid of await fs.readdir('/proc').catch(() => [] as string[])) {
          if (!/^\d+$/.test(pid)) continue;
          const exe = await fs.readlink(`/proc/${pid}/exe`).catch(() => '');
          if (exe.startsWith(`${BIN_DIR}/containerd-shim`)) {
            try {
              process.kill(Number(pid), 'SIGKILL');
            } catch {
              /* gone already */
            }
          }
        }
      },
    });
    const mounts = mountsUnder(await fs.readFile('/proc/self/mountinfo', 'utf8').catch(() => ''), MOUNT_ROOTS);
    if (mounts.length) {
      items.push({
        what: `${mounts.length} mounts under ${MOUNT_ROOTS.join(', ')} unmounted`,
        apply: async () => {
          for (const m of mountsUnder(await fs.readFile('/proc/self/mountinfo', 'utf8').catch(() => ''), MOUNT_ROOTS)) {
            if ((await run('umount', [m])).code !== 0) await run('umount', ['-l', m]);
          }
        },
      });
    }
    const links: string[] = [];
    for (const i of CNI_INTERFACES) if ((await run('ip', ['link', 'show', 'dev', i])).code === 0) links.push(i);
    if (links.length) items.push({ what: `CNI interfaces deleted: ${links.join(', ')}`, apply: async () => void (await Promise.all(links.map((i) => run('ip', ['link', 'delete', i])))) });
    for (const [save, restore] of [['iptables-save', 'iptables-restore'], ['ip6tables-save', 'ip6tables-restore']] as const) {
      if (!(await which(host, save))) continue;
      const r = await run(save, []);
      const f = withoutOwnRules(r.stdout);
      if (r.code === 0 && f.removed) {
        const cmd = save.replace('-save', '');
        items.push({
          what: `${cmd}: ${f.removed} chains and rules of kube-proxy, flannel and the CNI removed`,
          apply: async () => {
            const now = (await run(save, [])).stdout;
            if ((await host.run(restore, [], { input: `${withoutOwnRules(now).text}\n`, allowFail: true, timeoutMs: 60_000 })).code === 0) return;
            // A table the restore refuses: rule by rule instead, as kube-proxy --cleanup does.
            for (const c of ownRuleDeletions(now)) await run(cmd, c);
          },
        });
      }
    }
    if (await which(host, 'nft')) {
      const t = await run('nft', ['list', 'tables']);
      const own = t.stdout.split('\n').map((l) => l.trim()).filter((l) => /^table (ip|ip6|inet) kube-proxy$/.test(l));
      if (own.length) items.push({ what: `nftables: ${own.join(', ')} deleted`, apply: async () => void (await Promise.all(own.map((l) => run('nft', ['delete', ...l.split(' ').slice(0)])))) });
    }
  }
  const cni = (await fs.readdir(host.p(CNI_CONF_DIR)).catch(() => [] as string[])).filter((f) => /flannel/.test(f));
  if (cni.length) items.push({ what: `CNI configuration removed: ${cni.map((f) => `${CNI_CONF_DIR}/${f}`).join(', ')}`, apply: async () => void (await Promise.all(cni.map((f) => host.rm(`${CNI_CONF_DIR}/${f}`)))) });
  const trees: string[] = [];
  for (const d of STATE_TREES) if ((await entriesOf(host, d)).length) trees.push(d);
  if (trees.length) items.push({ what: `state emptied: ${trees.join(', ')}`, apply: async () => void (await Promise.all(trees.map((d) => emptyDir(host, d)))) });
  const hosts = await host.read(ETC_HOSTS);
  if (hosts && withoutHostsBlock(hosts) !== hosts) items.push({ what: `ferry's block in ${ETC_HOSTS} removed`, apply: () => host.write(ETC_HOSTS, withoutHostsBlock(hosts)) });
  if (await host.exists(SYSTEM_SITE_CA)) {
    items.push({
      what: `the site CA removed from the system trust store (${SYSTEM_SITE_CA})`,
      apply: async () => {
        await host.rm(SYSTEM_SITE_CA);
        if (live && (await which(host, 'update-ca-certificates'))) await run('update-ca-certificates', ['--fresh']);
      },
    });
  }
  const launcher = (await host.read(FERRY_LAUNCHER)) !== undefined;
  // Last: ferry itself runs from here (everything it needs is loaded already).
  items.push({ what: `ferry's own files removed: ${[`${FERRY_ROOT}/*`, ...(launcher ? [FERRY_LAUNCHER] : [])].join(', ')}`, apply: async () => void (await Promise.all([emptyDir(host, FERRY_ROOT), ...(launcher ? [host.rm(FERRY_LAUNCHER)] : [])])) });
  return items;
}

/** Applies the plan, item by item; returns what was done. */
export async function runNodeReset(host: Host, p: NodeResetPayload, o: { dryRun?: boolean; log: (l: string) => void }): Promise<string[]> {
  const items = await nodeResetPlan(host, p);
  for (const i of items) {
    o.log(`${o.dryRun ? 'would remove' : 'removing'}: ${i.what}`);
    if (!o.dryRun) await i.apply();
  }
  return items.map((i) => i.what);
}
