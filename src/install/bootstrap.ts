import { createHash } from 'node:crypto';
import { Ajv, type ErrorObject } from 'ajv';
import { Codes, UsageError } from '../errors.js';

/*
 * The site's DNS and API load balancer, step 6 of the disconnected side: ferry's own renderer of
 * charts/ferry-bootstrap. The installer applies these objects with server-side apply, without helm;
 * the chart renders the very same objects (a test compares `helm template` with renderBootstrap
 * object for object), so either path gives the same cluster.
 *
 * - DNS (every node): CoreDNS on the host network at <node IP>:53. The cluster FQDN answers with the
 *   answering node's own IP ({$HOST_IP}, from the downward API), <node>.<domain> with each node's IP,
 *   registry.<domain> with every server's IP, plus the site's extra records. Names in our zones that
 *   do not exist get NXDOMAIN with the zone's SOA; other names are forwarded to `upstreamDns`, or
 *   refused when there is none.
 * - LB (agents only): haproxy in TCP mode at <node IP>:<apiServerPort>, health-checking every
 *   server's API server, with /healthz, /readyz and /stats on <node IP>:<lb.statsPort>.
 *
 * Both configurations live in ConfigMaps; a checksum annotation in each pod template rolls the pods
 * when they change. Only IPv4 node and record addresses are supported for now.
 */

export const BOOTSTRAP_NAMESPACE = 'ferry-system';
export const BOOTSTRAP_CHART = 'ferry-bootstrap';
export const DNS_NAME = 'ferry-dns';
export const LB_NAME = 'ferry-lb';
/** Where the LB DaemonSet's pods never run: servers have their own API server. */
export const CONTROL_PLANE_LABEL = 'node-role.kubernetes.io/control-plane';

export type NodeRole = 'server' | 'agent';
export interface BootstrapNode {
  /** The Kubernetes node name; <name>.<domain> answers its IP (a name already in the domain is kept). */
  name: string;
  ip: string;
  role: NodeRole;
}
export interface BootstrapRecord {
  /** A name in the site domain: relative (`harbor` → harbor.<domain>) or full (`harbor.site.example`). */
  name: string;
  ip: string;
}
export interface Resources {
  requests?: { cpu?: string | number; memory?: string | number };
  limits?: { cpu?: string | number; memory?: string | number };
}

/** The chart's values. Anything left out takes the chart's default (values.yaml). */
export interface BootstrapValues {
  domain: string;
  /** Default k8s-cluster.<domain>. */
  clusterFqdn?: string;
  nodes: BootstrapNode[];
  records?: BootstrapRecord[];
  apiServerPort?: number;
  images?: { coredns?: string; haproxy?: string };
  /** Site resolvers (IPv4, optionally :port) for every other name; none means refuse them. */
  upstreamDns?: string[];
  dns?: { ttl?: number; healthPort?: number; readyPort?: number; resources?: Resources };
  lb?: {
    statsPort?: number;
    maxConnections?: number;
    healthCheck?: { interval?: string; fastInterval?: string; downInterval?: string; fall?: number; rise?: number };
    timeouts?: { connect?: string; client?: string; server?: string };
    resources?: Resources;
  };
}

/** Values with every default filled in, as the chart's templates see them. */
export interface ResolvedBootstrapValues {
  domain: string;
  clusterFqdn: string;
  nodes: BootstrapNode[];
  records: BootstrapRecord[];
  apiServerPort: number;
  images: { coredns: string; haproxy: string };
  upstreamDns: string[];
  dns: { ttl: number; healthPort: number; readyPort: number; resources: Resources };
  lb: {
    statsPort: number;
    maxConnections: number;
    healthCheck: { interval: string; fastInterval: string; downInterval: string; fall: number; rise: number };
    timeouts: { connect: string; client: string; server: string };
    resources: Resources;
  };
}

/** A Kubernetes object as server-side apply takes it. */
export interface KubernetesObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: unknown;
}

