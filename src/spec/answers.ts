import net from 'node:net';
import { formatPath } from './yamlpos.js';

/*
 * The answers: what ferry install asks about the site (InstallAnswers YAML). Their shape is the
 * JSON Schema below, checked through the same path as the spec (Ajv, file:line:col, unknown keys
 * with a did-you-mean); the rules that span fields are the small named functions after it, which
 * the prompts use too. The bootstrap chart's values.schema.json takes the parts both share from
 * SITE_SCHEMAS (a test keeps them equal). No I/O here: install/answers.ts loads, resolves and saves.
 */

const LABEL = '[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?';
const OCTET = '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
const IPV4 = `(${OCTET}\\.){3}${OCTET}`;
const PORT = '([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])';
const IPV4_ONLY = 'ferry is IPv4-only today';

/** The cgroup v1 policies: allow (the default, with a loud warning) or refuse. */
export const CGROUP_V1_POLICIES = ['allow', 'refuse'] as const;
export type CgroupV1Policy = (typeof CGROUP_V1_POLICIES)[number];
/** The documents ferry gives kubeadm that the answers may patch (install/patches.ts). */
export const PATCH_TARGETS = ['kubelet', 'kubeProxy', 'clusterConfiguration', 'initConfiguration', 'joinConfiguration'] as const;
export type PatchTarget = (typeof PATCH_TARGETS)[number];
export type Patch = Record<string, unknown>;
export type Patches = Partial<Record<PatchTarget, Patch>>;

const dnsName = (description: string) => ({ type: 'string', minLength: 1, maxLength: 253, pattern: `^${LABEL}(\\.${LABEL})*$`, description }) as const;
const ipv4 = (description: string) => ({ type: 'string', pattern: `^${IPV4}$`, description: `${description} (${IPV4_ONLY})` }) as const;

/** What the answers and the bootstrap chart's values share: the chart's values.schema.json holds these as they are. */
export const SITE_SCHEMAS = {
  domain: dnsName('The site DNS domain, for example site.example. Nodes are <node>.<domain>, the site service is registry.<domain>.'),
  nodeName: { type: 'string', minLength: 1, maxLength: 63, pattern: `^${LABEL}$`, description: 'A node name: lowercase letters, digits and -. <name>.<domain> answers its IP.' },
  nodeIp: ipv4("The node's IPv4 address, for example 10.0.0.11"),
  records: {
    type: 'array',
    description: 'Extra site DNS records. A name may appear more than once to answer several addresses.',
    items: {
      type: 'object',
      additionalProperties: false,
      required: ['name', 'ip'],
      properties: {
        name: dnsName('A name in the site domain: relative (harbor → harbor.<domain>) or full (harbor.site.example).'),
        ip: ipv4('The IPv4 address the name answers'),
      },
    },
  },
  upstreamDns: {
    type: 'array',
    uniqueItems: true,
    description: 'The site resolvers for every name outside the site domain, as IPv4 or IPv4:port. Empty: answer only the site domain.',
    items: { type: 'string', pattern: `^${IPV4}(:${PORT})?$`, description: `A resolver, for example 10.0.0.53 or 10.0.0.53:5353 (${IPV4_ONLY}).` },
  },
} as const;

const cidr = (description: string) => ({ type: 'string', pattern: `^${IPV4}/(3[0-2]|[12]?[0-9])$`, description: `${description} (${IPV4_ONLY})` }) as const;

