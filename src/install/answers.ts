import net from 'node:net';
import os from 'node:os';
import { stringify } from 'yaml';
import { Codes, SpecError } from '../errors.js';
import { loadYaml, positionOf, type LoadedYaml } from '../spec/yamlpos.js';
import { writeFileAtomic } from '../util/fsx.js';
import { CGROUP_V1_POLICIES, type CgroupV1Policy } from './cgroups.js';
import { patchProblems, type Patches } from './patches.js';

export interface JoinHost {
  host: string;
  name: string;
  role: 'server' | 'agent';
  /** The node's own IP on the cluster network, when it differs from `host`. */
  ip?: string;
}

export interface InstallAnswers {
  apiVersion: 'ferry.dev/v1alpha1';
  kind: 'InstallAnswers';
  domain: string;
  clusterFqdn?: string;
  node: { name: string; ip: string };
  podCidr: string;
  serviceCidr: string;
  cni?: string;
  records?: { name: string; ip: string }[];
  /** The site's own resolvers: the site DNS forwards names outside the site domain to them. */
  upstreamDns?: string[];
  ssh?: { user?: string; identityFile?: string; knownHosts?: string; port?: number };
  join?: JoinHost[];
  /** A node on cgroup v1: allow (default, with a loud warning) or refuse. */
  cgroupV1?: CgroupV1Policy;
  /** kubeadm preflight checks to skip on init and joins (ferry's own are --ignore-preflight). */
  ignoreKubeadmPreflight?: string[];
  /** Merge patches over the documents ferry gives kubeadm (src/install/patches.ts). */
  patches?: Patches;
}

export const DEFAULTS = { podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' };

const DNS_NAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
const NODE_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** kubeadm's check names: NumCPU, Port-6443, FileContent--proc-sys-net-ipv4-ip_forward, all. */
const KUBEADM_CHECK = /^[A-Za-z][A-Za-z0-9._-]*$/;

export function clusterFqdn(a: Pick<InstallAnswers, 'domain' | 'clusterFqdn'>): string {
  return a.clusterFqdn ?? `k8s-cluster.${a.domain}`;
}

/** The site service's name: servers answer it in DNS, and their certificates carry it. */
export const registryFqdn = (domain: string) => `registry.${domain}`;

export function checkCidr(s: string): string | undefined {
  const m = /^([0-9.]+|[0-9a-fA-F:]+)\/(\d{1,3})$/.exec(s);
  if (!m || !net.isIP(m[1]!)) return `"${s}" is not a CIDR such as 10.244.0.0/16`;
  const max = net.isIPv4(m[1]!) ? 32 : 128;
  if (Number(m[2]) > max) return `"${s}" has a prefix longer than ${max}`;
  return undefined;
}

function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
}

/** Whether two IPv4 CIDRs overlap (IPv6 is not compared). */
export function cidrsOverlap(a: string, b: string): boolean {
  const [ia, pa] = a.split('/') as [string, string];
  const [ib, pb] = b.split('/') as [string, string];
  if (!net.isIPv4(ia) || !net.isIPv4(ib)) return false;
  const p = Math.min(Number(pa), Number(pb));
  const mask = p === 0 ? 0 : (~0 << (32 - p)) >>> 0;
  return ((ipv4ToInt(ia) & mask) >>> 0) === ((ipv4ToInt(ib) & mask) >>> 0);
}