/** The chart's values.yaml, as data (a test keeps the two equal). */
export const bootstrapDefaults = {
  domain: 'site.example',
  clusterFqdn: '',
  nodes: [],
  records: [],
  apiServerPort: 6443,
  images: {
    coredns: 'registry.k8s.io/coredns/coredns:v1.14.6',
    haproxy: 'docker.io/library/haproxy:3.0',
  },
  upstreamDns: [],
  dns: {
    ttl: 30,
    healthPort: 8053,
    readyPort: 8054,
    resources: { requests: { cpu: '50m', memory: '32Mi' }, limits: { memory: '128Mi' } },
  },
  lb: {
    statsPort: 8404,
    maxConnections: 4096,
    healthCheck: { interval: '2s', fastInterval: '1s', downInterval: '5s', fall: 3, rise: 2 },
    timeouts: { connect: '5s', client: '1h', server: '1h' },
    resources: { requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '256Mi' } },
  },
} as const satisfies ResolvedBootstrapValues;

// ---------------------------------------------------------------------------------------------
// The JSON Schema. charts/ferry-bootstrap/values.schema.json is this object, written out (a test
// keeps them equal), so helm and ferry refuse the same values. Patterns are RE2-safe, since helm
// evaluates them with Go's regexp.

const octet = '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
const ipv4Pattern = `^(${octet}\\.){3}${octet}$`;
const label = '[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?';
const ipv4 = { type: 'string', pattern: ipv4Pattern, description: 'An IPv4 address, for example 10.0.0.11.' };
const port = (what: string) => ({ type: 'integer', minimum: 1, maximum: 65535, description: what });
const haproxyTime = (what: string) => ({ type: 'string', pattern: '^[1-9][0-9]*(ms|s|m|h)$', description: `${what} (haproxy time: a number with ms, s, m or h, for example 2s).` });
const quantity = (what: string) => ({
  anyOf: [
    { type: 'string', pattern: '^[0-9]+(\\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$' },
    { type: 'number', minimum: 0 },
  ],
  description: `${what}: a Kubernetes quantity such as 50m or 64Mi.`,
});
const quantities = (what: string) => ({
  type: 'object',
  additionalProperties: false,
  description: what,
  properties: { cpu: quantity('CPU'), memory: quantity('Memory') },
});
const resources = (what: string) => ({
  type: 'object',
  additionalProperties: false,
  description: `Resource requests and limits of the ${what} container.`,
  properties: { requests: quantities('What the scheduler reserves.'), limits: quantities('The most the container may use.') },
});
const image = (what: string) => ({
  type: 'string',
  minLength: 1,
  pattern: '^[A-Za-z0-9][A-Za-z0-9._/:@-]*$',
  description: `The ${what} image by its upstream name, for example ${what === 'CoreDNS' ? bootstrapDefaults.images.coredns : bootstrapDefaults.images.haproxy}. Nodes pull it through the containerd mirror, so upstream names are right.`,
});

