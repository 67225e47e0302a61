import { X509Certificate } from 'node:crypto';
import os from 'node:os';
import tls from 'node:tls';
import YAML from 'yaml';
import type { LeaseProvider, NodeRecord, SiteStateAccess } from '../cluster/state.js';
import { Codes, FerryError, InternalError, RemoteError, UsageError } from '../errors.js';
import { bundleManifest } from '../install/cluster.js';
import type { Host } from '../install/host.js';
import { ADMIN_CONF, API_PORT, CRI_SOCKET, PKI_DIR, REGISTRY_CERT, REGISTRY_CERT_PREFIX, REGISTRY_KEY, SITE_PORT } from '../install/paths.js';
import { issueServerCert } from '../sign/pki.js';
import { sleep } from '../util/limit.js';
import type { Reporter } from '../util/progress.js';
import { apiAnswers, type CertInfo, certsError, probeLocal } from './certs.js';
import { readPayload } from './node-op.js';
import { runOperation } from './operation.js';
import { addressOf, connectNode, ensureFerry, runNodeOp, type SshSettings } from './remote.js';
import { rollout } from './rollout.js';

/*
 * Renewing a server's certificates: kubeadm's (`kubeadm certs renew all`, then each control-plane
 * container restarted so it reads its new files, then a wait for etcd and the API), and the site
 * service's, re-issued from the site CA with the names it had and picked up by a rolling reload of
 * ferry-serve (SIGHUP: new workers, no refused connection). `ferry certs renew` runs this on every
 * server one at a time under the site's lease; the renewal timer runs it on its own server.
 */

/** The control plane's containers, restarted in this order (etcd first, so the API comes back on a healthy member). */
const CONTROL_PLANE = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler'];

export interface RenewPayload {
  name: string;
  ip: string;
  /** Test-only: issue certificates valid this many hours (kubeadm's certificateValidityPeriod, the site service's days). */
  validityHours?: number;
}

export const NODE_CERTS_RENEW_SCHEMA = {
  $id: 'ferry.dev/node-certs-renew-payload',
  type: 'object',
  additionalProperties: false,
  required: ['name', 'ip'],
  properties: { name: { type: 'string', minLength: 1 }, ip: { type: 'string', pattern: '^\\d{1,3}(\\.\\d{1,3}){3}$' }, validityHours: { type: 'integer', minimum: 24 } },
};
export const readRenewPayload = (text: string) => readPayload<RenewPayload>(text, NODE_CERTS_RENEW_SCHEMA, 'node-certs-renew');

export interface RenewResult {
  node: string;
  /** kubeadm and site-service certificates before and after, by name. */
  before: CertInfo[];
  after: CertInfo[];
  kubeletRotation?: boolean;
  seconds: number;
}

const crictl = (host: Host, args: string[]) => host.run('crictl', ['--runtime-endpoint', CRI_SOCKET, ...args], { allowFail: true, timeoutMs: 30_000 });

async function runningIds(host: Host, name: string): Promise<string[]> {
  const r = await crictl(host, ['ps', '-q', '--state', 'running', '--name', `^${name}$`]);
  return r.stdout.split('\n').map((l) => l.trim()).filter(Boolean);
}

/** Stops one control-plane container and waits until kubelet runs a new one (bounded). */
async function restartContainer(host: Host, name: string, log: (l: string) => void, timeoutMs = 240_000): Promise<void> {
  const old = await runningIds(host, name);
  if (!old.length) return log(`${name}: not running here, nothing to restart`);
  for (const id of old) await crictl(host, ['stop', '--timeout', '30', id]);
  const end = Date.now() + timeoutMs;
  for (;;) {
    const now = await runningIds(host, name);
    if (now.some((id) => !old.includes(id))) return log(`${name}: restarted`);
    if (Date.now() > end) throw certsError(`${name} did not come back within ${timeoutMs / 1000}s after its restart`, 'Look at crictl ps -a and journalctl -u kubelet on this server, then run ferry certs renew again.');
    await sleep(2000);
  }
}

async function waitFor(what: string, ok: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > end) throw certsError(`${what} did not answer within ${timeoutMs / 1000}s after the restart`, 'Look at crictl ps -a and journalctl -u kubelet on this server, then run ferry certs renew again.');
    await sleep(2000);
  }
}

