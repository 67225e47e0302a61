import os from 'node:os';
import type { LeaseProvider, NodeRecord, SiteState, SiteStateAccess } from '../cluster/state.js';
import { Codes, FerryError, InternalError, RemoteError, UsageError } from '../errors.js';
import type { InstallAnswers } from '../install/answers.js';
import { applyBootstrap, bootstrapValues, bundleManifest } from '../install/cluster.js';
import type { Host } from '../install/host.js';
import { ADMIN_CONF } from '../install/paths.js';
import type { Reporter } from '../util/progress.js';
import { selfOf } from './certs-renew.js';
import { endpointStatus, etcdTls, memberIp, memberList, memberRemove, removalKeepsQuorum, type EtcdMember, type EtcdTls } from './etcd.js';
import { runOperation } from './operation.js';
import { addressOf, connectNode, ensureFerry, runNodeOp, type SshSettings } from './remote.js';

/*
 * `ferry reset NODE` from any server, on the operation layer (lease + journal): for a server its etcd
 * member goes first (refused when that loses quorum, unless --force), then the node is drained, its
 * own cleanup runs there over SSH (`ferry node-reset`), the Node object is deleted, and the site
 * state, DNS records and LB backends forget it. Journal keys: `<node>/etcd-member`, `<node>/drain`,
 * `<node>/node-reset`, `<node>/delete`, `site/membership`, `site/bootstrap`.
 */

export interface ResetOptions {
  host: Host;
  site: SiteStateAccess;
  lease: LeaseProvider;
  node: string;
  reporter: Reporter;
  ssh?: SshSettings;
  force?: boolean;
  wait?: boolean;
  holder?: string;
  confirmHostKey?: (host: string, fingerprint: string) => Promise<boolean>;
  rolloutTimeoutMs?: number;
  /** For tests: stop as if ferry died before this journal key. */
  failAt?: string;
}

export interface ResetPlan {
  node: NodeRecord;
  /** The cluster's steps, in order, as the operator reads them. */
  steps: { key: string; what: string }[];
  /** What the node's own cleanup would remove (a dry run asks the node; empty when it cannot be reached). */
  onNode: string[];
  /** Why the node's list is missing, when it is. */
  onNodeError?: string;
  etcd?: { voters: number; healthy: number; targetHealthy: boolean; keepsQuorum: boolean };
}

export interface ResetResult {
  node: string;
  role: string;
  removed: string[];
  warnings: string[];
  seconds: number;
}

async function etcdView(t: EtcdTls | undefined, servers: NodeRecord[], target: NodeRecord): Promise<{ members: EtcdMember[]; healthy: Set<string>; via?: string } | undefined> {
  if (!t) return undefined;
  for (const s of servers.filter((x) => x.name !== target.name)) {
    const members = await memberList(t, s.ip, 5000).catch(() => undefined);
    if (!members) continue;
    const healthy = new Set<string>();
    await Promise.all(members.map(async (m) => {
      const ip = memberIp(m);
      const st = ip ? await endpointStatus(t, ip, 5000).catch(() => undefined) : undefined;
      if (st && st.leader !== '0') healthy.add(m.id);
    }));
    return { members, healthy, via: s.ip };
  }
  return undefined;
}

/** The cluster's steps for a node (pure). */
export function resetSteps(n: Pick<NodeRecord, 'name' | 'role'>): { key: string; what: string }[] {
  return [
    ...(n.role === 'server' ? [{ key: `${n.name}/etcd-member`, what: `remove ${n.name}'s etcd member` }] : []),
    { key: `${n.name}/drain`, what: `drain ${n.name}` },
    { key: `${n.name}/node-reset`, what: `clean ${n.name} over SSH (ferry node-reset)` },
    { key: `${n.name}/delete`, what: `delete the Node ${n.name}` },
    { key: 'site/membership', what: `remove ${n.name} from the site state` },
    { key: 'site/bootstrap', what: `re-apply the site DNS records and LB backends without ${n.name}` },
  ];
}