/** The JSON Schema of answers files; `ferry answers schema` prints it. */
export const answersSchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  $id: 'https://ferry.dev/schemas/install-answers.v1alpha1.json',
  title: 'ferry InstallAnswers',
  description: 'What ferry install asks about the site, saved for re-runs and for ferry join.',
  type: 'object',
  additionalProperties: false,
  required: ['apiVersion', 'kind', 'domain', 'node', 'podCidr', 'serviceCidr'],
  properties: {
    apiVersion: { const: 'ferry.dev/v1alpha1', description: 'Always ferry.dev/v1alpha1.' },
    kind: { const: 'InstallAnswers', description: 'Always InstallAnswers.' },
    domain: SITE_SCHEMAS.domain,
    clusterFqdn: dnsName('The name every node reaches the API server by (kubeadm controlPlaneEndpoint). Default k8s-cluster.<domain>.'),
    node: {
      type: 'object',
      additionalProperties: false,
      required: ['name', 'ip'],
      description: 'The first server: this machine.',
      properties: { name: SITE_SCHEMAS.nodeName, ip: SITE_SCHEMAS.nodeIp },
    },
    podCidr: cidr('The pod network, for example 10.244.0.0/16'),
    serviceCidr: cidr('The Service network, for example 10.96.0.0/12'),
    cni: { type: 'string', minLength: 1, description: 'The CNI chart from the bundle, for example flannel. None: apply one yourself.' },
    records: SITE_SCHEMAS.records,
    upstreamDns: SITE_SCHEMAS.upstreamDns,
    ssh: {
      type: 'object',
      additionalProperties: false,
      description: 'How ferry join reaches the nodes.',
      properties: {
        user: { type: 'string', minLength: 1, description: 'Default root.' },
        identityFile: { type: 'string', minLength: 1, description: 'Default ~/.ssh/id_ed25519.' },
        knownHosts: { type: 'string', minLength: 1, description: 'Default ~/.ssh/known_hosts.' },
        port: { type: 'integer', minimum: 1, maximum: 65535, description: 'Default 22.' },
      },
    },
    join: {
      type: 'array',
      description: 'The nodes ferry join adds.',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['host', 'name', 'role'],
        properties: {
          host: { type: 'string', minLength: 1, maxLength: 253, pattern: `^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$`, description: `A host name or IPv4 address to reach over SSH (${IPV4_ONLY}).` },
          name: SITE_SCHEMAS.nodeName,
          role: { enum: ['server', 'agent'], description: 'server (control plane) or agent (worker).' },
          ip: ipv4("The node's own address on the cluster network, when it differs from host"),
        },
      },
    },
    cgroupV1: { enum: [...CGROUP_V1_POLICIES], description: 'A node on cgroup v1: allow (default, with a loud warning) or refuse.' },
    ignoreKubeadmPreflight: {
      type: 'array',
      description: "kubeadm preflight checks to skip on init and joins (ferry's own are --ignore-preflight).",
      items: { type: 'string', pattern: '^[A-Za-z][A-Za-z0-9._-]*$', description: 'A kubeadm preflight check name, such as NumCPU or Port-6443.' },
    },
    patches: {
      type: 'object',
      additionalProperties: false,
      description: 'JSON merge patches over the documents ferry gives kubeadm.',
      properties: Object.fromEntries(PATCH_TARGETS.map((t) => [t, { type: 'object', description: `A merge patch over the ${t} document ferry writes (its apiVersion and kind are ferry's).` }])) as Record<PatchTarget, { type: 'object'; description: string }>,
    },
  },
} as const;

export interface JoinHost {
  host: string;
  name: string;
  role: 'server' | 'agent';
  /** The node's own IP on the cluster network, when it differs from `host`. */
  ip?: string;
}

/** The answers as the schema describes them; test/unit/answers-schema.test.ts keeps the two equal. */
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
  cgroupV1?: CgroupV1Policy;
  ignoreKubeadmPreflight?: string[];
  patches?: Patches;
}

