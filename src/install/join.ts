import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { partFiles, QUIET_DEPRECATIONS } from '../bundle/format.js';
import { Codes, FerryError, RemoteError, UsageError } from '../errors.js';
import { archOfUname } from '../util/platform.js';
import type { Reporter } from '../util/progress.js';
import { shQuote as sq } from '../util/shell.js';
import { checkAnswers, clusterFqdn, type InstallAnswers, type JoinHost } from './answers.js';
import { applyBootstrap, bootstrapValues, bundleManifest, caCertHash, clusterNodes, containerdVersionOf, ensureSiteState, kubernetesVersionOf, nodeRecord, pauseImageOf, siteOf } from './cluster.js';
import { addNodes } from '../cluster/site.js';
import { cniNodeObjects } from './cni.js';
import { bundleRegistries } from './containerd.js';
import type { Host } from './host.js';
import { applyObjects } from '../kube/client.js';
import { TOKEN_RE } from './kubeadm.js';
import type { NodeJoinPayload } from './node-join.js';
import { ADMIN_CONF, BUNDLE_DIR, BUNDLE_PUB, FERRY_DIR, FERRY_MJS, INCOMING_DIR, KUBEADM_CONFIG, RUNTIME_NODE, SITE_CA, SITE_CA_KEY } from './paths.js';
import { SshSession, type SshTarget } from './ssh.js';

export interface JoinOptions {
  host: Host;
  answers: InstallAnswers;
  /** The bundle file, uploaded to joining servers so they verify and serve it too. */
  bundle?: string;
  reporter: Reporter;
  confirmHostKey: (host: string, fingerprint: string) => Promise<boolean>;
  /** For tests and image builds: the root prefix on each remote host ({name} is replaced). */
  remoteRoot?: string;
  /** For tests: directories put first on the remote PATH (stand-ins). */
  remotePath?: string;
  only?: string[];
  rolloutTimeoutMs?: number;
  /** Let a joining server's uploaded bundle replace a newer one unpacked there (node-join --allow-downgrade). */
  allowDowngrade?: boolean;
}

export interface JoinOutcome {
  name: string;
  host: string;
  role: string;
  ok: boolean;
  seconds: number;
  error?: { code: string; message: string; hint?: string };
}

/** Files below a directory, relative, sorted. */
async function listFiles(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(path.join(dir, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await listFiles(dir, r)));
    else if (e.isFile()) out.push(r);
  }
  return out.sort();
}

/** A join host's address in the cluster: checkAnswers resolved any host name into ip. */
const nodeIp = (j: JoinHost) => j.ip ?? j.host;
const expandHome = (p: string) => (p.startsWith('~/') ? path.join(os.homedir(), p.slice(2)) : p);

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