async function targetOf(o: Pick<ResetOptions, 'site' | 'node'>): Promise<{ state: SiteState; node: NodeRecord }> {
  const state = await o.site.read();
  if (!state) throw new UsageError(Codes.stateMissing, 'this site has no state', { hint: 'Run ferry reset on a server where ferry install finished.' });
  const node = state.nodes.find((n) => n.name === o.node);
  if (!node) throw new UsageError(Codes.resetUnknownNode, `the site has no node ${o.node}`, { hint: `Its nodes: ${state.nodes.map((n) => n.name).join(', ')} (ferry state show). On a node the site forgot, run ferry reset --local there.` });
  return { state, node };
}

const kubectl = (host: Host, args: string[], timeoutS = 30) => host.run('kubectl', ['--kubeconfig', host.p(ADMIN_CONF), `--request-timeout=${timeoutS}s`, ...args], { allowFail: true, timeoutMs: (timeoutS + 150) * 1000 });

/** The node's cleanup over SSH (a dry run lists it); the node runs the ferry this server has. */
async function onNode(o: ResetOptions, state: SiteState, n: NodeRecord, dryRun: boolean, say: (l: string) => void): Promise<string[]> {
  const manifest = await bundleManifest(o.host);
  const node = await connectNode(addressOf(n), { ssh: { ...state.answers.ssh, ...o.ssh }, confirmHostKey: o.confirmHostKey ?? (async () => false) });
  try {
    if (manifest) await ensureFerry(node, o.host, manifest);
    const r = await runNodeOp(node, 'node-reset', { args: ['--json', ...(dryRun ? ['--dry-run'] : [])], payload: { name: n.name, role: n.role }, onLine: (l) => l.trim() && say(l.trim()) });
    if (r.code !== 0) {
      let err: { code?: string; message?: string; hint?: string } | undefined;
      try {
        err = (JSON.parse(r.stdout) as { error?: { code?: string; message?: string; hint?: string } }).error;
      } catch {
        err = undefined;
      }
      throw new RemoteError(Codes.resetFailed, `${n.name}: ${err?.message ?? (r.stderr.trim().split('\n').filter(Boolean).slice(-2).join(' / ') || `exit ${r.code}`)}`, { hint: err?.hint ?? `Fix the cause on ${n.name} and run the same ferry reset again: the steps that finished are skipped.` });
    }
    return (JSON.parse(r.stdout) as { removed: string[] }).removed;
  } finally {
    node.close();
  }
}

/** What `ferry reset NODE` would do; asks the node for its list when it answers. */
export async function planReset(o: ResetOptions): Promise<ResetPlan> {
  const { state, node } = await targetOf(o);
  refuseSelf(node, state);
  const plan: ResetPlan = { node, steps: resetSteps(node), onNode: [] };
  if (node.role === 'server') {
    const v = await etcdView(await etcdTls(o.host), state.nodes.filter((n) => n.role === 'server'), node);
    if (v) {
      const m = v.members.find((x) => x.name === node.name);
      const voters = v.members.filter((x) => !x.isLearner).length;
      const q = removalKeepsQuorum({ voters, healthyVoters: [...v.healthy].length, targetHealthy: !!m && v.healthy.has(m.id) });
      plan.etcd = { voters, healthy: v.healthy.size, targetHealthy: !!m && v.healthy.has(m.id), keepsQuorum: q.ok };
    }
  }
  try {
    plan.onNode = await onNode(o, state, node, true, () => {});
  } catch (e) {
    plan.onNodeError = (e as Error).message;
  }
  return plan;
}

function refuseSelf(node: NodeRecord, state: SiteState): void {
  if (selfOf(state.nodes)?.name === node.name) {
    throw new UsageError(Codes.usage, `${node.name} is this server: resetting it from itself would cut the API this command talks through`, { hint: `Run ferry reset ${node.name} on another server, or ferry reset --local here to clean only this machine.` });
  }
}

