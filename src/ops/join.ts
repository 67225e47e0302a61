import os from 'node:os';
import path from 'node:path';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import { partFiles } from '../bundle/format.js';
import type { Journal } from '../cluster/journal.js';
import type { LeaseProvider, NodeRecord, NodeRole, SiteAnswers, SiteState, SiteStateAccess } from '../cluster/state.js';
import { Codes, FerryError, InternalError, RemoteError, UsageError } from '../errors.js';
import { resolveJoinHosts, type InstallAnswers } from '../install/answers.js';
import { applyBootstrap, bootstrapValues, bundleManifest, caCertHash, containerdVersionOf, kubernetesVersionOf, pauseImageOf } from '../install/cluster.js';
import type { BootstrapNode } from '../install/bootstrap.js';
import { cniNodeObjects } from '../install/cni.js';
import { bundleRegistries } from '../install/containerd.js';
import type { Host } from '../install/host.js';
import { applyObjects } from '../kube/client.js';
import { TOKEN_RE } from '../install/kubeadm.js';
import type { NodeJoinPayload } from '../install/node-join.js';
import { ADMIN_CONF, BACKUP_KEY, BUNDLE_DIR, BUNDLE_PUB, INCOMING_DIR, KUBEADM_CONFIG, SITE_CA, SITE_CA_KEY } from '../install/paths.js';
import type { Reporter } from '../util/progress.js';
import { runOperation } from './operation.js';
import { connectNode, ensureFerry, runNodeOp, uploadFiles, type RemoteNode } from './remote.js';
import { rollout, type RolloutOrder } from './rollout.js';

/*
 * ferry join on the operation layer: from any server, under the site's lease, with a journal per
 * node (`<node>/upload`, `<node>/node-join`, `<node>/cni-node`) and for the site (`site/membership`,
 * `site/bootstrap`), so that running the same join again after ferry, the link or this host died
 * skips what finished. The site's answers and its nodes come from the site state.
 */

export interface JoinTarget {
  /** The address SSH connects to: an IP, or a name this host resolves. */
  host: string;
  name: string;
  role: NodeRole;
  /** The node's IP on the cluster network, when `host` is not it. */
  ip?: string;
}

export interface JoinOptions {
  /** This server. */
  host: Host;
  site: SiteStateAccess;
  lease: LeaseProvider;
  targets: JoinTarget[];
  /** SSH settings that override the site's (an answers file's ssh:). */
  ssh?: SiteAnswers['ssh'];
  /** The bundle file, uploaded to joining servers so they verify and serve it too. */
  bundle?: string;
  reporter: Reporter;
  confirmHostKey: (host: string, fingerprint: string) => Promise<boolean>;
  /** Wait for another operation's lease instead of refusing. */
  wait?: boolean;
  /** Default `all`: every node at once (bounded by `parallel`). */
  order?: RolloutOrder;
  parallel?: number;
  /** Default `<hostname>/<pid>`. */
  holder?: string;
  /** For tests and image builds: the root prefix on each remote host ({name} is replaced). */
  remoteRoot?: string;
  /** For tests: directories put first on the remote PATH (stand-ins). */
  remotePath?: string;
  rolloutTimeoutMs?: number;
  /** Let a joining server's uploaded bundle replace a newer one unpacked there (node-join --allow-downgrade). */
  allowDowngrade?: boolean;
  /** For tests: stop as if ferry died when the step with this journal key is about to start. */
  failAt?: string;
  /** For tests: a stand-in for rolling the DNS records and LB backends out, which needs a cluster. */
  applySite?: (nodes: BootstrapNode[]) => Promise<void>;
}

export interface JoinOutcome {
  name: string;
  host: string;
  role: string;
  ok: boolean;
  seconds: number;
  error?: { code: string; message: string; hint?: string };
}

/** A fresh bootstrap token (TTL 1h) and, for servers, a certificate key; never logged. */
async function credentials(host: Host, servers: boolean): Promise<{ token: string; certificateKey?: string }> {
  const t = await host.run('kubeadm', ['token', 'create', '--ttl', '1h']);
  const token = t.stdout.trim().split('\n').pop() ?? '';
  if (!TOKEN_RE.test(token)) throw new RemoteError(Codes.joinFailed, 'kubeadm token create did not print a token', { hint: 'Check that this is a server where ferry install finished (kubectl get nodes).' });
  host.secrets.push(token);
  if (!servers) return { token };
  // With its own config: without one kubeadm guesses the API address, and on a host without a default route it guesses 0.0.0.0.
  const u = await host.run('kubeadm', ['init', 'phase', 'upload-certs', '--upload-certs', '--config', KUBEADM_CONFIG]);
  const certificateKey = u.stdout.trim().split('\n').pop()?.trim() ?? '';
  if (!/^[a-f0-9]{64}$/.test(certificateKey)) throw new RemoteError(Codes.joinFailed, 'kubeadm init phase upload-certs did not print a certificate key', { hint: 'Check the control plane, then run ferry join again.' });
  host.secrets.push(certificateKey);
  return { token, certificateKey };
}

