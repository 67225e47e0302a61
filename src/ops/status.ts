import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import type { NodeRecord, SiteState } from '../cluster/state.js';
import type { Host } from '../install/host.js';
import { ADMIN_CONF, SITE_CA, SITE_PORT } from '../install/paths.js';
import { CERT_WARN_DAYS, type CertInfo, type NodeProbe, parseProbe, probeLocal, probeScript } from './certs.js';
import { selfOf } from './certs-renew.js';
import { endpointStatus, etcdTls, memberIp, memberList, quorumOf, type EtcdMember } from './etcd.js';
import { addressOf, connectNode, type SshSettings } from './remote.js';

/*
 * `ferry status`: one answer for "is my site healthy?", gathered from this server with every probe
 * bounded, so that it answers when the API, etcd or a server does not. The verdict is an exit code
 * of its own, apart from the error codes: healthy, degraded, down.
 */

/** The exit codes of `ferry status` (and `ferry certs check`), distinct from the error codes 1–6 and 130. */
export const STATUS_EXIT = { healthy: 0, degraded: 10, down: 11 } as const;
export type Verdict = keyof typeof STATUS_EXIT;

export interface NodeStatus {
  name: string;
  role: string;
  ip: string;
  arch?: string;
  kubernetesVersion?: string;
  ready?: boolean;
  cordoned?: boolean;
  /** The cluster has a Node of this name. */
  registered: boolean;
}

export interface EtcdMemberStatus {
  name: string;
  id: string;
  ip?: string;
  healthy: boolean;
  leader: boolean;
  dbSize?: number;
}

export interface ServerStatus {
  name: string;
  ip: string;
  siteService: { up: boolean; repositories?: number };
  /** Reached for its certificates and disk (here, or over SSH). */
  probed: boolean;
  kubeletRotation?: boolean;
  disk: NodeProbe['disk'];
}

export interface StatusReport {
  verdict: Verdict;
  exitCode: number;
  /** Why it is not healthy, one line each (empty when healthy). */
  reasons: string[];
  warnings: string[];
  checkedAt: string;
  source: 'cluster' | 'mirror' | 'none';
  api: { answering: boolean };
  nodes: NodeStatus[];
  etcd: { members: EtcdMemberStatus[]; quorum: boolean; leader?: string; answered: boolean };
  servers: ServerStatus[];
  dns: { node: string; ip: string; answer: string[]; ok: boolean }[];
  lb: { agent: string; backends: { name: string; up: boolean }[]; answered: boolean }[];
  bundles: { id: string; fingerprint: string; current: boolean }[];
  certs: CertInfo[];
}

type Partial0 = Omit<StatusReport, 'verdict' | 'exitCode' | 'reasons' | 'warnings'>;

/** The verdict of a gathered status (pure): down without the API or etcd's quorum, degraded on anything else amiss. */
export function classify(r: Partial0): Pick<StatusReport, 'verdict' | 'exitCode' | 'reasons' | 'warnings'> {
  const down: string[] = [];
  const degraded: string[] = [];
  const warnings: string[] = [];
  if (!r.api.answering) down.push('the API server does not answer');
  if (r.etcd.members.length && !r.etcd.quorum) down.push(`etcd has no quorum: ${r.etcd.members.filter((m) => m.healthy).length} of ${r.etcd.members.length} members answer`);
  if (!r.etcd.answered && r.api.answering) degraded.push('no etcd member answered');
  // Without the API a node's readiness is unknown: the API's absence is the reason.
  for (const n of r.nodes) {
    if (!n.registered) degraded.push(`${n.name} is in the site state but not in the cluster`);
    else if (n.ready === false) degraded.push(`${n.name} is not Ready`);
  }
  for (const m of r.etcd.members) if (!m.healthy) degraded.push(`etcd member ${m.name} does not answer`);
  for (const s of r.servers) {
    if (!s.siteService.up) degraded.push(`${s.name}: the site service does not answer`);
    if (!s.probed) degraded.push(`${s.name}: unreachable for its certificates and disk`);
    if (s.kubeletRotation === false) warnings.push(`${s.name}: kubelet client certificate rotation is off`);
  }
  for (const d of r.dns) if (!d.ok) degraded.push(`${d.node}: the site DNS answers ${d.answer.join(',') || 'nothing'} for the cluster FQDN, not ${d.ip}`);
  for (const l of r.lb) {
    if (!l.answered) degraded.push(`${l.agent}: its LB does not answer`);
    for (const b of l.backends) if (!b.up) degraded.push(`${l.agent}: LB backend ${b.name} is down`);
  }
  for (const c of r.certs) if (c.daysLeft < CERT_WARN_DAYS) degraded.push(`${c.node}: certificate ${c.name} expires in ${c.daysLeft} days (${c.notAfter})`);
  const verdict: Verdict = down.length ? 'down' : degraded.length ? 'degraded' : 'healthy';
  return { verdict, exitCode: STATUS_EXIT[verdict], reasons: [...down, ...degraded], warnings };
}