/** `ferry reset NODE`. */
export async function resetNode(o: ResetOptions): Promise<ResetResult> {
  const t0 = Date.now();
  const { state, node } = await targetOf(o);
  refuseSelf(node, state);
  const holder = o.holder ?? `${os.hostname()}/${process.pid}`;
  const warnings: string[] = [];
  let removed: string[] = [];
  const say = (l: string) => o.reporter.info(`${node.name}  ${l}`);
  const manifest = await bundleManifest(o.host);
  await runOperation({ site: o.site, lease: o.lease, kind: 'reset', args: { node: node.name, force: !!o.force }, holder, wait: o.wait, onWait: (h) => o.reporter.info(`waiting for the operation of ${h} to end`) }, async (journal) => {
    const step = async (key: string, fn: () => Promise<void>) => {
      if (journal.has(key)) return say(`${key.split('/')[1]}: done in an earlier run`);
      if (o.failAt === key) throw new InternalError(Codes.internal, `stopped before ${key}, as the test asked`);
      await fn();
      await journal.record(key);
    };
    if (node.role === 'server') {
      await step(`${node.name}/etcd-member`, async () => {
        const t = await etcdTls(o.host);
        const v = await etcdView(t, state.nodes.filter((n) => n.role === 'server'), node);
        if (!t || !v?.via) throw new RemoteError(Codes.resetFailed, 'no etcd member answers from this server', { hint: 'ferry reset of a server needs etcd; see ferry status.' });
        const m = v.members.find((x) => x.name === node.name || memberIp(x) === node.ip);
        if (!m) return say('etcd: no member of this name (removed already)');
        const q = removalKeepsQuorum({ voters: v.members.filter((x) => !x.isLearner).length, healthyVoters: v.healthy.size, targetHealthy: v.healthy.has(m.id) });
        if (!q.ok && !o.force) {
          throw new UsageError(Codes.resetQuorum, `removing ${node.name}'s etcd member leaves ${q.healthyAfter} answering of ${q.after}, under the quorum of ${q.need}: etcd would stop`, { hint: 'Bring the other servers back first (ferry status), or pass --force to remove it anyway and lose the cluster\'s writes until quorum is back.' });
        }
        await memberRemove(t, v.via, m.id);
        say(`etcd member ${m.id} removed (${q.after} members left)`);
      });
    }
    await step(`${node.name}/drain`, async () => {
      const r = await kubectl(o.host, ['drain', node.name, '--ignore-daemonsets', '--delete-emptydir-data', '--force', '--timeout=120s'], 30);
      if (r.code === 0) return say('drained');
      if (/not found/i.test(r.stderr)) return say('no Node of this name (deleted already)');
      warnings.push(`drain: ${r.stderr.trim().split('\n').pop()}`);
      say(`drain did not finish (${r.stderr.trim().split('\n').pop()}); its pods go with the Node`);
    });
    await step(`${node.name}/node-reset`, async () => {
      try {
        removed = await onNode(o, state, node, false, say);
      } catch (e) {
        if (!o.force) throw e instanceof FerryError ? e : new RemoteError(Codes.resetFailed, `${node.name}: ${(e as Error).message}`, { hint: 'Check SSH to the node, then run the same ferry reset again (or --force to forget an unreachable node).' });
        warnings.push(`${node.name} was not cleaned: ${(e as Error).message}`);
        say(`not cleaned (--force): ${(e as Error).message}`);
      }
    });
    await step(`${node.name}/delete`, async () => {
      const r = await kubectl(o.host, ['delete', 'node', node.name, '--ignore-not-found', '--wait=true']);
      if (r.code !== 0) throw new RemoteError(Codes.resetFailed, `kubectl delete node ${node.name}: ${r.stderr.trim()}`, { hint: 'Check the API (ferry status), then run the same ferry reset again.' });
      say('Node deleted');
    });
    await step('site/membership', async () => {
      await o.site.update((s) => {
        s.nodes = s.nodes.filter((n) => n.name !== node.name);
      });
    });
    await step('site/bootstrap', async () => {
      const s = (await o.site.read()) as SiteState;
      const nodes = s.nodes.map((n) => ({ name: n.name, ip: n.ip, role: n.role }));
      if (!manifest) throw new RemoteError(Codes.resetFailed, 'this server has no unpacked bundle to render the DNS and LB from', { hint: 'Run ferry reset on a server where ferry install finished.' });
      o.reporter.info(`updating the site DNS records and LB backends for ${nodes.length} nodes`);
      await applyBootstrap(o.host, bootstrapValues(s.answers as unknown as InstallAnswers, manifest, nodes), o.reporter, (l) => o.reporter.verbose(l), o.rolloutTimeoutMs ?? 300_000);
    });
  });
  return { node: node.name, role: node.role, removed, warnings, seconds: (Date.now() - t0) / 1000 };
}