export const bootstrapValuesSchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  $id: 'https://ferry.dev/schemas/ferry-bootstrap.values.json',
  title: 'ferry-bootstrap values',
  description: "Values of ferry's bootstrap chart: the site DNS on every node and the API server load balancer on every agent.",
  type: 'object',
  additionalProperties: false,
  required: ['domain', 'clusterFqdn', 'nodes', 'records', 'apiServerPort', 'images', 'upstreamDns', 'dns', 'lb'],
  properties: {
    domain: {
      type: 'string',
      minLength: 1,
      maxLength: 253,
      pattern: `^${label}(\\.${label})*$`,
      description: 'The site DNS domain, for example site.example. Nodes are <node>.<domain>, the site service is registry.<domain>.',
    },
    clusterFqdn: {
      type: 'string',
      maxLength: 253,
      pattern: `^(${label}(\\.${label})+)?$`,
      description: 'The API server name (kubeadm controlPlaneEndpoint); every node answers it with its own IP. Empty means k8s-cluster.<domain>.',
    },
    nodes: {
      type: 'array',
      description: 'Every node of the cluster. Servers run an API server and the site service; agents run the load balancer.',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'ip', 'role'],
        properties: {
          name: { type: 'string', minLength: 1, maxLength: 253, pattern: `^${label}(\\.${label})*$`, description: 'The Kubernetes node name; <name>.<domain> answers its IP.' },
          ip: { ...ipv4, description: "The node's IPv4 address, for example 10.0.0.11." },
          role: { enum: ['server', 'agent'], description: 'server (control plane) or agent (worker).' },
        },
      },
    },
    records: {
      type: 'array',
      description: 'Extra site records. A name may appear more than once to answer several addresses.',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'ip'],
        properties: {
          name: { type: 'string', minLength: 1, maxLength: 253, pattern: `^${label}(\\.${label})*$`, description: 'A name in the site domain: relative (harbor → harbor.<domain>) or full (harbor.site.example).' },
          ip: { ...ipv4, description: 'The IPv4 address the name answers.' },
        },
      },
    },
    apiServerPort: port('The API server port, on the servers and on each agent’s load balancer (default 6443).'),
    images: {
      type: 'object',
      additionalProperties: false,
      required: ['coredns', 'haproxy'],
      description: 'Container images.',
      properties: { coredns: image('CoreDNS'), haproxy: image('haproxy') },
    },
    upstreamDns: {
      type: 'array',
      uniqueItems: true,
      description: 'Site resolvers for every name outside our zones, as IPv4 or IPv4:port. Empty: answer only our zones and refuse the rest.',
      items: { type: 'string', pattern: `^(${octet}\\.){3}${octet}(:[0-9]{1,5})?$`, description: 'A resolver, for example 10.0.0.2 or 10.0.0.2:5353.' },
    },
    dns: {
      type: 'object',
      additionalProperties: false,
      required: ['ttl', 'healthPort', 'readyPort', 'resources'],
      description: 'The DNS DaemonSet (CoreDNS on every node).',
      properties: {
        ttl: { type: 'integer', minimum: 0, maximum: 86400, description: 'TTL in seconds of every answer, and of NXDOMAIN answers.' },
        healthPort: port('Host port of CoreDNS’s health plugin (liveness), bound to the node IP.'),
        readyPort: port('Host port of CoreDNS’s ready plugin (readiness), bound to the node IP.'),
        resources: resources('CoreDNS'),
      },
    },
    lb: {
      type: 'object',
      additionalProperties: false,
      required: ['statsPort', 'maxConnections', 'healthCheck', 'timeouts', 'resources'],
      description: 'The API server load balancer DaemonSet (haproxy on every agent).',
      properties: {
        statsPort: port('Host port for /healthz, /readyz (503 while no API server is up) and /stats, bound to the node IP.'),
        maxConnections: { type: 'integer', minimum: 64, maximum: 1000000, description: "haproxy's global maxconn." },
        healthCheck: {
          type: 'object',
          additionalProperties: false,
          required: ['interval', 'fastInterval', 'downInterval', 'fall', 'rise'],
          description: 'TCP health checks of every API server.',
          properties: {
            interval: haproxyTime('Time between checks of a server that is up'),
            fastInterval: haproxyTime('Time between checks while a server is changing state'),
            downInterval: haproxyTime('Time between checks of a server that is down'),
            fall: { type: 'integer', minimum: 1, maximum: 100, description: 'Failed checks in a row that mark a server down.' },
            rise: { type: 'integer', minimum: 1, maximum: 100, description: 'Passed checks in a row that mark a server up.' },
          },
        },
        timeouts: {
          type: 'object',
          additionalProperties: false,
          required: ['connect', 'client', 'server'],
          description: 'haproxy timeouts. Client and server are long because API watches stay open.',
          properties: {
            connect: haproxyTime('Time to connect to an API server'),
            client: haproxyTime('Idle time allowed on the client side'),
            server: haproxyTime('Idle time allowed on the server side'),
          },
        },
        resources: resources('haproxy'),
      },
    },
  },
} as const;

// ---------------------------------------------------------------------------------------------
// Values: defaults, validation.

type Plain = Record<string, unknown>;
const isPlain = (v: unknown): v is Plain => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Helm's coalescing: maps merge key by key, anything else (lists too) replaces; null deletes. */
function coalesce(base: unknown, over: unknown): unknown {
  if (over === undefined) return structuredClone(base);
  if (!isPlain(base) || !isPlain(over)) return structuredClone(over);
  const out: Plain = structuredClone(base);
  for (const [k, v] of Object.entries(over)) {
    if (v === null) delete out[k];
    else out[k] = coalesce(base[k], v);
  }
  return out;
}

let validator: ReturnType<Ajv['compile']> | undefined;

function pathOf(e: ErrorObject): string {
  const parts = e.instancePath.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  let out = 'values';
  for (const p of parts) out += /^\d+$/.test(p) ? `[${p}]` : `.${p}`;
  if (e.keyword === 'additionalProperties') out += `.${(e.params as { additionalProperty: string }).additionalProperty}`;
  return out;
}

