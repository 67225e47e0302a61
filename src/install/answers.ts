import { promises as dns } from 'node:dns';
import net from 'node:net';
import os from 'node:os';
import { stringify } from 'yaml';
import { Codes, SpecError } from '../errors.js';
import { loadYaml, positionOf, type LoadedYaml } from '../spec/yamlpos.js';
import { writeFileAtomic } from '../util/fsx.js';
import { CGROUP_V1_POLICIES, type CgroupV1Policy } from './cgroups.js';
import { unknownAnswerKeys } from './answers-keys.js';
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

/** A problem with the answers, at the path of its field. */
type Problem = { path: (string | number)[]; msg: string };
type NamedAt = [string | undefined, (string | number)[]];

const IPV4_ONLY = 'ferry is IPv4-only today';

export function checkCidr(s: string): string | undefined {
  const m = /^([0-9.]+|[0-9a-fA-F:]+)\/(\d{1,3})$/.exec(s);
  if (!m || !net.isIP(m[1]!)) return `"${s}" is not a CIDR such as 10.244.0.0/16`;
  if (net.isIPv6(m[1]!)) return `"${s}" is an IPv6 CIDR: ${IPV4_ONLY}`;
  if (Number(m[2]) > 32) return `"${s}" has a prefix longer than 32`;
  return undefined;
}

function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
}

const maskOf = (prefix: number) => (prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0);

/** Whether two IPv4 CIDRs overlap (IPv6 is not compared). */
export function cidrsOverlap(a: string, b: string): boolean {
  const [ia, pa] = a.split('/') as [string, string];
  const [ib, pb] = b.split('/') as [string, string];
  if (!net.isIPv4(ia) || !net.isIPv4(ib)) return false;
  const mask = maskOf(Math.min(Number(pa), Number(pb)));
  return ((ipv4ToInt(ia) & mask) >>> 0) === ((ipv4ToInt(ib) & mask) >>> 0);
}

/** Whether an IPv4 address lies inside an IPv4 CIDR. */
export function cidrContains(cidr: string, ip: string): boolean {
  return cidrsOverlap(cidr, `${ip}/32`);
}

/** Why a value is not an IPv4 address, or undefined. */
function ipv4Problem(v: unknown, what: string): string | undefined {
  if (typeof v === 'string' && net.isIPv6(v)) return `"${v}" is an IPv6 address: ${IPV4_ONLY}`;
  return typeof v === 'string' && net.isIPv4(v) ? undefined : `must be ${what}`;
}

/** Why an IPv4 address cannot be a node's address, or undefined. */
function nodeAddressProblem(ip: string, joining: boolean): string | undefined {
  const first = Number(ip.split('.')[0]);
  if (ip === '0.0.0.0' || ip === '255.255.255.255' || (first >= 224 && first <= 239)) return `${ip} is not a host address`;
  // The first server may be a lone one on loopback; a joining node must be reachable from the others.
  if (joining && first === 127) return `${ip} is a loopback address, which the other nodes cannot reach`;
  return undefined;
}

/** A name as the site DNS answers it: names already in the domain stay, others are put in it. */
const qualify = (name: string, domain: string) => (name === domain || name.endsWith(`.${domain}`) ? name : `${name}.${domain}`);

/** Join hosts given by name: each resolved to its one IPv4 address, or why it cannot be. */
export interface ResolvedHosts {
  ips: Map<number, string>;
  problems: Problem[];
}

const isHostName = (h: string) => DNS_NAME.test(h.toLowerCase());

/**
 * Resolves the join hosts that are names and have no ip: nodes.json, the DNS records and the LB
 * backends need an address, and a name there breaks every later install.
 */