/** Resolves after at most ms with `fallback`, whatever p does. */
export function bounded<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(fallback), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      () => {
        clearTimeout(t);
        resolve(fallback);
      },
    );
  });
}

function get(url: string, o: { ca?: Buffer; timeoutMs: number }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith('https:') ? https : http;
    const req = mod.get(url, { timeout: o.timeoutMs, ...(o.ca ? { ca: o.ca } : {}) }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => {
        if (body.length < 1_000_000) body += d.toString('utf8');
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/** haproxy's stats CSV: the api backend's servers and whether each is UP (pure). */
export function parseHaproxyCsv(csv: string): { name: string; up: boolean }[] {
  const lines = csv.split('\n').filter((l) => l && !l.startsWith('#'));
  return lines
    .map((l) => l.split(','))
    .filter((f) => f[1] && f[1] !== 'FRONTEND' && f[1] !== 'BACKEND' && f[17] !== undefined)
    .map((f) => ({ name: f[1]!, up: /^UP/.test(f[17]!) }));
}

interface KubeNodeList {
  items: { metadata: { name: string }; spec?: { unschedulable?: boolean }; status?: { conditions?: { type: string; status: string }[]; nodeInfo?: { architecture?: string; kubeletVersion?: string } } }[];
}

export interface GatherOptions {
  host: Host;
  /** Reads the state (cluster, else the mirror). */
  readState: () => Promise<{ state: SiteState; source: 'cluster' | 'mirror' } | undefined>;
  ssh?: SshSettings;
  /** Each probe's bound. */
  timeoutMs?: number;
  lbStatsPort?: number;
}

async function kubectlJson<T>(host: Host, args: string[], timeoutS: number): Promise<T | undefined> {
  const r = await host.run('kubectl', ['--kubeconfig', host.p(ADMIN_CONF), `--request-timeout=${timeoutS}s`, ...args, '-o', 'json'], { allowFail: true, timeoutMs: (timeoutS + 3) * 1000 }).catch(() => undefined);
  if (!r || r.code !== 0) return undefined;
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    return undefined;
  }
}

/** A node's certificates and disk: here, or over SSH (bounded; undefined when it does not answer). */
export async function probeNode(o: Pick<GatherOptions, 'host' | 'ssh'>, n: NodeRecord, self: string | undefined, ms: number): Promise<NodeProbe | undefined> {
  if (n.name === self) return bounded(probeLocal(o.host, n.name), ms, undefined);
  let closed = false;
  const node = connectNode(addressOf(n), { ssh: o.ssh, confirmHostKey: async () => false });
  const work = (async () => {
    const c = await node;
    try {
      const r = await c.session.exec(probeScript());
      return parseProbe(n.name, r.stdout);
    } finally {
      closed = true;
      c.close();
    }
  })();
  const out = await bounded(work, ms, undefined);
  // A connection that outlives its bound is closed when it arrives.
  if (!out && !closed) node.then((c) => c.close(), () => {});
  return out;
}

/** Gathers everything `ferry status` shows, every probe at once and bounded. */
export async function gatherStatus(o: GatherOptions): Promise<StatusReport> {
  const ms = o.timeoutMs ?? 10_000;
  const s = Math.max(2, Math.floor(ms / 1000) - 1);
  const [st, nodeList] = await Promise.all([bounded(o.readState(), ms + 12_000, undefined), kubectlJson<KubeNodeList>(o.host, ['get', 'nodes'], s)]);
  const state = st?.state;
  const known = state?.nodes ?? [];
  const servers = known.filter((n) => n.role === 'server');
  const agents = known.filter((n) => n.role === 'agent');
  const self = selfOf(known)?.name;
  const ca = await o.host.read(SITE_CA).then((t) => (t ? Buffer.from(t) : undefined));
  const etls = await etcdTls(o.host);
  const fqdn = state?.answers.clusterFqdn;

  const etcdP = (async () => {
    if (!etls) return { members: [] as EtcdMemberStatus[], quorum: false, answered: false };
    let members: EtcdMember[] | undefined;
    for (const sv of [...servers].sort((a, b) => (a.name === self ? -1 : b.name === self ? 1 : 0))) {
      members = await bounded(memberList(etls, sv.ip, ms), ms, undefined);
      if (members) break;
    }
    if (!members) return { members: servers.map((sv) => ({ name: sv.name, id: '', ip: sv.ip, healthy: false, leader: false })), quorum: false, answered: false };
    const stats = await Promise.all(members.map((m) => (memberIp(m) ? bounded(endpointStatus(etls, memberIp(m)!, ms), ms, undefined) : Promise.resolve(undefined))));
    const leaders = stats.filter((x) => x && x.leader !== '0').map((x) => x!.leader);
    const leader = leaders[0];
    const rows = members.map((m, i) => ({ name: m.name || m.id, id: m.id, ip: memberIp(m), healthy: !!stats[i] && stats[i]!.leader !== '0', leader: !!leader && m.id === leader, ...(stats[i] ? { dbSize: stats[i]!.dbSize } : {}) }));
    const voters = members.filter((m) => !m.isLearner).length;
    return { members: rows, quorum: rows.filter((r) => r.healthy).length >= quorumOf(voters), leader: rows.find((r) => r.leader)?.name, answered: true };
  })();

  const serversP = Promise.all(
    servers.map(async (sv) => {
      const [health, catalog, probe] = await Promise.all([
        bounded(get(`https://${sv.ip}:${SITE_PORT}/healthz`, { ca, timeoutMs: ms }), ms, undefined),
        bounded(get(`https://${sv.ip}:${SITE_PORT}/v2/_catalog?n=10000`, { ca, timeoutMs: ms }), ms, undefined),
        probeNode({ host: o.host, ssh: { ...state?.answers.ssh, ...o.ssh } }, sv, self, ms + 20_000),
      ]);
      let repositories: number | undefined;
      try {
        repositories = catalog?.status === 200 ? (JSON.parse(catalog.body) as { repositories?: string[] }).repositories?.length : undefined;
      } catch {
        repositories = undefined;
      }
      return { status: { name: sv.name, ip: sv.ip, siteService: { up: health?.status === 200, ...(repositories !== undefined ? { repositories } : {}) }, probed: !!probe, ...(probe?.kubeletRotation !== undefined ? { kubeletRotation: probe.kubeletRotation } : {}), disk: probe?.disk ?? {} } as ServerStatus, certs: probe?.certs ?? [] };
    }),
  );

  const dnsP = Promise.all(
    known.map(async (n) => {
      if (!fqdn) return { node: n.name, ip: n.ip, answer: [], ok: false };
      const r = new dns.promises.Resolver({ timeout: Math.min(ms, 3000), tries: 1 });
      r.setServers([n.ip]);
      const answer = (await bounded(r.resolve4(fqdn), ms, [] as string[])).sort();
      return { node: n.name, ip: n.ip, answer, ok: answer.length === 1 && answer[0] === n.ip };
    }),
  );

  const lbP = Promise.all(
    agents.map(async (a) => {
      const r = await bounded(get(`http://${a.ip}:${o.lbStatsPort ?? 8404}/stats;csv`, { timeoutMs: ms }), ms, undefined);
      const backends = r?.status === 200 ? parseHaproxyCsv(r.body) : [];
      return { agent: a.name, backends, answered: r?.status === 200 };
    }),
  );

  const [etcd, srv, dnsRows, lb] = await Promise.all([etcdP, serversP, dnsP, lbP]);
  const byName = new Map((nodeList?.items ?? []).map((i) => [i.metadata.name, i]));
  const nodes: NodeStatus[] = known.map((n) => {
    const k = byName.get(n.name);
    return {
      name: n.name,
      role: n.role,
      ip: n.ip,
      registered: nodeList ? !!k : true,
      ...(k ? { ready: k.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True', cordoned: !!k.spec?.unschedulable, arch: k.status?.nodeInfo?.architecture, kubernetesVersion: k.status?.nodeInfo?.kubeletVersion } : {}),
    };
  });
  const partial: Partial0 = {
    checkedAt: new Date().toISOString(),
    source: st?.source ?? 'none',
    api: { answering: !!nodeList },
    nodes,
    etcd,
    servers: srv.map((x) => x.status),
    dns: dnsRows,
    lb,
    bundles: (state?.bundles ?? []).map((b) => ({ id: b.id, fingerprint: b.fingerprint, current: b.id === state?.current })),
    certs: srv.flatMap((x) => x.certs),
  };
  return { ...classify(partial), ...partial };
}

const gib = (n?: number) => (n === undefined ? '-' : `${(n / 2 ** 30).toFixed(1)}G`);

function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  return [head, ...rows].map((r) => r.map((c, i) => (c ?? '').padEnd(w[i]!)).join('  ').trimEnd()).join('\n');
}

/** One screen. */
export function formatStatus(r: StatusReport): string {
  const out: string[] = [`site: ${r.verdict.toUpperCase()} (exit ${r.exitCode})${r.source === 'mirror' ? ", nodes from this server's state mirror (the API does not answer)" : ''}`];
  for (const x of r.reasons) out.push(`  - ${x}`);
  for (const w of r.warnings) out.push(`  warning: ${w}`);
  out.push('', table(['NODE', 'ROLE', 'IP', 'ARCH', 'KUBERNETES', 'READY', 'CORDONED', 'DNS'], r.nodes.map((n) => [n.name, n.role, n.ip, n.arch ?? '-', n.kubernetesVersion ?? '-', !n.registered ? 'GONE' : n.ready === undefined ? '?' : n.ready ? 'yes' : 'NO', n.cordoned ? 'yes' : 'no', r.dns.find((d) => d.node === n.name)?.ok ? 'ok' : 'WRONG'])));
  out.push('', table(['ETCD MEMBER', 'IP', 'HEALTHY', 'LEADER', 'DB SIZE'], r.etcd.members.map((m) => [m.name, m.ip ?? '-', m.healthy ? 'yes' : 'NO', m.leader ? '*' : '', m.dbSize === undefined ? '-' : `${(m.dbSize / 2 ** 20).toFixed(1)}M`])));
  out.push('', table(['SERVER', 'SITE SERVICE', 'REPOSITORIES', 'STORE', 'CONTAINERD', 'ETCD', 'FREE'], r.servers.map((s) => [s.name, s.siteService.up ? 'up' : 'DOWN', String(s.siteService.repositories ?? '-'), gib(s.disk.store), gib(s.disk.containerd), gib(s.disk.etcd), gib(s.disk.free)])));
  if (r.lb.length) out.push('', table(['AGENT', 'LB BACKENDS UP'], r.lb.map((l) => [l.agent, l.answered ? `${l.backends.filter((b) => b.up).length}/${l.backends.length} ${l.backends.filter((b) => !b.up).map((b) => `(${b.name} DOWN)`).join(' ')}`.trim() : 'NO ANSWER'])));
  out.push('', table(['BUNDLE', 'SIGNER', 'CURRENT'], r.bundles.map((b) => [b.id, b.fingerprint, b.current ? '*' : ''])));
  const soon = [...r.certs].sort((a, b) => a.daysLeft - b.daysLeft)[0];
  out.push('', soon ? `certificates: ${r.certs.length} checked; the soonest is ${soon.node} ${soon.name}, ${soon.daysLeft} days left (ferry certs check lists them all)` : 'certificates: none checked');
  return out.join('\n');
}