function describeError(e: ErrorObject): string {
  const where = pathOf(e);
  const desc = (e.parentSchema as { description?: string } | undefined)?.description;
  switch (e.keyword) {
    case 'additionalProperties':
      return `${where} is not a known field`;
    case 'required':
      return `${where}.${(e.params as { missingProperty: string }).missingProperty} is required`;
    case 'pattern':
    case 'anyOf':
      return `${where} is ${JSON.stringify(e.data)}, which is not valid${desc ? `. Expected: ${desc}` : ''}`;
    case 'enum':
      return `${where} is ${JSON.stringify(e.data)}, expected one of ${(e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}`;
    default:
      return `${where} ${e.message ?? 'is not valid'}${desc ? ` (${desc})` : ''}`;
  }
}

const VALUES_HINT = 'Check the values against charts/ferry-bootstrap/values.schema.json (helm uses the same schema).';

/** Same name rule as the chart's "ferry-bootstrap.qualify": names already in the domain stay. */
export function qualify(name: string, domain: string): string {
  return name === domain || name.endsWith(`.${domain}`) ? name : `${name}.${domain}`;
}

const withinZone = (name: string, zone: string) => name === zone || name.endsWith(`.${zone}`);

/**
 * Checks that need more than the schema. The chart's "ferry-bootstrap.checks" template makes the
 * same checks with the same messages, so helm refuses the same values.
 */
function semanticProblems(v: ResolvedBootstrapValues): string[] {
  const problems: string[] = [];
  const seenName = new Map<string, string>();
  const seenIp = new Map<string, string>();
  for (const n of v.nodes) {
    if (seenName.has(n.name)) problems.push(`node name ${n.name} appears more than once`);
    seenName.set(n.name, n.ip);
    if (seenIp.has(n.ip)) problems.push(`nodes ${seenIp.get(n.ip)} and ${n.name} have the same IP ${n.ip}`);
    else seenIp.set(n.ip, n.name);
  }
  if (v.nodes.length > 0 && !v.nodes.some((n) => n.role === 'server')) problems.push('nodes has no server: at least one node needs role server');
  const registry = `registry.${v.domain}`;
  const reserved = new Map<string, string>([[v.clusterFqdn, 'the cluster FQDN']]);
  for (const n of v.nodes) {
    const fqdn = qualify(n.name, v.domain);
    const clash = fqdn === registry ? 'the site registry name' : reserved.get(fqdn);
    if (clash !== undefined) problems.push(`node ${n.name} would answer as ${fqdn}, which is ${clash}`);
    reserved.set(fqdn, `node ${n.name}`);
  }
  if (v.clusterFqdn === registry) problems.push(`clusterFqdn ${v.clusterFqdn} is the site registry name`);
  reserved.set(registry, 'the site registry name');
  for (const r of v.records) {
    const fqdn = qualify(r.name, v.domain);
    const clash = reserved.get(fqdn);
    if (clash !== undefined) problems.push(`record ${r.name} would answer as ${fqdn}, which is ${clash}`);
  }
  if (v.dns.healthPort === v.dns.readyPort) problems.push(`dns.healthPort and dns.readyPort are both ${v.dns.healthPort}`);
  if (v.dns.healthPort === 53 || v.dns.readyPort === 53) problems.push('dns.healthPort and dns.readyPort must not be 53, the DNS port');
  if (v.lb.statsPort === v.apiServerPort) problems.push(`lb.statsPort and apiServerPort are both ${v.apiServerPort}`);
  return problems;
}

/**
 * Merges `values` over the chart's defaults the way helm does, then checks the result against the
 * chart's values.schema.json and the chart's own checks. Returns the complete values.
 */
export function validateBootstrapValues(values: unknown): ResolvedBootstrapValues {
  if (!isPlain(values)) {
    throw new UsageError(Codes.bootstrapValues, 'bootstrap values must be a map of fields', { hint: VALUES_HINT });
  }
  const merged = coalesce(bootstrapDefaults, values) as Plain;
  validator ??= new Ajv({ allErrors: true, verbose: true, strict: false }).compile(bootstrapValuesSchema);
  if (!validator(merged)) {
    const seen = new Set<string>();
    const lines: string[] = [];
    for (const e of validator.errors ?? []) {
      // anyOf reports each branch too; its own summary line says it better.
      if (e.schemaPath.includes('/anyOf/')) continue;
      const line = describeError(e);
      if (!seen.has(line)) lines.push(line), seen.add(line);
    }
    throw new UsageError(Codes.bootstrapValues, `invalid bootstrap values:\n  ${lines.join('\n  ')}`, {
      hint: VALUES_HINT,
      details: { errors: lines },
    });
  }
  const resolved = merged as unknown as ResolvedBootstrapValues;
  if (resolved.clusterFqdn === '') resolved.clusterFqdn = `k8s-cluster.${resolved.domain}`;
  const problems = semanticProblems(resolved);
  if (problems.length > 0) {
    throw new UsageError(Codes.bootstrapValues, `invalid bootstrap values:\n  ${problems.join('\n  ')}`, {
      hint: 'Each node needs its own name and IP, at least one node must be a server, and extra records must not reuse the names ferry answers itself (the cluster FQDN, registry.<domain>, the nodes).',
      details: { errors: problems },
    });
  }
  return resolved;
}