/** The server this join runs on, as the state knows it: the one whose IP is on this machine (else the first). */
function thisServer(nodes: NodeRecord[]): NodeRecord | undefined {
  const mine = new Set(Object.values(os.networkInterfaces()).flatMap((l) => (l ?? []).map((a) => a.address)));
  const servers = nodes.filter((n) => n.role === 'server');
  return servers.find((n) => mine.has(n.ip)) ?? servers[0];
}

/** Each target with the IP the cluster knows it by: a host name resolves here to its one IPv4 address. */
async function resolveTargets(targets: JoinTarget[]): Promise<(JoinTarget & { ip: string })[]> {
  const r = await resolveJoinHosts(targets);
  if (r.problems.length) throw new UsageError(Codes.usage, `the hosts to join are not valid:\n  ${r.problems.map((p) => `${targets[p.path[1] as number]?.name}: ${p.msg}`).join('\n  ')}`, { hint: 'Give each node its IP (--ip, or ip: in the join: list).' });
  return targets.map((t, i) => ({ ...t, ip: t.ip ?? r.ips.get(i) ?? t.host }));
}

export function checkTargets(targets: JoinTarget[], o: { bundle?: string }): void {
  if (!targets.length) throw new UsageError(Codes.usage, 'there are no hosts to join', { hint: 'Name one (ferry join HOST --name NAME --role agent), or list them under join: in an answers file (--answers FILE).' });
  const names = targets.map((t) => t.name);
  const twice = names.filter((n, i) => names.indexOf(n) !== i);
  if (twice.length) throw new UsageError(Codes.usage, `the hosts to join name ${twice.join(', ')} twice`, { hint: 'Give each node its own name.' });
  const servers = targets.filter((t) => t.role === 'server');
  if (servers.length && !o.bundle) {
    throw new UsageError(Codes.usage, `joining server${servers.length > 1 ? 's' : ''} ${servers.map((s) => s.name).join(', ')} need${servers.length > 1 ? '' : 's'} the bundle file`, { hint: 'Pass --bundle FILE (the bundle this site was installed from): a joining server verifies and serves it too.' });
  }
  for (const t of targets) if (t.ip !== undefined && !net.isIPv4(t.ip)) throw new UsageError(Codes.usage, `${t.name}: --ip ${t.ip} is not an IPv4 address`, { hint: "Give the node's IPv4 address on the cluster network." });
}