/** The certificate a TLS server presents (undefined when it does not answer). */
export function presentedCert(host: string, port: number, timeoutMs = 5000, servername?: string): Promise<X509Certificate | undefined> {
  return new Promise((resolve) => {
    const s = tls.connect({ host, port, rejectUnauthorized: false, ...(servername ? { servername } : {}), timeout: timeoutMs }, () => {
      const raw = s.getPeerX509Certificate();
      s.destroy();
      resolve(raw);
    });
    s.on('error', () => resolve(undefined));
    s.on('timeout', () => {
      s.destroy();
      resolve(undefined);
    });
  });
}

/** ClusterConfiguration from the cluster with a certificate validity (the test knob), for kubeadm --config. */
async function validityConfig(host: Host, p: RenewPayload, hours: number): Promise<string> {
  const r = await host.run('kubectl', ['--kubeconfig', host.p(ADMIN_CONF), '--request-timeout=15s', '-n', 'kube-system', 'get', 'configmap', 'kubeadm-config', '-o', 'jsonpath={.data.ClusterConfiguration}']);
  const cc = YAML.parse(r.stdout) as Record<string, unknown>;
  cc.certificateValidityPeriod = `${hours}h0m0s`;
  // This node's own part too: without it kubeadm guesses the address from a default route the node may not have.
  const init = { apiVersion: cc.apiVersion, kind: 'InitConfiguration', localAPIEndpoint: { advertiseAddress: p.ip, bindPort: API_PORT }, nodeRegistration: { name: p.name, criSocket: CRI_SOCKET } };
  const file = `${PKI_DIR}/renew-cluster-config.yaml`;
  await host.write(file, `${YAML.stringify(init)}---\n${YAML.stringify(cc)}`, 0o600);
  return host.p(file);
}

/** Re-issues the site service's certificate with the names and IPs it had, whole (key and certificate renamed in together), then reloads the service. */
async function renewSiteService(host: Host, p: RenewPayload, log: (l: string) => void): Promise<void> {
  const pem = await host.read(REGISTRY_CERT);
  if (!pem) return log('no site service on this node');
  const old = new X509Certificate(pem);
  const sans = (old.subjectAltName ?? '').split(',').map((s) => s.trim());
  const names = sans.filter((s) => s.startsWith('DNS:')).map((s) => s.slice(4));
  const ips = sans.filter((s) => s.startsWith('IP Address:')).map((s) => s.slice(11));
  const tmp = `${REGISTRY_CERT_PREFIX}.renew`;
  const days = p.validityHours ? Math.max(1, Math.floor(p.validityHours / 24)) : undefined;
  await issueServerCert({ caDir: host.p(PKI_DIR), names, ips, outPrefix: host.p(tmp), ...(days ? { days } : {}) });
  const fs = await import('node:fs/promises');
  await fs.rename(host.p(`${tmp}.key`), host.p(REGISTRY_KEY));
  await fs.rename(host.p(`${tmp}.crt`), host.p(REGISTRY_CERT));
  const fresh = new X509Certificate((await host.read(REGISTRY_CERT))!);
  // SIGHUP to the primary: new workers load the new certificate, the old ones finish their requests.
  await host.run('systemctl', ['reload', 'ferry-serve.service']);
  await waitFor('the site service with its new certificate', async () => (await presentedCert(p.ip, SITE_PORT))?.validTo === fresh.validTo, 60_000);
  log(`site service: new certificate until ${fresh.validTo}, served`);
}

/** Renews this server's certificates (kubeadm's and the site service's) and waits for its control plane. */
export async function renewLocal(host: Host, p: RenewPayload, log: (l: string) => void): Promise<RenewResult> {
  const t0 = Date.now();
  const renewable = (c: CertInfo) => c.kind === 'site-service' || (c.kind === 'kubeadm' && !/(^|\/)ca$|-ca$/.test(c.name));
  const before = await probeLocal(host, p.name);
  const args = ['certs', 'renew', 'all'];
  if (p.validityHours) args.push('--config', await validityConfig(host, p, p.validityHours));
  log(`kubeadm ${args.join(' ')}`);
  try {
    await host.run('kubeadm', args, { timeoutMs: 120_000 });
  } finally {
    await host.rm(`${PKI_DIR}/renew-cluster-config.yaml`);
  }
  for (const c of CONTROL_PLANE) {
    await restartContainer(host, c, log);
    if (c === 'kube-apiserver') await waitFor('the API server', () => apiAnswers(host), 300_000);
  }
  await renewSiteService(host, p, log);
  const after = await probeLocal(host, p.name);
  if (!after.kubeletRotation) log('warning: kubelet client certificate rotation is off (rotateCertificates in /var/lib/kubelet/config.yaml)');
  return { node: p.name, before: before.certs.filter(renewable), after: after.certs.filter(renewable), kubeletRotation: after.kubeletRotation, seconds: (Date.now() - t0) / 1000 };
}

