import { spawn } from 'node:child_process';
import { promises as fs, statfsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { partFiles, QUIET_DEPRECATIONS, type BundleManifest, type VersionsEntry } from '../bundle/format.js';
import { SiteStore } from '../bundle/store.js';
import { copyEntry, verifyBundle, type EntryPlace, type VerifyOptions } from '../bundle/verify.js';
import type { Journal } from '../cluster/journal.js';
import type { LeaseProvider, NodeRecord, SiteState, SiteStateAccess } from '../cluster/state.js';
import { decideUpgrade, upgradeInputs, type OfferedBundle, type UpgradeDecision } from '../cluster/upgrade-policy.js';
import { Codes, FerryError, RemoteError, UsageError } from '../errors.js';
import type { InstallAnswers } from '../install/answers.js';
import { applyBootstrap, bootstrapValues, bundleRecord, chartBlob } from '../install/cluster.js';
import type { Host } from '../install/host.js';
import type { NodeUpgradePayload } from '../install/node-upgrade.js';
import { ADMIN_CONF, BACKUP_DIR, FERRY_DIR, INCOMING_DIR, RUNTIME_NODE, STORE_DIR } from '../install/paths.js';
import { writeLauncher } from '../install/launcher.js';
import { sha256 } from '../util/digest.js';
import type { Reporter } from '../util/progress.js';
import { selfOf } from './certs-renew.js';
import { endpointStatus, etcdTls, memberIp, memberList, snapshotTo } from './etcd.js';
import { runOperation } from './operation.js';
import { addressOf, connectNode, ensureFerry, runNodeOp, uploadFiles, type RemoteNode, type SshSettings } from './remote.js';
import { rollout } from './rollout.js';

/*
 * `ferry upgrade BUNDLE` from any server, on the operation layer (lease + journal). One plan, printed
 * by --dry-run and run for real: the refusals (upgrade-policy.ts), a preflight across the site, a
 * pre-upgrade etcd snapshot on every server, the new bundle staged in every server's store beside
 * the old one, then node by node (this server first with kubeadm upgrade apply, the other servers one
 * at a time, the agents in batches): drain, `ferry node-upgrade` on the node, Ready at the new
 * version, uncordon. Then the CNI and ferry's bootstrap chart from the new bundle, and the site state
 * names the new bundle. Journal keys: site/snapshot, <server>/stage, <node>/upgrade, site/addons,
 * site/finish. A re-run after a failure or a kill resumes; an upgraded node is never upgraded again.
 */

export interface UpgradeOptions {
  host: Host;
  site: SiteStateAccess;
  lease: LeaseProvider;
  /** The bundle file (or its parts.json). */
  bundle: string;
  verify: VerifyOptions;
  reporter: Reporter;
  ssh?: SshSettings;
  maxUnavailable?: number;
  wait?: boolean;
  holder?: string;
  confirmHostKey?: (host: string, fingerprint: string) => Promise<boolean>;
  /** Seconds a drain may take before the node's upgrade fails (default 300). */
  drainTimeoutS?: number;
  /** How long a node may take to be Ready at the new version (default 10 min). */
  readyTimeoutMs?: number;
  rolloutTimeoutMs?: number;
  /** The ferry that runs node-upgrade on this server (default: this process's own). */
  selfFerry?: { node: string; mjs: string };
}

export interface PreflightCheck {
  name: string;
  ok: boolean;
  detail: string;
}

export interface UpgradePlan {
  offered: OfferedBundle & { bytes: number; delta?: string };
  decision: UpgradeDecision;
  self: string;
  preflight: PreflightCheck[];
  steps: { key: string; what: string }[];
}

export interface NodeUpgradeRow {
  name: string;
  role: string;
  ok: boolean;
  seconds: number;
  skipped?: boolean;
  error?: { code: string; message: string; hint?: string };
}

export interface UpgradeResult {
  action: 'none' | 'upgrade';
  reason?: string;
  from?: string;
  to?: string;
  kubernetes?: { from: string; to: string };
  snapshot?: string;
  nodes: NodeUpgradeRow[];
  seconds: number;
}

const kubectlOn = (host: Host, args: string[], timeoutS = 30) => host.run('kubectl', ['--kubeconfig', host.p(ADMIN_CONF), `--request-timeout=${timeoutS}s`, ...args], { allowFail: true, timeoutMs: (timeoutS + 600) * 1000 });

/** What an API server that is restarting answers for a moment (not a refusal to act on). */
const TRANSIENT_API = /Forbidden|connection refused|i\/o timeout|EOF|ServiceUnavailable|TLS handshake timeout|the server is currently unable/i;

interface NodeView {
  name: string;
  ready: boolean;
  unschedulable: boolean;
  kubelet: string;
}

async function nodeViews(host: Host): Promise<NodeView[]> {
  const r = await kubectlOn(host, ['get', 'nodes', '-o', 'json']);
  if (r.code !== 0) throw new RemoteError(Codes.kubeUnreachable, `kubectl get nodes: ${r.stderr.trim().split('\n').pop()}`, { hint: 'Check the API on this server (ferry status).' });
  const l = JSON.parse(r.stdout) as { items: { metadata: { name: string }; spec?: { unschedulable?: boolean }; status?: { conditions?: { type: string; status: string }[]; nodeInfo?: { kubeletVersion?: string } } }[] };
  return l.items.map((n) => ({ name: n.metadata.name, ready: n.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True', unschedulable: !!n.spec?.unschedulable, kubelet: n.status?.nodeInfo?.kubeletVersion ?? '' }));
}

/** The offered bundle's signed table: who signed it and what it is, without reading its content. */
async function offer(o: Pick<UpgradeOptions, 'bundle' | 'verify'>): Promise<{ offered: UpgradePlan['offered']; manifest: BundleManifest }> {
  // Quietly: the plan is made more than once (printed, confirmed, then run), and says who signed.
  const t = await verifyBundle(o.bundle, { ...o.verify, reporter: undefined, tableOnly: true });
  const m = t.manifest;
  let bytes = 0;
  for (const f of [o.bundle, ...(await partFiles(o.bundle))]) bytes += (await fs.stat(f)).size;
  return {
    manifest: m,
    offered: {
      id: `${m.name}-${m.version}`,
      name: m.name,
      version: m.version,
      created: m.created,
      ...(m.kubernetes?.version ? { kubernetesVersion: m.kubernetes.version } : {}),
      fingerprint: t.fingerprint,
      // As the site state records it (install/cluster.ts bundleRecord): sha256:<hex>.
      checksums: sha256(t.table['checksums.txt']),
      bytes,
      ...(t.delta ? { delta: t.delta.manifest.base.id } : {}),
    },
  };
}

const atTarget = (n: NodeRecord, id: string, k8s: string) => n.bundle === id && n.kubernetesVersion === k8s;

/** The decision for this site and this bundle (throws its refusals), from the state and this server's store. */
async function decide(o: UpgradeOptions, offered: OfferedBundle): Promise<{ state: SiteState; self: NodeRecord; decision: UpgradeDecision }> {
  const state = await o.site.read();
  if (!state) throw new UsageError(Codes.stateMissing, 'this site has no state', { hint: 'Run ferry upgrade on a server where ferry install finished.' });
  const self = selfOf(state.nodes);
  if (!self || self.role !== 'server') throw new UsageError(Codes.usage, 'this machine is not a server of the site', { hint: `Run ferry upgrade on a server: ${state.nodes.filter((n) => n.role === 'server').map((n) => n.name).join(', ')}.` });
  const store = await SiteStore.open(o.host.p(STORE_DIR), { create: false }).catch(() => undefined);
  const created = store ? await store.manifest(state.current).then((m) => m.created).catch(() => undefined) : undefined;
  const target = offered.kubernetesVersion ?? '';
  const upgrading = state.nodes.filter((n) => !atTarget(n, offered.id, target)).map((n) => n.name);
  const decision = decideUpgrade(upgradeInputs(state, offered, { firstServer: self.name, maxUnavailable: o.maxUnavailable, upgrading, ...(created ? { installedCreated: created } : {}) }));
  // A re-run of a half-done upgrade: the state still names the old bundle, some nodes the new one.
  if (decision.action === 'upgrade' && !upgrading.length) return { state, self, decision: { action: 'none', reason: `every node runs ${offered.id} already` } };
  return { state, self, decision };
}

/** The steps the operation records, in order, as the operator reads them (pure). */
export function upgradeSteps(d: Extract<UpgradeDecision, { action: 'upgrade' }>, nodes: NodeRecord[], self: string): { key: string; what: string }[] {
  const servers = nodes.filter((n) => n.role === 'server');
  const role = (name: string) => nodes.find((n) => n.name === name)?.role ?? 'agent';
  const first = d.order.nodes[0]?.name;
  const applies = !!first && first === self && !nodes.some((n) => n.role === 'server' && !d.order.nodes.some((x) => x.name === n.name));
  return [
    { key: 'site/snapshot', what: `save an etcd snapshot on ${self} and copy it to every server (${BACKUP_DIR})` },
    ...[...servers.filter((s) => s.name === self), ...servers.filter((s) => s.name !== self)].map((s) => ({ key: `${s.name}/stage`, what: `add ${d.to} to ${s.name}'s site store, beside ${d.from}` })),
    ...d.order.waves.flatMap((w) =>
      w.nodes.map((n) => ({
        key: `${n}/upgrade`,
        what: `${n} (${role(n)}${w.nodes.length > 1 ? `, ${w.nodes.length} at once` : ''}): drain, ${n === first && applies ? `kubeadm upgrade apply ${d.kubernetes?.to ?? ''}`.trim() : 'kubeadm upgrade node'}, new binaries, kubelet restarted, Ready${d.kubernetes ? ` at ${d.kubernetes.to}` : ''}, uncordon`,
      })),
    ),
    { key: 'site/addons', what: `re-apply the CNI and ferry's DNS and LB DaemonSets from ${d.to}` },
    { key: 'site/finish', what: `record ${d.to} as the site's bundle; ferry on this server's PATH from it` },
  ];
}

/** Free bytes under /var/lib/ferry on a node (its df), or on this machine. */
async function freeBytes(host: Host, node?: RemoteNode): Promise<number> {
  if (!node) {
    const s = statfsSync(host.p(path.dirname(STORE_DIR)));
    return s.bavail * s.bsize;
  }
  const r = await node.session.exec(`df -Pk ${node.p('/var/lib/ferry')} | tail -1`);
  const kb = Number(r.stdout.trim().split(/\s+/)[3]);
  if (!Number.isFinite(kb)) throw new Error(`df on ${node.name}: ${r.stdout.trim() || r.stderr.trim()}`);
  return kb * 1024;
}

/** The images the new kubeadm asks for at the target version, against the bundle's images. */
async function kubeadmImagesCheck(o: UpgradeOptions, m: BundleManifest, target: string): Promise<PreflightCheck> {
  const arch = os.arch() === 'arm64' ? 'arm64' : 'amd64';
  const f = m.files.find((x) => x.name === 'kubeadm' && x.platform === `linux/${arch}`);
  if (!f || f.archive) return { name: 'images', ok: false, detail: `the bundle carries no kubeadm for linux/${arch} to ask which images ${target} needs` };
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-kubeadm-'));
  try {
    const bin = path.join(tmp, 'kubeadm');
    const store = await SiteStore.open(o.host.p(STORE_DIR), { create: false }).catch(() => undefined);
    const held = store ? path.join(store.viewOf(`${m.name}-${m.version}`), f.path) : undefined;
    if (held && (await fs.stat(held).catch(() => undefined))) await fs.copyFile(held, bin);
    else {
      // Out of the verified bundle: its place is known once the stream checked it.
      let at: EntryPlace | undefined;
      await verifyBundle(o.bundle, { ...o.verify, reporter: undefined, onEntry: (p, place) => void (p === f.path && (at = place)) });
      if (!at) return { name: 'images', ok: true, detail: `kubeadm ${f.version} comes from the delta's base; its images are checked once staged` };
      await copyEntry(o.bundle, f.path, at, f.sha256, bin, 0o755);
    }
    await fs.chmod(bin, 0o755);
    const repo = m.kubernetes?.imageRepository ?? 'registry.k8s.io';
    const r = await o.host.run(bin, ['config', 'images', 'list', '--kubernetes-version', target, '--image-repository', repo], { allowFail: true, timeoutMs: 60_000 });
    if (r.code !== 0) return { name: 'images', ok: false, detail: `kubeadm ${f.version} config images list failed: ${r.stderr.trim().split('\n').pop()}` };
    const want = r.stdout.split('\n').map((l) => l.trim()).filter(Boolean);
    const have = new Set(m.images.map((i) => i.ref));
    const missing = want.filter((w) => !have.has(w));
    return missing.length ? { name: 'images', ok: false, detail: `${target} needs ${missing.join(', ')}, which the bundle does not carry` } : { name: 'images', ok: true, detail: `the ${want.length} images kubeadm ${target} lists are in the bundle` };
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
}

/** Every check across the site, each named; none throws. */
async function preflight(o: UpgradeOptions, state: SiteState, self: NodeRecord, m: BundleManifest, offered: UpgradePlan['offered'], d: Extract<UpgradeDecision, { action: 'upgrade' }>): Promise<PreflightCheck[]> {
  const out: PreflightCheck[] = [];
  try {
    const views = await nodeViews(o.host);
    const bad = state.nodes.filter((n) => !views.find((v) => v.name === n.name)?.ready);
    out.push({ name: 'nodes-ready', ok: !bad.length, detail: bad.length ? `not Ready: ${bad.map((n) => n.name).join(', ')}` : `${state.nodes.length} nodes Ready` });
  } catch (e) {
    out.push({ name: 'nodes-ready', ok: false, detail: (e as Error).message });
  }
  const need = 2 * offered.bytes;
  const unreachable: string[] = [];
  const short: string[] = [];
  for (const n of state.nodes) {
    if (n.name === self.name) {
      const free = await freeBytes(o.host);
      if (free < need) short.push(`${n.name} (${gib(free)} free)`);
      continue;
    }
    try {
      const node = await connectNode(addressOf(n), { ssh: { ...state.answers.ssh, ...o.ssh }, confirmHostKey: o.confirmHostKey ?? (async () => false) });
      try {
        if (n.role === 'server') {
          const free = await freeBytes(o.host, node);
          if (free < need) short.push(`${n.name} (${gib(free)} free)`);
        }
      } finally {
        node.close();
      }
    } catch (e) {
      unreachable.push(`${n.name} (${(e as Error).message})`);
    }
  }
  out.push({ name: 'nodes-reachable', ok: !unreachable.length, detail: unreachable.length ? `no SSH to ${unreachable.join(', ')}` : 'every other node answers over SSH' });
  out.push({ name: 'disk', ok: !short.length, detail: short.length ? `under ${gib(need)} free under /var/lib/ferry on ${short.join(', ')}` : `every server has ${gib(need)} free for the new content` });
  const t = await etcdTls(o.host);
  if (!t) out.push({ name: 'etcd', ok: false, detail: "this server has no etcd client certificate (kubeadm's healthcheck-client)" });
  else {
    try {
      const members = await memberList(t, self.ip, 5000);
      const servers = state.nodes.filter((n) => n.role === 'server');
      const problems: string[] = [];
      for (const mb of members) {
        if (!mb.name || !mb.clientURLs.length) problems.push(`member ${mb.id} has not started`);
        else if (!(await endpointStatus(t, memberIp(mb) ?? '', 5000).then((s) => s.leader !== '0', () => false))) problems.push(`${mb.name} does not answer`);
      }
      if (members.length !== servers.length) problems.push(`${members.length} members for ${servers.length} servers`);
      out.push({ name: 'etcd', ok: !problems.length, detail: problems.length ? problems.join('; ') : `${members.length} members started and healthy` });
    } catch (e) {
      out.push({ name: 'etcd', ok: false, detail: (e as Error).message });
    }
  }
  if (d.kubernetes) out.push(await kubeadmImagesCheck(o, m, d.kubernetes.to).catch((e: Error) => ({ name: 'images', ok: false, detail: e.message })));
  return out;
}

const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;

/** What `ferry upgrade` would do: the decision (throws its refusals), the preflight, the steps. Changes nothing. */
export async function planUpgrade(o: UpgradeOptions): Promise<UpgradePlan & { manifest: BundleManifest; state: SiteState }> {
  const { offered, manifest } = await offer(o);
  const { state, self, decision } = await decide(o, offered);
  if (decision.action === 'none') return { offered, decision, self: self.name, preflight: [], steps: [], manifest, state };
  return { offered, decision, self: self.name, preflight: await preflight(o, state, self, manifest, offered, decision), steps: upgradeSteps(decision, state.nodes, self.name), manifest, state };
}

export function refuseFailedPreflight(checks: PreflightCheck[]): void {
  const bad = checks.filter((c) => !c.ok);
  if (bad.length) {
    throw new UsageError(Codes.upgradePreflight, `the site is not ready to upgrade, and nothing was changed:\n  ${bad.map((c) => `${c.name}: ${c.detail}`).join('\n  ')}`, {
      hint: 'Fix each failed check (ferry status shows the nodes and etcd), then run the same ferry upgrade again.',
    });
  }
}

/** The new bundle's files for a platform that differ (by name and digest) from the old bundle's. */
export function changedFiles(next: BundleManifest, prev: BundleManifest | undefined, platform: string): VersionsEntry[] {
  const had = new Set((prev?.files ?? []).filter((f) => f.platform === platform).map((f) => `${f.name} ${f.sha256}`));
  return next.files.filter((f) => f.platform === platform && !had.has(`${f.name} ${f.sha256}`)).map((f) => ({ ...f, path: f.path.replace(/^files\//, '') }));
}

/** Runs node-upgrade on this server: the ferry of this process, as a child, payload on stdin. */
function runLocalNodeOp(o: UpgradeOptions, payload: NodeUpgradePayload, say: (l: string) => void): Promise<void> {
  const me = o.selfFerry ?? { node: process.execPath, mjs: process.argv[1]! };
  return new Promise((resolve, reject) => {
    const c = spawn(me.node, [...QUIET_DEPRECATIONS, me.mjs, 'node-upgrade', '--root', o.host.root], { stdio: ['pipe', 'pipe', 'pipe'] });
    let err = '';
    let buf = '';
    c.stderr.on('data', (d: Buffer) => {
      err += d.toString('utf8');
      buf += d.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const l = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (l) say(l);
      }
    });
    c.stdout.resume();
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve() : reject(new RemoteError(Codes.upgradeFailed, `${payload.name}: ${err.trim().split('\n').filter(Boolean).slice(-2).join(' / ') || `exit ${code}`}`, { hint: `See /var/log/ferry/ on ${payload.name}; fix the cause and run the same ferry upgrade again: what finished is skipped.` }))));
    c.stdin.end(JSON.stringify(payload));
  });
}

async function remoteNodeOp(node: RemoteNode, payload: NodeUpgradePayload, args: string[], say: (l: string) => void): Promise<void> {
  const r = await runNodeOp(node, 'node-upgrade', { args, payload, onLine: (l) => l.trim() && say(l.trim()) });
  if (r.code !== 0) {
    throw new RemoteError(Codes.upgradeFailed, `${payload.name}: ${r.stderr.trim().split('\n').filter(Boolean).slice(-2).join(' / ') || `exit ${r.code}`}`, { hint: `See /var/log/ferry/ on ${payload.name}; fix the cause and run the same ferry upgrade again: what finished is skipped.` });
  }
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, hint: string): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = (e as Error).message;
    }
    if (Date.now() > end) throw new RemoteError(Codes.upgradeFailed, `${what} within ${Math.round(timeoutMs / 1000)} s${last ? ` (${last})` : ''}`, { hint });
    await new Promise((r) => setTimeout(r, 3000));
  }
}

/** `ferry upgrade`: the plan, then the rollout under the lease. Call planUpgrade first to print or confirm it. */
export async function runUpgrade(o: UpgradeOptions): Promise<UpgradeResult> {
  const t0 = Date.now();
  const plan = await planUpgrade(o);
  const d = plan.decision;
  if (d.action === 'none') return { action: 'none', reason: d.reason, nodes: [], seconds: (Date.now() - t0) / 1000 };
  refuseFailedPreflight(plan.preflight);
  const { manifest: m, state } = plan;
  const holder = o.holder ?? `${os.hostname()}/${process.pid}`;
  const ssh = { ...state.answers.ssh, ...o.ssh };
  const target = d.kubernetes?.to ?? m.kubernetes?.version ?? '';
  const width = Math.max(...state.nodes.map((n) => n.name.length), 4);
  const sayFor = (name: string) => (l: string) => o.reporter.info(`${name.padEnd(width)}  ${l}`);
  const serverIps = state.nodes.filter((n) => n.role === 'server').map((n) => n.ip);
  const snapshot = `${BACKUP_DIR}/pre-upgrade-${d.from}-to-${d.to}.db`;
  const confirmHostKey = o.confirmHostKey ?? (async () => false);
  const rows: NodeUpgradeRow[] = [];

  await runOperation({ site: o.site, lease: o.lease, kind: 'upgrade', args: { bundle: d.to }, holder, wait: o.wait, onWait: (h) => o.reporter.info(`waiting for the operation of ${h} to end`) }, async (journal: Journal) => {
    const step = async (key: string, fn: () => Promise<void>, say = sayFor(key.split('/')[0]!)) => {
      if (journal.has(key)) return void say(`${key.split('/')[1]}: done in an earlier run`);
      await fn();
      await journal.record(key);
    };
    const store = await SiteStore.open(o.host.p(STORE_DIR), { create: false });
    const prev = await store.manifest(d.from).catch(() => undefined);

    await step('site/snapshot', async () => {
      const t = await etcdTls(o.host);
      if (!t) throw new RemoteError(Codes.upgradeFailed, 'this server has no etcd client certificate for the snapshot', { hint: 'Run ferry upgrade on a server (ferry status lists them).' });
      await o.host.mkdir(BACKUP_DIR, 0o700);
      const s = await snapshotTo(t, plan.state.nodes.find((n) => n.name === plan.self)!.ip, o.host.p(snapshot));
      sayFor('site')(`etcd snapshot ${snapshot}: ${gib(s.bytes)} (${s.bytes} bytes), sha256 ${s.sha256.slice(0, 12)}…, its own checksum verified`);
    });

    const servers = state.nodes.filter((n) => n.role === 'server');
    for (const s of [...servers.filter((x) => x.name === plan.self), ...servers.filter((x) => x.name !== plan.self)]) {
      const say = sayFor(s.name);
      await step(`${s.name}/stage`, async () => {
        if (s.name === plan.self) {
          const r = await store.add(o.bundle, { ...o.verify, reporter: o.reporter });
          return say(`${r.id} staged in the site store (${r.blobsAdded} blobs and ${r.filesAdded} files new)`);
        }
        const node = await connectNode(addressOf(s), { ssh, confirmHostKey });
        try {
          await ensureFerry(node, o.host, m, { bundleDir: store.viewOf(d.to) });
          say('uploading the bundle and the etcd snapshot');
          const files = [o.bundle, ...(await partFiles(o.bundle))].map((f) => ({ local: f, remote: `${INCOMING_DIR}/${path.basename(f)}` }));
          await uploadFiles(node, [...files, { local: o.host.p(snapshot), remote: snapshot, mode: 0o600 }]);
          await remoteNodeOp(node, { phase: 'stage', name: s.name, role: 'server', domain: state.answers.domain, serverIps, bundle: d.to, kubernetesVersion: target, files: [] }, ['--bundle', node.p(`${INCOMING_DIR}/${path.basename(o.bundle)}`)], say);
        } finally {
          node.close();
        }
      });
    }

    for (const n of state.nodes.filter((x) => !d.order.nodes.some((y) => y.name === x.name))) sayFor(n.name)(`upgraded in an earlier run (${n.kubernetesVersion}, ${n.bundle})`);
    const first = d.order.nodes[0]?.name;
    // kubeadm upgrade apply runs once, on the first server, unless a server already runs the target.
    const applied = state.nodes.some((n) => n.role === 'server' && atTarget(n, d.to, target));
    const upgradeOne = async (n: NodeRecord) => {
      const say = sayFor(n.name);
      const key = `${n.name}/upgrade`;
      const t1 = Date.now();
      if (journal.has(key)) {
        say('upgrade: done in an earlier run');
        return rows.push({ name: n.name, role: n.role, ok: true, seconds: 0, skipped: true });
      }
      try {
        if (n.role === 'server') {
          // The quorum guard: no server goes down while another is not Ready. (An API server that
          // just restarted answers Forbidden or not at all for a moment: asked again, not failed.)
          const views = await waitFor('the API did not list the nodes', 120_000, () => nodeViews(o.host), 'Check the API on this server (ferry status), then run the same ferry upgrade again.');
          const down = servers.filter((s) => s.name !== n.name && !views.find((v) => v.name === s.name)?.ready);
          if (down.length) throw new RemoteError(Codes.upgradeFailed, `${n.name} is not taken down while ${down.map((s) => s.name).join(', ')} ${down.length > 1 ? 'are' : 'is'} not Ready`, { hint: 'Bring the server back (ferry status), then run the same ferry upgrade again.' });
        }
        say('draining');
        let dr = await kubectlOn(o.host, ['drain', n.name, '--ignore-daemonsets', '--delete-emptydir-data', `--timeout=${o.drainTimeoutS ?? 300}s`], 30);
        for (let i = 0; i < 3 && dr.code !== 0 && TRANSIENT_API.test(dr.stderr); i++) {
          await new Promise((r) => setTimeout(r, 5000));
          dr = await kubectlOn(o.host, ['drain', n.name, '--ignore-daemonsets', '--delete-emptydir-data', `--timeout=${o.drainTimeoutS ?? 300}s`], 30);
        }
        if (dr.code !== 0) throw new RemoteError(Codes.upgradeFailed, `drain ${n.name}: ${dr.stderr.trim().split('\n').pop()}`, { hint: `${n.name} stays cordoned. See what blocks the drain (a PodDisruptionBudget, a pod without a controller), then run the same ferry upgrade again.` });
        const payload: NodeUpgradePayload = {
          phase: 'upgrade',
          name: n.name,
          role: n.role,
          domain: state.answers.domain,
          serverIps,
          bundle: d.to,
          kubernetesVersion: target,
          apply: n.name === first && !applied,
          files: changedFiles(m, prev, n.platform),
          ...(state.answers.ignoreKubeadmPreflight ? { ignoreKubeadmPreflight: state.answers.ignoreKubeadmPreflight } : {}),
        };
        say(payload.apply ? `kubeadm upgrade apply ${target}` : 'kubeadm upgrade node');
        if (n.name === plan.self) await runLocalNodeOp(o, payload, say);
        else {
          const node = await connectNode(addressOf(n), { ssh, confirmHostKey });
          try {
            // ferry on the node's PATH becomes the new bundle's, and runs its part of the upgrade.
            await ensureFerry(node, o.host, m, { bundleDir: store.viewOf(d.to) });
            await remoteNodeOp(node, payload, [], say);
          } finally {
            node.close();
          }
        }
        const want = target.replace(/^v/, '');
        await waitFor(`${n.name} was not Ready with kubelet ${target}`, o.readyTimeoutMs ?? 600_000, async () => {
          const v = (await nodeViews(o.host)).find((x) => x.name === n.name);
          return v?.ready && v.kubelet.replace(/^v/, '') === want ? v : undefined;
        }, `${n.name} stays cordoned. Look at its kubelet (journalctl -u kubelet), then run the same ferry upgrade again.`);
        if (n.role === 'server') {
          await waitFor(`${n.name}'s control plane did not run ${target}`, o.readyTimeoutMs ?? 600_000, async () => {
            const r = await kubectlOn(o.host, ['-n', 'kube-system', 'get', 'pod', `kube-apiserver-${n.name}`, '-o', 'jsonpath={.spec.containers[0].image} {.status.conditions[?(@.type=="Ready")].status}']);
            const [image, ready] = r.stdout.trim().split(' ');
            return image?.endsWith(`:${target}`) && ready === 'True' ? true : undefined;
          }, `${n.name} stays cordoned. Look at its static pods (crictl ps -a), then run the same ferry upgrade again.`);
        }
        await waitFor(`uncordon ${n.name} failed`, 120_000, async () => {
          const un = await kubectlOn(o.host, ['uncordon', n.name]);
          if (un.code !== 0) throw new Error(un.stderr.trim().split('\n').pop());
          return true;
        }, 'Check the API, then run the same ferry upgrade again.');
        await o.site.update((s) => {
          const rec = s.nodes.find((x) => x.name === n.name);
          if (rec) Object.assign(rec, { kubernetesVersion: target, bundle: d.to });
        });
        await journal.record(key);
        const seconds = (Date.now() - t1) / 1000;
        say(`upgraded to ${target} in ${seconds.toFixed(0)} s`);
        rows.push({ name: n.name, role: n.role, ok: true, seconds });
      } catch (e) {
        const fe = e instanceof FerryError ? e : new RemoteError(Codes.upgradeFailed, (e as Error).message);
        say(`failed: ${fe.message}`);
        rows.push({ name: n.name, role: n.role, ok: false, seconds: (Date.now() - t1) / 1000, error: { code: fe.code, message: fe.message, ...(fe.hint ? { hint: fe.hint } : {}) } });
        throw fe;
      }
    };
    const byName = new Map(state.nodes.map((n) => [n.name, n]));
    for (const wave of d.order.waves) {
      const results = await rollout(wave.nodes.map((x) => byName.get(x)!), { order: 'all', onFailure: 'stop', parallel: wave.width }, upgradeOne);
      const failed = results.find((r) => r.status === 'failed');
      if (failed && failed.status === 'failed') throw failed.error;
    }

    await step('site/addons', async () => {
      const s = (await o.site.read()) as SiteState;
      const a = s.answers;
      if (a.cni) {
        const chart = m.charts.find((c) => c.name === a.cni);
        if (chart) {
          const tgz = await chartBlob(o.host, chart.digest);
          const ns = a.cni === 'flannel' ? 'kube-flannel' : 'kube-system';
          await o.host.run('helm', ['upgrade', '--install', a.cni, tgz, '--namespace', ns, '--kubeconfig', o.host.p(ADMIN_CONF), '--set', `podCidr=${a.podCidr}`, '--wait', '--timeout', '10m']);
          const sets = (await o.host.daemonSets(ns)).map((name) => ({ namespace: ns, name }));
          await o.host.waitForDaemonSets(sets, { timeoutMs: o.rolloutTimeoutMs ?? 300_000, reporter: o.reporter });
          sayFor('site')(`${a.cni} ${chart.version} applied from ${d.to}`);
        }
      }
      await applyBootstrap(o.host, bootstrapValues(a as unknown as InstallAnswers, m, s.nodes.map((n) => ({ name: n.name, ip: n.ip, role: n.role }))), o.reporter, sayFor('site'), o.rolloutTimeoutMs ?? 300_000);
    });

    await step('site/finish', async () => {
      const rec = await bundleRecord(o.host, m);
      await o.site.update((s) => {
        if (!s.bundles.some((b) => b.id === rec.id)) s.bundles.push(rec);
        s.current = rec.id;
      });
      // This server's own ferry last: this process may run from it.
      const view = store.viewOf(d.to);
      const rt = m.runtime.find((r) => r.platform === `linux/${os.arch() === 'arm64' ? 'arm64' : 'amd64'}`);
      if (rt) {
        await fs.copyFile(path.join(view, rt.path), `${o.host.p(RUNTIME_NODE)}.ferry-new`);
        await fs.chmod(`${o.host.p(RUNTIME_NODE)}.ferry-new`, 0o755);
        await fs.rename(`${o.host.p(RUNTIME_NODE)}.ferry-new`, o.host.p(RUNTIME_NODE));
        await o.host.rm(FERRY_DIR);
        await fs.cp(path.join(view, 'ferry'), o.host.p(FERRY_DIR), { recursive: true });
        await writeLauncher(o.host);
        await o.host.run('systemctl', ['try-restart', 'ferry-serve.service'], { allowFail: true });
      }
      sayFor('site')(`${d.to} is the site's bundle`);
    });
  });
  const ordered = d.order.nodes.map((n) => rows.find((r) => r.name === n.name)).filter((r): r is NodeUpgradeRow => !!r);
  return { action: 'upgrade', from: d.from, to: d.to, ...(d.kubernetes ? { kubernetes: d.kubernetes } : {}), snapshot, nodes: ordered, seconds: (Date.now() - t0) / 1000 };
}

/** True when this process is not the offered bundle's ferry: the upgrade then runs the new one (see the CLI). */
export function newFerryOf(host: Host, id: string, m: BundleManifest): { node: string; mjs: string } | undefined {
  const view = path.join(host.p(STORE_DIR), 'bundles', id);
  const rt = m.runtime.find((r) => r.platform === `linux/${os.arch() === 'arm64' ? 'arm64' : 'amd64'}`);
  if (!rt) return undefined;
  return { node: path.join(view, rt.path), mjs: path.join(view, 'ferry', 'ferry.mjs') };
}

export function formatUpgradeTable(rows: NodeUpgradeRow[]): string {
  const head = ['NODE', 'ROLE', 'RESULT', 'TIME'];
  const body = rows.map((r) => [r.name, r.role, r.ok ? (r.skipped ? 'done earlier' : 'upgraded') : `FAILED ${r.error?.code}`, `${r.seconds.toFixed(1)}s`]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  return [head, ...body].map((r) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd()).join('\n');
}