/** Joins the targets (each at once unless `order` says otherwise); one failure does not stop the others. */
export async function joinNodes(o: JoinOptions): Promise<JoinOutcome[]> {
  checkTargets(o.targets, o);
  const state = await o.site.read();
  if (!state) throw new UsageError(Codes.installMissing, 'this site has no state: no server recorded it', { hint: 'Run ferry join on a server where ferry install finished.' });
  const manifest = await bundleManifest(o.host);
  if (!manifest) throw new UsageError(Codes.installMissing, 'this machine has no unpacked bundle', { hint: 'Run ferry join on a server where ferry install finished.' });
  const targets = await resolveTargets(o.targets);
  const answers = state.answers;
  const ssh = { ...answers.ssh, ...o.ssh };
  const holder = o.holder ?? `${os.hostname()}/${process.pid}`;
  const args = { nodes: targets.map((t) => ({ name: t.name, host: t.host, role: t.role, ip: t.ip })) };
  const width = Math.max(...targets.map((h) => h.name.length));
  const sayFor = (name: string) => (l: string) => o.reporter.info(`${name.padEnd(width)}  ${l}`);

  return runOperation({ site: o.site, lease: o.lease, kind: 'join', args, holder, wait: o.wait, onWait: (h) => o.reporter.info(`waiting for the operation of ${h} to end`), complete: (rows) => rows.every((r) => r.ok) }, async (journal) => {
    /** Runs a step once per operation: skipped when the journal has it, recorded when it ends. */
    const step = async (key: string, fn: () => Promise<void>, say?: (l: string) => void) => {
      if (journal.has(key)) return void say?.(`${key.split('/')[1]}: done in an earlier run`);
      if (o.failAt === key) throw new InternalError(Codes.internal, `stopped before ${key}, as the test asked`);
      await fn();
      await journal.record(key);
    };
    const pending = targets.filter((t) => !journal.has(`${t.name}/node-join`));
    const creds = pending.length ? await credentials(o.host, pending.some((t) => t.role === 'server')) : undefined;
    const self = thisServer(state.nodes);
    // Every known server: a joining node's resolver and binary fetches must outlive any one of them.
    const serverIps = state.nodes.filter((n) => n.role === 'server').map((n) => n.ip);
    const common = {
      domain: answers.domain,
      fqdn: answers.clusterFqdn,
      serverIps,
      firstServerIp: self?.ip ?? serverIps[0] ?? '',
      registries: await bundleRegistries(o.host.p(BUNDLE_DIR)),
      pauseImage: pauseImageOf(manifest),
      ...(containerdVersionOf(manifest) ? { containerdVersion: containerdVersionOf(manifest) } : {}),
      kubernetesVersion: kubernetesVersionOf(manifest),
      serviceCidr: answers.serviceCidr,
      ...(answers.cgroupV1 ? { cgroupV1: answers.cgroupV1 as NodeJoinPayload['cgroupV1'] } : {}),
      ...(answers.ignoreKubeadmPreflight ? { ignoreKubeadmPreflight: answers.ignoreKubeadmPreflight } : {}),
      // Only the patches a joining node applies; the site's others (kube-proxy, init) are the first server's.
      patches: { ...(answers.patches?.kubelet ? { kubelet: answers.patches.kubelet } : {}), ...(answers.patches?.joinConfiguration ? { joinConfiguration: answers.patches.joinConfiguration } : {}) } as NodeJoinPayload['patches'],
      caCertHash: pending.length ? await caCertHash(o.host) : '',
    };
    const platforms = new Map<string, string>();

    const joinOne = async (t: JoinTarget & { ip: string }) => {
      const say = sayFor(t.name);
      say('connecting');
      const node = await connectNode(t, { ssh, confirmHostKey: o.confirmHostKey, remoteRoot: o.remoteRoot });
      try {
        platforms.set(t.name, `linux/${node.arch}`);
        await step(`${t.name}/upload`, () => upload(o, node, t, manifest, say), say);
        await step(`${t.name}/node-join`, () => nodeJoin(o, node, t, common, creds!, say), say);
      } finally {
        node.close();
      }
      // The CNI learns the node's IP now, before its pod there gives up on a missing default route.
      await step(`${t.name}/cni-node`, () => applyObjects(o.host.p(ADMIN_CONF), cniNodeObjects(answers.cni, { name: t.name, ip: t.ip }), (l) => o.reporter.verbose(l)), say);
      say('joined');
    };

    const rows = (await rollout(targets, { order: o.order ?? 'all', onFailure: 'continue', parallel: o.parallel }, async (t) => {
      const t0 = Date.now();
      try {
        await joinOne(t);
        return { name: t.name, host: t.host, role: t.role, ok: true, seconds: (Date.now() - t0) / 1000 } as JoinOutcome;
      } catch (e) {
        // The test's stop is ferry dying: nothing after it runs.
        if (e instanceof InternalError) throw e;
        const fe = e instanceof FerryError ? e : new RemoteError(Codes.joinFailed, (e as Error).message);
        sayFor(t.name)(`failed: ${o.host.redact(fe.message)}`);
        return { name: t.name, host: t.host, role: t.role, ok: false, seconds: (Date.now() - t0) / 1000, error: { code: fe.code, message: o.host.redact(fe.message), ...(fe.hint ? { hint: fe.hint } : {}) } } as JoinOutcome;
      }
    })).map((r) => {
      if (r.status === 'ok') return r.value;
      if (r.status === 'failed') throw r.error;
      return { name: r.node.name, host: r.node.host, role: r.node.role, ok: false, seconds: 0, error: { code: Codes.joinFailed, message: 'not started: an earlier node failed' } };
    });

    const joined = targets.filter((t) => rows.find((r) => r.name === t.name)?.ok);
    if (!joined.length) return rows;
    // The site steps are recorded only once every node joined: a re-run for the rest adds them too.
    const all = joined.length === targets.length;
    const siteStep = (key: string, fn: () => Promise<void>) => (all ? step(key, fn) : journal.has(key) ? Promise.resolve() : fn());
    await siteStep('site/membership', async () => {
      const at = new Date().toISOString();
      await o.site.update((s) => {
        for (const t of joined) {
          const rec: NodeRecord = { name: t.name, ip: t.ip, role: t.role, platform: platforms.get(t.name) ?? `linux/${manifest.platforms[0]?.split('/')[1] ?? 'amd64'}`, kubernetesVersion: kubernetesVersionOf(manifest), bundle: s.current, joinedAt: at };
          const i = s.nodes.findIndex((n) => n.name === t.name);
          if (i >= 0) s.nodes[i] = { ...rec, joinedAt: s.nodes[i]!.joinedAt };
          else s.nodes.push(rec);
        }
      });
    });
    await siteStep('site/bootstrap', async () => {
      // New nodes get DNS records; new servers become LB backends. The pods roll on the new ConfigMaps.
      const s = (await o.site.read()) as SiteState;
      const nodes = s.nodes.map((n) => ({ name: n.name, ip: n.ip, role: n.role }));
      o.reporter.info(`updating the site DNS records and LB backends for ${nodes.length} nodes`);
      // bootstrapValues reads only the domain, FQDN, records and upstream DNS, which the site's answers carry.
      if (o.applySite) return o.applySite(nodes);
      await applyBootstrap(o.host, bootstrapValues(s.answers as unknown as InstallAnswers, manifest, nodes), o.reporter, (l) => o.reporter.verbose(l), o.rolloutTimeoutMs ?? 300_000);
    });
    return rows;
  });
}