/** A Kubernetes Event on the node, so the renewal shows in `kubectl describe node` (best effort). */
export async function nodeEvent(host: Host, node: string, reason: string, message: string): Promise<boolean> {
  const at = new Date().toISOString();
  // With the Node's uid, as kubelet's own events carry it: kubectl describe node selects by it.
  const uid = (await host.run('kubectl', ['--kubeconfig', host.p(ADMIN_CONF), '--request-timeout=15s', 'get', 'node', node, '-o', 'jsonpath={.metadata.uid}'], { allowFail: true, timeoutMs: 30_000 })).stdout.trim();
  const ev = { apiVersion: 'v1', kind: 'Event', metadata: { generateName: `${node}.ferry-`, namespace: 'default' }, involvedObject: { kind: 'Node', name: node, ...(uid ? { uid } : {}) }, reason, message, type: 'Normal', source: { component: 'ferry', host: node }, firstTimestamp: at, lastTimestamp: at, count: 1 };
  const r = await host.run('kubectl', ['--kubeconfig', host.p(ADMIN_CONF), '--request-timeout=15s', 'create', '-f', '-'], { input: JSON.stringify(ev), allowFail: true, timeoutMs: 30_000 });
  return r.code === 0;
}

export interface RenewAllOptions {
  host: Host;
  site: SiteStateAccess;
  lease: LeaseProvider;
  reporter: Reporter;
  ssh?: SshSettings;
  validityHours?: number;
  wait?: boolean;
  holder?: string;
  /** For tests: stop as if ferry died before this journal key. */
  failAt?: string;
}

/** The server this command runs on: the one whose IP is on this machine. */
export function selfOf(nodes: NodeRecord[]): NodeRecord | undefined {
  const mine = new Set(Object.values(os.networkInterfaces()).flatMap((l) => (l ?? []).map((a) => a.address)));
  return nodes.find((n) => mine.has(n.ip));
}

/** `ferry certs renew`: every server, one at a time, under the lease, with a journal (`<server>/renew`). */
export async function renewAll(o: RenewAllOptions): Promise<RenewResult[]> {
  const state = await o.site.read();
  if (!state) throw new UsageError(Codes.stateMissing, 'this site has no state', { hint: 'Run ferry certs renew on a server where ferry install finished.' });
  const servers = state.nodes.filter((n) => n.role === 'server');
  const self = selfOf(state.nodes);
  const manifest = await bundleManifest(o.host);
  const holder = o.holder ?? `${os.hostname()}/${process.pid}`;
  const args = { servers: servers.map((s) => s.name), ...(o.validityHours ? { validityHours: o.validityHours } : {}) };
  return runOperation({ site: o.site, lease: o.lease, kind: 'certs-renew', args, holder, wait: o.wait, onWait: (h) => o.reporter.info(`waiting for the operation of ${h} to end`) }, async (journal) => {
    const rows = await rollout(servers, { order: 'serial', onFailure: 'stop' }, async (s) => {
      const key = `${s.name}/renew`;
      const say = (l: string) => o.reporter.info(`${s.name}  ${l}`);
      if (journal.has(key)) {
        say('renewed in an earlier run');
        return { node: s.name, before: [], after: [], seconds: 0 } as RenewResult;
      }
      if (o.failAt === key) throw new InternalError(Codes.internal, `stopped before ${key}, as the test asked`);
      const payload: RenewPayload = { name: s.name, ip: s.ip, ...(o.validityHours ? { validityHours: o.validityHours } : {}) };
      let r: RenewResult;
      if (self?.name === s.name) {
        r = await renewLocal(o.host, payload, say);
      } else {
        const node = await connectNode(addressOf(s), { ssh: { ...state.answers.ssh, ...o.ssh }, confirmHostKey: async () => false });
        try {
          if (manifest) await ensureFerry(node, o.host, manifest);
          say('renewing over SSH');
          const x = await runNodeOp(node, 'node-certs-renew', { args: ['--json'], payload, onLine: (l) => l.trim() && say(l.trim()) });
          if (x.code !== 0) throw new RemoteError(Codes.certsRenewFailed, `${s.name}: ${x.stderr.trim().split('\n').filter(Boolean).slice(-2).join(' / ') || `exit ${x.code}`}`, { hint: `See the log above; fix the cause and run ferry certs renew again: the servers that finished are skipped.` });
          r = JSON.parse(x.stdout) as RenewResult;
        } finally {
          node.close();
        }
      }
      await nodeEvent(o.host, s.name, 'CertificatesRenewed', `ferry certs renew: kubeadm's and the site service's certificates renewed on ${s.name}`);
      await journal.record(key);
      return r;
    });
    return rows.map((r) => {
      if (r.status === 'ok') return r.value;
      if (r.status === 'failed') throw r.error instanceof FerryError ? r.error : new RemoteError(Codes.certsRenewFailed, `${r.node.name}: ${(r.error as Error).message}`, { hint: 'Fix the cause and run ferry certs renew again.' });
      return { node: r.node.name, before: [], after: [], seconds: 0 };
    });
  });
}