/** Joins one host; returns its platform (linux/<arch>). */
async function joinOne(o: JoinOptions, j: JoinHost, common: Omit<NodeJoinPayload, 'role' | 'name' | 'ip'>, say: (l: string) => void): Promise<string> {
  const ssh = o.answers.ssh ?? {};
  const target: SshTarget = {
    host: j.host,
    port: ssh.port ?? 22,
    user: ssh.user ?? 'root',
    identityFile: expandHome(ssh.identityFile ?? '~/.ssh/id_ed25519'),
    knownHosts: expandHome(ssh.knownHosts ?? '~/.ssh/known_hosts'),
    confirmUnknown: o.confirmHostKey,
  };
  say('connecting');
  const s = await SshSession.connect(target);
  try {
    const root = o.remoteRoot ? o.remoteRoot.replaceAll('{name}', j.name) : '/';
    const rp = (p: string) => path.posix.join(root, p);
    const uname = await s.exec('uname -m');
    const arch = archOfUname(uname.stdout);
    const manifest = (await bundleManifest(o.host))!;
    const rt = manifest.runtime.find((r) => r.platform === `linux/${arch}`);
    if (!rt) throw new UsageError(Codes.platformUnsupported, `${j.name} is ${uname.stdout.trim()}; the bundle has no runtime for it`, { hint: `The bundle carries ${manifest.platforms.join(', ')}.` });
    say('uploading the runtime and ferry');
    await s.upload(o.host.p(`${BUNDLE_DIR}/${rt.path}`), rp(RUNTIME_NODE), 0o755);
    for (const f of await listFiles(o.host.p(`${BUNDLE_DIR}/ferry`))) await s.upload(o.host.p(`${BUNDLE_DIR}/ferry/${f}`), rp(`${FERRY_DIR}/${f}`));
    await s.upload(o.host.p(SITE_CA), rp(SITE_CA));
    let bundleArg = '';
    if (j.role === 'server') {
      if (!o.bundle) throw new UsageError(Codes.usage, `joining server ${j.name} needs the bundle file`, { hint: 'Pass --bundle FILE to ferry join.' });
      say('uploading the bundle and the site CA key');
      await s.upload(o.host.p(SITE_CA_KEY), rp(SITE_CA_KEY), 0o600);
      const pub = o.host.p(BUNDLE_PUB);
      await fs.mkdir(path.dirname(pub), { recursive: true });
      await fs.writeFile(pub, manifest.signer.publicKey);
      await s.upload(pub, rp(BUNDLE_PUB));
      const remoteBundle = rp(`${INCOMING_DIR}/${path.basename(o.bundle)}`);
      await s.upload(o.bundle, remoteBundle);
      // A split bundle travels as its parts beside the parts manifest.
      for (const part of await partFiles(o.bundle)) await s.upload(part, rp(`${INCOMING_DIR}/${path.basename(part)}`));
      bundleArg = ` --bundle ${sq(remoteBundle)}${o.allowDowngrade ? ' --allow-downgrade' : ''}`;
    }
    const payload: NodeJoinPayload = { ...common, role: j.role, name: j.name, ip: nodeIp(j) };
    const env = o.remotePath ? `PATH=${sq(o.remotePath)}:"$PATH" ` : '';
    const cmd = `${env}${sq(rp(RUNTIME_NODE))} ${QUIET_DEPRECATIONS.join(' ')} ${sq(rp(FERRY_MJS))} node-join --root ${sq(root)}${bundleArg}`;
    say('running the join plan');
    // The node's warnings (cgroup v1) stay warnings here.
    const r = await s.exec(cmd, { input: JSON.stringify(payload), onLine: (l) => l.trim() && (l.startsWith('warning: ') ? o.reporter.warn(`${j.name}: ${o.host.redact(l.slice(9).trim())}`) : say(o.host.redact(l.trim()))) });
    if (r.code !== 0) {
      const last = o.host.redact(r.stderr.trim().split('\n').filter(Boolean).slice(-2).join(' / '));
      throw new RemoteError(Codes.joinFailed, `${j.name}: ${last || `exit ${r.code}`}`, { hint: `See /var/log/ferry/ on ${j.name}; fix the cause and run ferry join again for it (--only ${j.name}).` });
    }
    return rt.platform;
  } finally {
    s.close();
  }
}