/** What a node needs before its plan runs: ferry and the runtime (once per digest), the site CA; for a server, the CA key, the bundle and its signer. */
async function upload(o: JoinOptions, node: RemoteNode, t: JoinTarget, manifest: NonNullable<Awaited<ReturnType<typeof bundleManifest>>>, say: (l: string) => void): Promise<void> {
  say('ensuring the runtime and ferry');
  const e = await ensureFerry(node, o.host, manifest);
  say(e.uploaded ? `uploaded the runtime and ferry (${e.uploaded} files, ${e.seconds.toFixed(1)}s)` : `the runtime and ferry are there (${e.digest.slice(0, 12)})`);
  const files: { local: string; remote: string; mode?: number }[] = [{ local: o.host.p(SITE_CA), remote: SITE_CA }];
  if (t.role === 'server') {
    say('uploading the bundle and the site CA key');
    const pub = o.host.p(BUNDLE_PUB);
    await fs.mkdir(path.dirname(pub), { recursive: true });
    await fs.writeFile(pub, manifest.signer.publicKey);
    files.push({ local: o.host.p(SITE_CA_KEY), remote: SITE_CA_KEY, mode: 0o600 }, { local: pub, remote: BUNDLE_PUB });
    // The site's backup key, so this server's backups open with the same key (a site from before it has none).
    if (await o.host.exists(BACKUP_KEY)) files.push({ local: o.host.p(BACKUP_KEY), remote: BACKUP_KEY, mode: 0o600 });
    // A split bundle travels as its parts beside the parts manifest.
    for (const f of [o.bundle!, ...(await partFiles(o.bundle!))]) files.push({ local: f, remote: `${INCOMING_DIR}/${path.basename(f)}` });
  }
  await uploadFiles(node, files);
}

async function nodeJoin(o: JoinOptions, node: RemoteNode, t: JoinTarget & { ip: string }, common: Omit<NodeJoinPayload, 'role' | 'name' | 'ip' | 'join'> & { caCertHash: string }, creds: { token: string; certificateKey?: string }, say: (l: string) => void): Promise<void> {
  const { caCertHash: hash, ...rest } = common;
  const payload: NodeJoinPayload = { ...rest, role: t.role, name: t.name, ip: t.ip, join: { token: creds.token, caCertHash: hash, ...(t.role === 'server' && creds.certificateKey ? { certificateKey: creds.certificateKey } : {}) } };
  const args = t.role === 'server' ? ['--bundle', node.p(`${INCOMING_DIR}/${path.basename(o.bundle!)}`), ...(o.allowDowngrade ? ['--allow-downgrade'] : [])] : [];
  say('running the join plan');
  // The node's warnings (cgroup v1) stay warnings here.
  const r = await runNodeOp(node, 'node-join', { args, payload, remotePath: o.remotePath, onLine: (l) => l.trim() && (l.startsWith('warning: ') ? o.reporter.warn(`${t.name}: ${o.host.redact(l.slice(9).trim())}`) : say(o.host.redact(l.trim()))) });
  if (r.code !== 0) {
    const last = o.host.redact(r.stderr.trim().split('\n').filter(Boolean).slice(-2).join(' / '));
    throw new RemoteError(Codes.joinFailed, `${t.name}: ${last || `exit ${r.code}`}`, { hint: `See /var/log/ferry/ on ${t.name}; fix the cause and run the same ferry join again: what finished is skipped.` });
  }
}

export function formatJoinTable(rows: JoinOutcome[]): string {
  const head = ['NODE', 'HOST', 'ROLE', 'RESULT', 'TIME'];
  const body = rows.map((r) => [r.name, r.host, r.role, r.ok ? 'joined' : `FAILED ${r.error?.code}`, `${r.seconds.toFixed(1)}s`]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  return [head, ...body].map((r) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd()).join('\n');
}