export interface RenewOwnResult {
  node: string;
  renewed: boolean;
  reason?: string;
  result?: RenewResult;
  /** A Kubernetes Event was left on the node. */
  event?: boolean;
}

/**
 * This server alone (`ferry certs renew --local`, what ferry-certs.timer runs): with `underDays`, only
 * when a renewable certificate has fewer days left. Under the site's lease when the API answers; when
 * it does not (certificates expired while the site was off), the renewal is what brings it back.
 */
export async function renewOwn(o: { host: Host; reporter: Reporter; underDays?: number; validityHours?: number; wait?: boolean }): Promise<RenewOwnResult> {
  const { openSiteState } = await import('../cluster/site.js');
  const r = await openSiteState({ kubeconfig: o.host.p(ADMIN_CONF), root: o.host.root }).readFrom();
  const me = r ? selfOf(r.state.nodes) : undefined;
  const name = me?.name ?? os.hostname();
  const ip = me?.ip ?? (await presentedIp());
  const probe = await probeLocal(o.host, name);
  const renewable = probe.certs.filter((c) => c.kind === 'site-service' || (c.kind === 'kubeadm' && !/(^|\/)ca$|-ca$/.test(c.name))).sort((a, b) => a.daysLeft - b.daysLeft);
  const soonest = renewable[0];
  if (o.underDays !== undefined && (!soonest || soonest.daysLeft >= o.underDays)) {
    const reason = soonest ? `the soonest, ${soonest.name}, has ${soonest.daysLeft} days left, not under ${o.underDays}` : 'no certificates found';
    o.reporter.info(`${name}: ${reason}`);
    return { node: name, renewed: false, reason };
  }
  o.reporter.info(`${name}: renewing${soonest ? ` (the soonest, ${soonest.name}, has ${soonest.daysLeft} days left)` : ''}`);
  let lease: { release(): Promise<void> } | undefined;
  if (await apiAnswers(o.host)) {
    const { kubeLease } = await import('../cluster/lease.js');
    lease = await (await kubeLease({ kubeconfig: o.host.p(ADMIN_CONF) })).acquire(`${name}/${process.pid}`, { wait: o.wait });
  }
  try {
    const result = await renewLocal(o.host, { name, ip, ...(o.validityHours ? { validityHours: o.validityHours } : {}) }, (l) => o.reporter.info(`${name}: ${l}`));
    const event = await nodeEvent(o.host, name, 'CertificatesRenewed', `ferry-certs.timer: certificates renewed on ${name}${soonest ? ` (${soonest.name} had ${soonest.daysLeft} days left)` : ''}`);
    o.reporter.info(`${name}: renewed${event ? '; event left on the node' : ''}`);
    return { node: name, renewed: true, result, event };
  } finally {
    await lease?.release();
  }
}

/** This machine's first non-loopback IPv4 address (a server the state does not list). */
async function presentedIp(): Promise<string> {
  return Object.values(os.networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal)?.address ?? '127.0.0.1';
}