/** Every problem with a set of answers, each naming its field. */
export function answerProblems(a: Partial<InstallAnswers>): { path: (string | number)[]; msg: string }[] {
  const out: { path: (string | number)[]; msg: string }[] = [];
  const p = (path: (string | number)[], msg: string) => out.push({ path, msg });
  if (a.apiVersion !== 'ferry.dev/v1alpha1') p(['apiVersion'], 'must be ferry.dev/v1alpha1');
  if (a.kind !== 'InstallAnswers') p(['kind'], 'must be InstallAnswers');
  if (!a.domain || !DNS_NAME.test(a.domain)) p(['domain'], 'must be a DNS domain such as site.example');
  if (a.clusterFqdn !== undefined && !DNS_NAME.test(a.clusterFqdn)) p(['clusterFqdn'], 'must be a DNS name');
  if (!a.node || !NODE_NAME.test(a.node.name ?? '')) p(['node', 'name'], 'must be a node name: lowercase letters, digits and -');
  if (!a.node || !net.isIP(a.node.ip ?? '')) p(['node', 'ip'], 'must be an IP address of this machine');
  for (const k of ['podCidr', 'serviceCidr'] as const) {
    const v = a[k];
    const e = typeof v === 'string' ? checkCidr(v) : `is required (default ${DEFAULTS[k]})`;
    if (e) p([k], e);
  }
  if (typeof a.podCidr === 'string' && typeof a.serviceCidr === 'string' && !checkCidr(a.podCidr) && !checkCidr(a.serviceCidr) && cidrsOverlap(a.podCidr, a.serviceCidr)) {
    p(['serviceCidr'], `overlaps podCidr ${a.podCidr}`);
  }
  (a.records ?? []).forEach((r, i) => {
    if (!DNS_NAME.test(r?.name ?? '')) p(['records', i, 'name'], 'must be a DNS name');
    if (!net.isIP(r?.ip ?? '')) p(['records', i, 'ip'], 'must be an IP address');
  });
  if (a.upstreamDns !== undefined) {
    if (!Array.isArray(a.upstreamDns)) p(['upstreamDns'], 'must be a list of resolver addresses, such as [10.0.0.53]');
    else a.upstreamDns.forEach((r, i) => {
      const m = typeof r === 'string' ? /^([0-9.]+)(?::(\d{1,5}))?$/.exec(r) : null;
      if (!m || !net.isIPv4(m[1]!) || (m[2] !== undefined && (Number(m[2]) < 1 || Number(m[2]) > 65535))) p(['upstreamDns', i], 'must be the IPv4 address of a resolver, optionally with a port: 10.0.0.53 or 10.0.0.53:5353');
      else if (m[1] === a.node?.ip && m[2] === undefined) p(['upstreamDns', i], 'is this node: the site DNS would forward to itself');
    });
  }
  const names = new Set<string>([a.node?.name ?? '']);
  (a.join ?? []).forEach((j, i) => {
    if (!j?.host) p(['join', i, 'host'], 'must be a host name or IP to reach over SSH');
    if (!NODE_NAME.test(j?.name ?? '')) p(['join', i, 'name'], 'must be a node name');
    else if (names.has(j.name)) p(['join', i, 'name'], `"${j.name}" is used twice`);
    names.add(j?.name ?? '');
    if (j?.role !== 'server' && j?.role !== 'agent') p(['join', i, 'role'], 'must be server or agent');
    if (j?.ip !== undefined && !net.isIP(j.ip)) p(['join', i, 'ip'], 'must be an IP address');
  });
  if (a.cgroupV1 !== undefined && !CGROUP_V1_POLICIES.includes(a.cgroupV1)) p(['cgroupV1'], `must be ${CGROUP_V1_POLICIES.join(' or ')}`);
  if (a.ignoreKubeadmPreflight !== undefined) {
    if (!Array.isArray(a.ignoreKubeadmPreflight)) p(['ignoreKubeadmPreflight'], 'must be a list of kubeadm preflight check names, such as [NumCPU, Mem]');
    else {
      a.ignoreKubeadmPreflight.forEach((c, i) => {
        if (typeof c !== 'string' || !KUBEADM_CHECK.test(c)) p(['ignoreKubeadmPreflight', i], 'must be a kubeadm preflight check name, such as NumCPU or Port-6443');
      });
    }
  }
  out.push(...patchProblems(a.patches));
  return out;
}

export async function loadAnswers(file: string): Promise<InstallAnswers> {
  let y: LoadedYaml;
  try {
    y = await loadYaml(file, 'answers');
  } catch (e) {
    throw new SpecError(Codes.specRead, (e as Error).message, { hint: 'Pass --answers FILE: an InstallAnswers YAML, such as the one ferry install saves after its questions.', cause: e });
  }
  const v = (y.value ?? {}) as Partial<InstallAnswers>;
  const problems = answerProblems(v);
  if (problems.length) {
    const lines = problems.map((q) => `${positionOf(y, q.path)}: ${q.path.join('.')} ${q.msg}`);
    throw new SpecError(Codes.specInvalid, `${file} is not a valid answers file:\n  ${lines.join('\n  ')}`, { hint: 'Fix each field above; run ferry install on a terminal to be asked instead.' });
  }
  return { podCidr: DEFAULTS.podCidr, serviceCidr: DEFAULTS.serviceCidr, ...v } as InstallAnswers;
}

export async function saveAnswers(file: string, a: InstallAnswers): Promise<void> {
  await writeFileAtomic(file, `# Written by ferry install: re-run with --answers ${file}\n${stringify(a)}`, 0o600);
}

/** This machine's non-loopback addresses, for the IP question. */
export function detectAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(os.networkInterfaces())) {
    for (const i of list ?? []) if (!i.internal && i.family === 'IPv4') out.push(i.address);
  }
  return out;
}