export async function resolveJoinHosts(join: unknown): Promise<ResolvedHosts> {
  const out: ResolvedHosts = { ips: new Map(), problems: [] };
  if (!Array.isArray(join)) return out;
  await Promise.all(
    (join as Partial<JoinHost>[]).map(async (j, i) => {
      const host = j?.host;
      if (typeof host !== 'string' || net.isIP(host) || !isHostName(host) || j.ip !== undefined) return;
      const problem = (msg: string) => out.problems.push({ path: ['join', i, 'host'], msg });
      let found: string[];
      try {
        found = [...new Set((await dns.lookup(host, { all: true, family: 4 })).map((x) => x.address))];
      } catch (e) {
        return problem(`"${host}" does not resolve to an IPv4 address (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): give its IP as host, or add ip:`);
      }
      if (found.length !== 1) return problem(`"${host}" resolves to ${found.length ? `several IPv4 addresses (${found.join(', ')})` : 'no IPv4 address'}: add ip: with the node's address on the cluster network`);
      out.ips.set(i, found[0]!);
    }),
  );
  return out;
}

/** A node's address and where the answers give it: nodes.json, the DNS records and the LB backends take it. */
interface NodeAddress {
  ip: string;
  name: string;
  path: (string | number)[];
  joining: boolean;
  /** For a resolved host name: what it resolved to, before the problem. */
  via?: string;
}

function nodeAddressProblems(nodes: NodeAddress[], cidrs: [string, string][]): Problem[] {
  const out: Problem[] = [];
  const owner = new Map<string, string>();
  for (const n of nodes) {
    const say = (msg: string) => out.push({ path: n.path, msg: `${n.via ?? ''}${msg}` });
    const bad = nodeAddressProblem(n.ip, n.joining);
    if (bad) say(bad);
    for (const [k, cidr] of cidrs) if (cidrContains(cidr, n.ip)) say(`${n.ip} is inside ${k} ${cidr}: a node's address must be outside the pod and service networks`);
    if (owner.has(n.ip)) say(`${n.ip} is also the address of ${owner.get(n.ip)}`);
    else owner.set(n.ip, n.name);
  }
  return out;
}

/** Node names and records that would answer, in the site DNS, as one of ferry's own names (or a node's). */
function shadowProblems(domain: string, clusterFqdnAnswer: string | undefined, nodes: NamedAt[], records: { name: string }[]): Problem[] {
  const out: Problem[] = [];
  const registry = registryFqdn(domain);
  const fqdn = clusterFqdn({ domain, clusterFqdn: clusterFqdnAnswer });
  if (fqdn === registry) out.push({ path: ['clusterFqdn'], msg: `is ${registry}, the site registry name` });
  const ferryNames = new Map<string, string>([[registry, 'the site registry name'], [fqdn, 'the cluster FQDN']]);
  const taken = new Map(ferryNames);
  for (const [name, at] of nodes) {
    if (typeof name !== 'string' || !NODE_NAME.test(name)) continue;
    const q = qualify(name, domain);
    const ferry = ferryNames.get(q);
    if (ferry) out.push({ path: at, msg: `would answer in the site DNS as ${q}, which is ${ferry}` });
    else taken.set(q, `node ${name}`);
  }
  records.forEach((r, i) => {
    if (typeof r?.name !== 'string' || !DNS_NAME.test(r.name)) return;
    const q = qualify(r.name, domain);
    if (taken.has(q)) out.push({ path: ['records', i, 'name'], msg: `would answer in the site DNS as ${q}, which is ${taken.get(q)}` });
  });
  return out;
}

/**
 * Every problem with a set of answers, each naming its field. `resolved` holds the addresses of
 * join hosts given by name (resolveJoinHosts); without it they are checked as names only.
 */