// ---------------------------------------------------------------------------------------------
// DNS.

export interface DnsRecord {
  name: string;
  ip: string;
}

/**
 * Every A record the site DNS answers, in the order of the Corefile's hosts block, as the node whose
 * IP is `hostIp` answers them. The Corefile passes the literal `{$HOST_IP}`, which CoreDNS expands.
 */
export function dnsRecords(values: BootstrapValues | ResolvedBootstrapValues, hostIp: string): DnsRecord[] {
  const v = validateBootstrapValues(values);
  const out: DnsRecord[] = [{ name: v.clusterFqdn, ip: hostIp }];
  for (const n of v.nodes) out.push({ name: qualify(n.name, v.domain), ip: n.ip });
  for (const n of v.nodes) if (n.role === 'server') out.push({ name: `registry.${v.domain}`, ip: n.ip });
  for (const r of v.records) out.push({ name: qualify(r.name, v.domain), ip: r.ip });
  return out;
}

/** The zones the site DNS is authoritative for: the domain, and the cluster FQDN when outside it. */
export function dnsZones(values: BootstrapValues | ResolvedBootstrapValues): string[] {
  const v = validateBootstrapValues(values);
  return withinZone(v.clusterFqdn, v.domain) ? [v.domain] : [v.domain, v.clusterFqdn];
}

/** The SOA each zone answers NXDOMAIN with (the file plugin's zone file holds only this record). */
export function soaRecord(values: BootstrapValues | ResolvedBootstrapValues, zone: string): string {
  const v = validateBootstrapValues(values);
  return `${zone}. ${v.dns.ttl} IN SOA ${v.clusterFqdn}. hostmaster.${zone}. 1 7200 1800 86400 ${v.dns.ttl}`;
}

/** ConfigMap keys of the zone files: db.<zone> → its text. */
export function renderZoneFiles(values: BootstrapValues | ResolvedBootstrapValues): Record<string, string> {
  const out: Record<string, string> = {};
  for (const zone of dnsZones(values)) out[`db.${zone}`] = `$ORIGIN ${zone}.\n${soaRecord(values, zone)}\n`;
  return out;
}

export const COREDNS_CONFIG_DIR = '/etc/coredns';

/**
 * The Corefile. CoreDNS expands {$HOST_IP} everywhere in it, so every node binds only its own IP
 * and answers the cluster FQDN with it. The hosts plugin answers our records; names it does not
 * know fall through to the file plugin, whose zone holds only the SOA, so they get NXDOMAIN.
 */