/** Joins every host of the answers in parallel; one failure does not stop the others. */
export async function joinNodes(opts: JoinOptions): Promise<JoinOutcome[]> {
  // Hosts asked for on a terminal have not been through loadAnswers: checked and resolved here.
  const o = { ...opts, answers: await checkAnswers(opts.answers, 'the answers with the hosts to join are not valid') };
  const hosts = (o.answers.join ?? []).filter((j) => !o.only?.length || o.only.includes(j.name));
  if (!hosts.length) throw new UsageError(Codes.usage, 'there are no hosts to join', { hint: 'List them under join: in the answers file (host, name, role).' });
  const manifest = await bundleManifest(o.host);
  if (!manifest) throw new UsageError(Codes.installMissing, 'this machine has no unpacked bundle', { hint: 'Run ferry join on a server where ferry install finished.' });
  const creds = await credentials(o.host, hosts.some((h) => h.role === 'server'));
  // Every known server: a joining node's resolver and binary fetches must outlive any one of them.
  const serverIps = (await clusterNodes(o.host, o.answers, o.reporter)).filter((n) => n.role === 'server').map((n) => n.ip);
  const common = {
    domain: o.answers.domain,
    fqdn: clusterFqdn(o.answers),
    serverIps,
    firstServerIp: o.answers.node.ip,
    registries: await bundleRegistries(o.host.p(BUNDLE_DIR)),
    pauseImage: pauseImageOf(manifest),
    containerdVersion: containerdVersionOf(manifest),
    kubernetesVersion: kubernetesVersionOf(manifest),
    serviceCidr: o.answers.serviceCidr,
    ...(o.answers.cgroupV1 ? { cgroupV1: o.answers.cgroupV1 } : {}),
    ...(o.answers.ignoreKubeadmPreflight ? { ignoreKubeadmPreflight: o.answers.ignoreKubeadmPreflight } : {}),
    patches: { kubelet: o.answers.patches?.kubelet, joinConfiguration: o.answers.patches?.joinConfiguration },
    join: { token: creds.token, caCertHash: await caCertHash(o.host), ...(creds.certificateKey ? { certificateKey: creds.certificateKey } : {}) },
  };
  const width = Math.max(...hosts.map((h) => h.name.length));
  const platforms = new Map<string, string>();
  const rows = await Promise.all(
    hosts.map(async (j) => {
      const t0 = Date.now();
      const say = (l: string) => o.reporter.info(`${j.name.padEnd(width)}  ${l}`);
      try {
        platforms.set(j.name, await joinOne(o, j, { ...common, join: { ...common.join, ...(j.role === 'agent' ? { certificateKey: undefined } : {}) } }, say));
        // The CNI learns the node's IP now, before its pod there gives up on a missing default route.
        await applyObjects(o.host.p(ADMIN_CONF), cniNodeObjects(o.answers.cni, { name: j.name, ip: nodeIp(j) }), (l) => o.reporter.verbose(l));
        say('joined');
        return { name: j.name, host: j.host, role: j.role, ok: true, seconds: (Date.now() - t0) / 1000 };
      } catch (e) {
        const fe = e instanceof FerryError ? e : new RemoteError(Codes.joinFailed, (e as Error).message);
        say(`failed: ${o.host.redact(fe.message)}`);
        return { name: j.name, host: j.host, role: j.role, ok: false, seconds: (Date.now() - t0) / 1000, error: { code: fe.code, message: o.host.redact(fe.message), hint: fe.hint } } as JoinOutcome;
      }
    }),
  );
  const joined = hosts.filter((h) => rows.find((r) => r.name === h.name)?.ok);
  if (joined.length) {
    // New nodes get DNS records; new servers become LB backends. The pods roll on the new ConfigMaps.
    // Recorded in the site state by compare-and-swap: a join from another server at once keeps its nodes too.
    await ensureSiteState(o.host, o.answers, manifest, o.reporter);
    await addNodes(siteOf(o.host, o.reporter), joined.map((h) => nodeRecord({ name: h.name, ip: nodeIp(h), role: h.role }, manifest, platforms.get(h.name) ?? 'unknown')));
    const nodes = await clusterNodes(o.host, o.answers, o.reporter);
    o.reporter.info(`updating the site DNS records and LB backends for ${nodes.length} nodes`);
    await applyBootstrap(o.host, bootstrapValues(o.answers, manifest, nodes), o.reporter, (l) => o.reporter.verbose(l), o.rolloutTimeoutMs ?? 300_000);
  }
  return rows;
}

export function formatJoinTable(rows: JoinOutcome[]): string {
  const head = ['NODE', 'HOST', 'ROLE', 'RESULT', 'TIME'];
  const body = rows.map((r) => [r.name, r.host, r.role, r.ok ? 'joined' : `FAILED ${r.error?.code}`, `${r.seconds.toFixed(1)}s`]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  return [head, ...body].map((r) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd()).join('\n');
}