export function answerProblems(a: Partial<InstallAnswers>, resolved: Map<number, string> = new Map()): Problem[] {
  const out: Problem[] = [];
  const p = (path: (string | number)[], msg: string) => out.push({ path, msg });
  if (a.apiVersion !== 'ferry.dev/v1alpha1') p(['apiVersion'], 'must be ferry.dev/v1alpha1');
  if (a.kind !== 'InstallAnswers') p(['kind'], 'must be InstallAnswers');
  if (!a.domain || !DNS_NAME.test(a.domain)) p(['domain'], 'must be a DNS domain such as site.example');
  if (a.clusterFqdn !== undefined && !DNS_NAME.test(a.clusterFqdn)) p(['clusterFqdn'], 'must be a DNS name');
  if (!a.node || !NODE_NAME.test(a.node.name ?? '')) p(['node', 'name'], 'must be a node name: lowercase letters, digits and -');
  const nodeIpProblem = ipv4Problem(a.node?.ip, 'an IP address of this machine');
  if (nodeIpProblem) p(['node', 'ip'], nodeIpProblem);
  for (const k of ['podCidr', 'serviceCidr'] as const) {
    const v = a[k];
    const e = typeof v === 'string' ? checkCidr(v) : `is required (default ${DEFAULTS[k]})`;
    if (e) p([k], e);
  }
  const cidrs = (['podCidr', 'serviceCidr'] as const).filter((k) => typeof a[k] === 'string' && !checkCidr(a[k]));
  if (cidrs.length === 2 && cidrsOverlap(a.podCidr!, a.serviceCidr!)) {
    p(['serviceCidr'], `overlaps podCidr ${a.podCidr}`);
  }
  const records = Array.isArray(a.records) ? a.records : [];
  if (a.records !== undefined && !Array.isArray(a.records)) p(['records'], 'must be a list of {name, ip}');
  records.forEach((r, i) => {
    if (!DNS_NAME.test(r?.name ?? '')) p(['records', i, 'name'], 'must be a DNS name');
    const e = ipv4Problem(r?.ip, 'an IP address');
    if (e) p(['records', i, 'ip'], e);
  });
  if (a.upstreamDns !== undefined) {
    if (!Array.isArray(a.upstreamDns)) p(['upstreamDns'], 'must be a list of resolver addresses, such as [10.0.0.53]');
    else a.upstreamDns.forEach((r, i) => {
      const m = typeof r === 'string' ? /^([0-9.]+)(?::(\d{1,5}))?$/.exec(r) : null;
      if (!m || !net.isIPv4(m[1]!) || (m[2] !== undefined && (Number(m[2]) < 1 || Number(m[2]) > 65535))) p(['upstreamDns', i], 'must be the IPv4 address of a resolver, optionally with a port: 10.0.0.53 or 10.0.0.53:5353');
      else if (m[1] === a.node?.ip && m[2] === undefined) p(['upstreamDns', i], 'is this node: the site DNS would forward to itself');
    });
  }
  const join = Array.isArray(a.join) ? a.join : [];
  if (a.join !== undefined && !Array.isArray(a.join)) p(['join'], 'must be a list of {host, name, role}');
  const names = new Set<string>([a.node?.name ?? '']);
  const nodeIps: NodeAddress[] = [];
  if (!nodeIpProblem) nodeIps.push({ ip: a.node!.ip, name: a.node!.name, path: ['node', 'ip'], joining: false });
  join.forEach((j, i) => {
    const host = j?.host;
    if (typeof host !== 'string' || !host) p(['join', i, 'host'], 'must be a host name or IP to reach over SSH');
    else if (net.isIPv6(host)) p(['join', i, 'host'], `"${host}" is an IPv6 address: ${IPV4_ONLY}`);
    else if (!net.isIPv4(host) && !isHostName(host)) p(['join', i, 'host'], 'must be a host name or IPv4 address to reach over SSH');
    if (!NODE_NAME.test(j?.name ?? '')) p(['join', i, 'name'], 'must be a node name');
    else if (names.has(j.name)) p(['join', i, 'name'], `"${j.name}" is used twice`);
    names.add(j?.name ?? '');
    if (j?.role !== 'server' && j?.role !== 'agent') p(['join', i, 'role'], 'must be server or agent');
    if (j?.ip !== undefined) {
      const e = ipv4Problem(j.ip, 'an IP address');
      if (e) p(['join', i, 'ip'], e);
      else nodeIps.push({ ip: j.ip, name: j.name, path: ['join', i, 'ip'], joining: true });
    } else if (typeof host === 'string' && net.isIPv4(host)) nodeIps.push({ ip: host, name: j.name, path: ['join', i, 'host'], joining: true });
    else if (resolved.has(i)) nodeIps.push({ ip: resolved.get(i)!, name: j.name, path: ['join', i, 'host'], joining: true, via: `"${host}" resolves to ${resolved.get(i)}: ` });
  });
  out.push(...nodeAddressProblems(nodeIps, cidrs.map((k) => [k, a[k]!])));
  if (a.domain && DNS_NAME.test(a.domain)) out.push(...shadowProblems(a.domain, a.clusterFqdn, [[a.node?.name, ['node', 'name']], ...join.map((j, i): NamedAt => [j?.name, ['join', i, 'name']])], records));
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

/**
 * Checks answers as a whole, join host names resolved: the answers with each resolved address as
 * its host's ip, or a SpecError listing every problem under `heading` (`where` gives each its file:line:column).
 */
export async function checkAnswers(v: Partial<InstallAnswers>, heading: string, where?: (path: (string | number)[]) => string, unknown: { at?: string; path: (string | number)[]; msg: string }[] = []): Promise<InstallAnswers> {
  const resolved = await resolveJoinHosts(v.join);
  const problems = [...answerProblems(v, resolved.ips), ...resolved.problems];
  if (problems.length || unknown.length) {
    const lines = [...unknown.map((q) => ({ at: q.at, text: `${q.path.join('.')} ${q.msg}` })), ...problems.map((q) => ({ at: where?.(q.path), text: `${q.path.join('.')} ${q.msg}` }))];
    // In file order (file:line:col), as an operator reads them.
    const key = (at?: string) => (/:(\d+):(\d+)$/.exec(at ?? '') ?? []).slice(1).map(Number);
    lines.sort((x, y) => (key(x.at)[0] ?? 0) - (key(y.at)[0] ?? 0) || (key(x.at)[1] ?? 0) - (key(y.at)[1] ?? 0));
    throw new SpecError(Codes.specInvalid, `${heading}:\n  ${lines.map((l) => (l.at ? `${l.at}: ${l.text}` : l.text)).join('\n  ')}`, { hint: 'Fix each field above; run ferry install on a terminal to be asked instead.' });
  }
  const join = v.join?.map((j, i) => (resolved.ips.has(i) ? { ...j, ip: resolved.ips.get(i)! } : j));
  return { podCidr: DEFAULTS.podCidr, serviceCidr: DEFAULTS.serviceCidr, ...v, ...(join ? { join } : {}) } as InstallAnswers;
}

export async function loadAnswers(file: string): Promise<InstallAnswers> {
  let y: LoadedYaml;
  try {
    y = await loadYaml(file, 'answers');
  } catch (e) {
    throw new SpecError(Codes.specRead, (e as Error).message, { hint: 'Pass --answers FILE: an InstallAnswers YAML, such as the one ferry install saves after its questions.', cause: e });
  }
  // Unknown keys are errors, not silently ignored; patches' own check already names unknown targets.
  const unknown = unknownAnswerKeys(y.value)
    .filter((q) => q.path[0] !== 'patches')
    .map((q) => ({ ...q, at: positionOf(y, q.path, 'key') }));
  return checkAnswers((y.value ?? {}) as Partial<InstallAnswers>, `${file} is not a valid answers file`, (q) => positionOf(y, q), unknown);
}

export async function saveAnswers(file: string, a: InstallAnswers): Promise<void> {
  await writeFileAtomic(file, `# Written by ferry install: re-run with --answers ${file}\n${stringify(a)}`, 0o600);
}

/** This machine's IPv4 addresses; loopback too when asked (preflight's node-IP check). */
export function detectAddresses(o: { loopback?: boolean } = {}): string[] {
  const out: string[] = [];
  for (const list of Object.values(os.networkInterfaces())) {
    for (const i of list ?? []) if ((o.loopback || !i.internal) && i.family === 'IPv4') out.push(i.address);
  }
  return out;
}