export function renderCorefile(values: BootstrapValues | ResolvedBootstrapValues): string {
  const v = validateBootstrapValues(values);
  const zones = dnsZones(v);
  const lines = [
    '# Rendered by ferry (charts/ferry-bootstrap). {$HOST_IP} is this node\'s IP, from the downward API.',
    `${zones.map((z) => `${z}:53`).join(' ')} {`,
    '    bind {$HOST_IP}',
    '    errors',
    `    health {$HOST_IP}:${v.dns.healthPort} {`,
    '        lameduck 5s',
    '    }',
    `    ready {$HOST_IP}:${v.dns.readyPort}`,
    '    loadbalance',
    '    # /dev/null: without a file the hosts plugin also reads /etc/hosts (127.0.1.1 <hostname> on Debian).',
    '    hosts /dev/null {',
    ...dnsRecords(v, '{$HOST_IP}').map((r) => `        ${r.ip} ${r.name}`),
    `        ttl ${v.dns.ttl}`,
    '        no_reverse',
    '        fallthrough',
    '    }',
    ...zones.map((z) => `    file ${COREDNS_CONFIG_DIR}/db.${z} ${z}`),
    '}',
  ];
  if (v.upstreamDns.length > 0) {
    lines.push('.:53 {', '    bind {$HOST_IP}', '    errors', `    cache ${v.dns.ttl}`, '    loop', `    forward . ${v.upstreamDns.join(' ')}`, '}');
  }
  return `${lines.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------------------
// LB.

export const HAPROXY_CONFIG_DIR = '/etc/ferry-lb';

/** haproxy.cfg: TCP balancing of <node IP>:<apiServerPort> across every server's API server. */
export function renderHaproxyCfg(values: BootstrapValues | ResolvedBootstrapValues): string {
  const v = validateBootstrapValues(values);
  const hc = v.lb.healthCheck;
  const lines = [
    '# Rendered by ferry (charts/ferry-bootstrap). ${HOST_IP} is this node\'s IP, from the downward API.',
    'global',
    '    log stdout format raw local0 info',
    `    maxconn ${v.lb.maxConnections}`,
    '',
    'defaults',
    '    mode tcp',
    '    log global',
    '    option dontlognull',
    '    option redispatch',
    '    retries 3',
    `    timeout connect ${v.lb.timeouts.connect}`,
    `    timeout client ${v.lb.timeouts.client}`,
    `    timeout server ${v.lb.timeouts.server}`,
    '',
    'frontend health',
    '    mode http',
    `    bind "\${HOST_IP}:${v.lb.statsPort}"`,
    '    no log',
    '    timeout client 10s',
    '    timeout http-request 5s',
    '    http-request return status 200 content-type text/plain string ok if { path /healthz }',
    '    http-request return status 503 content-type text/plain string "no API server is up" if { path /readyz } { nbsrv(apiservers) eq 0 }',
    '    http-request return status 200 content-type text/plain string ok if { path /readyz }',
    '    stats enable',
    '    stats uri /stats',
    '    stats refresh 10s',
    '',
    'frontend apiserver',
    '    option tcplog',
    `    bind "\${HOST_IP}:${v.apiServerPort}"`,
    '    default_backend apiservers',
    '',
    'backend apiservers',
    '    balance roundrobin',
    '    option tcp-check',
    `    default-server inter ${hc.interval} fastinter ${hc.fastInterval} downinter ${hc.downInterval} fall ${hc.fall} rise ${hc.rise} on-marked-down shutdown-sessions`,
    ...v.nodes.filter((n) => n.role === 'server').map((n) => `    server ${n.name} ${n.ip}:${v.apiServerPort} check`),
  ];
  return `${lines.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------------------
// Kubernetes objects.

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

function labels(component: 'dns' | 'lb'): Record<string, string> {
  return { 'app.kubernetes.io/name': BOOTSTRAP_CHART, 'app.kubernetes.io/component': component, 'app.kubernetes.io/part-of': 'ferry' };
}
function selector(component: 'dns' | 'lb'): Record<string, string> {
  return { 'app.kubernetes.io/name': BOOTSTRAP_CHART, 'app.kubernetes.io/component': component };
}

const hostIpEnv = [{ name: 'HOST_IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } }];

function daemonSet(
  name: string,
  component: 'dns' | 'lb',
  checksum: string,
  podSpec: Record<string, unknown>,
): KubernetesObject {
  return {
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: { name, namespace: BOOTSTRAP_NAMESPACE, labels: labels(component) },
    spec: {
      selector: { matchLabels: selector(component) },
      updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } },
      template: {
        metadata: { labels: labels(component), annotations: { 'ferry.dev/config-checksum': checksum } },
        spec: {
          hostNetwork: true,
          dnsPolicy: 'Default',
          priorityClassName: 'system-node-critical',
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          nodeSelector: { 'kubernetes.io/os': 'linux' },
          tolerations: [{ operator: 'Exists' }],
          securityContext: { seccompProfile: { type: 'RuntimeDefault' } },
          ...podSpec,
        },
      },
    },
  };
}

/** The checksum annotation: a hash over the ConfigMap's data, in key order. */
function configChecksum(data: Record<string, string>): string {
  return sha256(
    Object.keys(data)
      .sort()
      .map((k) => `${k}\n${data[k]}`)
      .join('\n'),
  );
}

/** Every object of the chart, in apply order: the namespace, the ConfigMaps, the DaemonSets. */
export function renderBootstrap(values: BootstrapValues | ResolvedBootstrapValues): KubernetesObject[] {
  const v = validateBootstrapValues(values);
  const dnsData: Record<string, string> = { Corefile: renderCorefile(v), ...renderZoneFiles(v) };
  const lbData: Record<string, string> = { 'haproxy.cfg': renderHaproxyCfg(v) };
  const configMap = (name: string, component: 'dns' | 'lb', data: Record<string, string>): KubernetesObject => ({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name, namespace: BOOTSTRAP_NAMESPACE, labels: labels(component) },
    data,
  });
  const namespace: KubernetesObject = {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: {
      name: BOOTSTRAP_NAMESPACE,
      labels: {
        'app.kubernetes.io/part-of': 'ferry',
        // hostNetwork pods are only allowed at the privileged Pod Security level.
        'pod-security.kubernetes.io/enforce': 'privileged',
        'pod-security.kubernetes.io/audit': 'privileged',
        'pod-security.kubernetes.io/warn': 'privileged',
      },
    },
  };
  const dns = daemonSet(DNS_NAME, 'dns', configChecksum(dnsData), {
    containers: [
      {
        name: 'coredns',
        image: v.images.coredns,
        imagePullPolicy: 'IfNotPresent',
        args: ['-conf', `${COREDNS_CONFIG_DIR}/Corefile`],
        env: hostIpEnv,
        ports: [
          { name: 'dns', containerPort: 53, protocol: 'UDP' },
          { name: 'dns-tcp', containerPort: 53, protocol: 'TCP' },
          { name: 'health', containerPort: v.dns.healthPort, protocol: 'TCP' },
          { name: 'ready', containerPort: v.dns.readyPort, protocol: 'TCP' },
        ],
        livenessProbe: { httpGet: { path: '/health', port: 'health' }, initialDelaySeconds: 10, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 5 },
        readinessProbe: { httpGet: { path: '/ready', port: 'ready' }, periodSeconds: 5, timeoutSeconds: 3 },
        resources: v.dns.resources,
        // The image runs as a non-root user whose binary carries cap_net_bind_service: keep only that.
        securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { add: ['NET_BIND_SERVICE'], drop: ['ALL'] } },
        volumeMounts: [{ name: 'config', mountPath: COREDNS_CONFIG_DIR, readOnly: true }],
      },
    ],
    volumes: [{ name: 'config', configMap: { name: DNS_NAME } }],
  });
  const lb = daemonSet(LB_NAME, 'lb', configChecksum(lbData), {
    affinity: {
      nodeAffinity: {
        requiredDuringSchedulingIgnoredDuringExecution: {
          nodeSelectorTerms: [{ matchExpressions: [{ key: CONTROL_PLANE_LABEL, operator: 'DoesNotExist' }] }],
        },
      },
    },
    containers: [
      {
        name: 'haproxy',
        image: v.images.haproxy,
        imagePullPolicy: 'IfNotPresent',
        command: ['haproxy', '-W', '-db', '-f', `${HAPROXY_CONFIG_DIR}/haproxy.cfg`],
        env: hostIpEnv,
        ports: [
          { name: 'apiserver', containerPort: v.apiServerPort, protocol: 'TCP' },
          { name: 'stats', containerPort: v.lb.statsPort, protocol: 'TCP' },
        ],
        livenessProbe: { httpGet: { path: '/healthz', port: 'stats' }, initialDelaySeconds: 5, periodSeconds: 10, timeoutSeconds: 3, failureThreshold: 3 },
        readinessProbe: { httpGet: { path: '/readyz', port: 'stats' }, periodSeconds: 5, timeoutSeconds: 3 },
        resources: v.lb.resources,
        // The official image's haproxy user (uid 99); ports above 1024 need no capability.
        securityContext: {
          allowPrivilegeEscalation: false,
          readOnlyRootFilesystem: true,
          runAsNonRoot: true,
          runAsUser: 99,
          runAsGroup: 99,
          capabilities: { drop: ['ALL'] },
        },
        volumeMounts: [{ name: 'config', mountPath: HAPROXY_CONFIG_DIR, readOnly: true }],
      },
    ],
    volumes: [{ name: 'config', configMap: { name: LB_NAME } }],
  });
  return [namespace, configMap(DNS_NAME, 'dns', dnsData), configMap(LB_NAME, 'lb', lbData), dns, lb];
}