export const DEFAULTS = { podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' };

/** The cluster FQDN by default: k8s-cluster.<domain>. */
export const defaultClusterFqdn = (domain: string) => `k8s-cluster.${domain}`;
export const clusterFqdn = (a: Pick<InstallAnswers, 'domain' | 'clusterFqdn'>): string => a.clusterFqdn ?? defaultClusterFqdn(a.domain);
/** The site service's name: servers answer it in DNS, and their certificates carry it. */
export const registryFqdn = (domain: string) => `registry.${domain}`;

// ---------------------------------------------------------------------------------------------
// The rules across fields. Each takes values the schema accepted; each problem names its field.

/** A problem with the answers, at the path of its field. */
export interface AnswerProblem {
  path: (string | number)[];
  msg: string;
}

const isIpv4 = (v: unknown): v is string => typeof v === 'string' && net.isIPv4(v);
const isCidr = (v: unknown): v is string => typeof v === 'string' && new RegExp(answersSchema.properties.podCidr.pattern).test(v);
const isName = (v: unknown): v is string => typeof v === 'string' && new RegExp(SITE_SCHEMAS.domain.pattern).test(v);
const isNodeName = (v: unknown): v is string => typeof v === 'string' && new RegExp(SITE_SCHEMAS.nodeName.pattern).test(v);

const ipv4ToInt = (ip: string) => ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
const maskOf = (prefix: number) => (prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0);

/** Whether two IPv4 CIDRs overlap. */
export function cidrsOverlap(a: string, b: string): boolean {
  const [ia, pa] = a.split('/') as [string, string];
  const [ib, pb] = b.split('/') as [string, string];
  if (!net.isIPv4(ia) || !net.isIPv4(ib)) return false;
  const mask = maskOf(Math.min(Number(pa), Number(pb)));
  return ((ipv4ToInt(ia) & mask) >>> 0) === ((ipv4ToInt(ib) & mask) >>> 0);
}

/** Whether an IPv4 address lies inside an IPv4 CIDR. */
export const cidrContains = (cidr: string, ip: string) => cidrsOverlap(cidr, `${ip}/32`);

/** The Service network must not overlap the pod network. */
export function cidrOverlapProblem(podCidr: string, serviceCidr: string): string | undefined {
  return cidrsOverlap(podCidr, serviceCidr) ? `overlaps podCidr ${podCidr}` : undefined;
}

/** Why an address cannot be a node's, or undefined: the first server may be a lone one on loopback, a joining node must be reachable. */
export function nodeAddressProblem(ip: string, joining: boolean): string | undefined {
  const first = Number(ip.split('.')[0]);
  if (ip === '0.0.0.0' || ip === '255.255.255.255' || (first >= 224 && first <= 239)) return `${ip} is not a host address`;
  if (joining && first === 127) return `${ip} is a loopback address, which the other nodes cannot reach`;
  return undefined;
}

/** A node's address and where the answers give it. */
export interface NodeAddress {
  ip: string;
  name: string;
  path: (string | number)[];
  joining: boolean;
  /** For a resolved host name: what it resolved to, said before the problem. */
  via?: string;
}

/** Each node's address: a host address, outside the pod and service networks, and its own. */
export function nodeAddressProblems(nodes: NodeAddress[], cidrs: [string, string][]): AnswerProblem[] {
  const out: AnswerProblem[] = [];
  const owner = new Map<string, string>();
  for (const n of nodes) {
    const say = (msg: string) => out.push({ path: n.path, msg: `${n.via ?? ''}${msg}` });
    const bad = nodeAddressProblem(n.ip, n.joining);
    if (bad) say(bad);
    for (const [k, c] of cidrs) if (cidrContains(c, n.ip)) say(`${n.ip} is inside ${k} ${c}: a node's address must be outside the pod and service networks`);
    if (owner.has(n.ip)) say(`${n.ip} is also the address of ${owner.get(n.ip)}`);
    else owner.set(n.ip, n.name);
  }
  return out;
}

/** A name as the site DNS answers it: names already in the domain stay, others are put in it. */
const qualify = (name: string, domain: string) => (name === domain || name.endsWith(`.${domain}`) ? name : `${name}.${domain}`);

/** Node names and records that would answer, in the site DNS, as one of ferry's own names (or a node's). */
export function shadowProblems(domain: string, clusterFqdnAnswer: string | undefined, nodes: [unknown, (string | number)[]][], records: { name?: unknown }[]): AnswerProblem[] {
  const out: AnswerProblem[] = [];
  const registry = registryFqdn(domain);
  const fqdn = clusterFqdn({ domain, clusterFqdn: clusterFqdnAnswer });
  if (fqdn === registry) out.push({ path: ['clusterFqdn'], msg: `is ${registry}, the site registry name` });
  const ferryNames = new Map<string, string>([[registry, 'the site registry name'], [fqdn, 'the cluster FQDN']]);
  const taken = new Map(ferryNames);
  for (const [name, at] of nodes) {
    if (!isNodeName(name)) continue;
    const q = qualify(name, domain);
    const ferry = ferryNames.get(q);
    if (ferry) out.push({ path: at, msg: `would answer in the site DNS as ${q}, which is ${ferry}` });
    else taken.set(q, `node ${name}`);
  }
  records.forEach((r, i) => {
    if (!isName(r?.name)) return;
    const q = qualify(r.name, domain);
    if (taken.has(q)) out.push({ path: ['records', i, 'name'], msg: `would answer in the site DNS as ${q}, which is ${taken.get(q)}` });
  });
  return out;
}

/** Node names used twice (the first server's and the joining nodes'). */
export function duplicateNameProblems(names: [unknown, (string | number)[]][]): AnswerProblem[] {
  const seen = new Set<unknown>();
  return names.flatMap(([n, at]) => {
    if (!isNodeName(n)) return [];
    if (seen.has(n)) return [{ path: at, msg: `"${n}" is used twice` }];
    seen.add(n);
    return [];
  });
}

/** The site DNS must not forward to itself. */
export function upstreamSelfProblems(upstreamDns: unknown, nodeIp: unknown): AnswerProblem[] {
  if (!Array.isArray(upstreamDns)) return [];
  return upstreamDns.flatMap((r, i) => (r === nodeIp ? [{ path: ['upstreamDns', i], msg: 'is this node: the site DNS would forward to itself' }] : []));
}

/** A patch may not name its document's apiVersion or kind: ferry writes the document of that kind. */
export function patchKindProblems(patches: unknown): AnswerProblem[] {
  if (!patches || typeof patches !== 'object') return [];
  return Object.entries(patches).flatMap(([k, v]) =>
    v && typeof v === 'object' ? ['apiVersion', 'kind'].filter((f) => f in v).map((f) => ({ path: ['patches', k, f], msg: 'cannot be patched: ferry writes the document of that kind' })) : [],
  );
}

/**
 * Every rule across fields, on answers as loaded (fields the schema refused are skipped, not
 * reported twice). `resolved` holds the addresses of join hosts given by name.
 */
export function crossFieldProblems(a: Partial<InstallAnswers>, resolved: Map<number, string> = new Map()): AnswerProblem[] {
  const out: AnswerProblem[] = [];
  const cidrs = (['podCidr', 'serviceCidr'] as const).filter((k) => isCidr(a[k])).map((k): [string, string] => [k, a[k]!]);
  if (cidrs.length === 2) {
    const e = cidrOverlapProblem(a.podCidr!, a.serviceCidr!);
    if (e) out.push({ path: ['serviceCidr'], msg: e });
  }
  const join = Array.isArray(a.join) ? a.join : [];
  const nodes: NodeAddress[] = [];
  if (isIpv4(a.node?.ip)) nodes.push({ ip: a.node.ip, name: a.node.name, path: ['node', 'ip'], joining: false });
  join.forEach((j, i) => {
    if (j?.ip !== undefined) {
      if (isIpv4(j.ip)) nodes.push({ ip: j.ip, name: j.name, path: ['join', i, 'ip'], joining: true });
    } else if (isIpv4(j?.host)) nodes.push({ ip: j.host, name: j.name, path: ['join', i, 'host'], joining: true });
    else if (resolved.has(i)) nodes.push({ ip: resolved.get(i)!, name: j.name, path: ['join', i, 'host'], joining: true, via: `"${j.host}" resolves to ${resolved.get(i)}: ` });
  });
  out.push(...nodeAddressProblems(nodes, cidrs));
  const names: [unknown, (string | number)[]][] = [[a.node?.name, ['node', 'name']], ...join.map((j, i): [unknown, (string | number)[]] => [j?.name, ['join', i, 'name']])];
  out.push(...duplicateNameProblems(names));
  if (isName(a.domain)) out.push(...shadowProblems(a.domain, isName(a.clusterFqdn) ? a.clusterFqdn : undefined, names, Array.isArray(a.records) ? a.records : []));
  out.push(...upstreamSelfProblems(a.upstreamDns, a.node?.ip));
  out.push(...patchKindProblems(a.patches));
  return out;
}

/** A problem as a line: `join[1].host is …`, paths written as the schema's problems write them. */
export const formatProblem = (p: AnswerProblem) => `${formatPath(p.path)} ${p.msg}`;
