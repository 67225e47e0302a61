import { createHash, X509Certificate } from 'node:crypto';
import { promises as fs, statfsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { x as untar } from 'tar';
import type { BundleManifest } from '../bundle/build.js';
import { unpackBundle } from '../bundle/unpack.js';
import type { VerifyOptions } from '../bundle/verify.js';
import { Codes, FerryError } from '../errors.js';
import { initPki } from '../sign/pki.js';
import { bundleKubernetesVersion } from '../spec/kubernetes.js';
import type { Reporter } from '../util/progress.js';
import { clusterFqdn, type InstallAnswers } from './answers.js';
import { checkCgroupV1, detectCgroups, type NodeCgroups } from './cgroups.js';
import { writeContainerdConfig } from './containerd.js';
import type { Host } from './host.js';
import { applySysctls, loadModules } from './kernel.js';
import { imageCheckStep } from './image-check.js';
import { API_PORT, renderKubeadmInit } from './kubeadm.js';
import { BOOTSTRAP_NAMESPACE, bundledBootstrapChart, renderBootstrap, type BootstrapNode, type BootstrapValues } from './bootstrap.js';
import { mayLowerOomScore } from './capabilities.js';
import { cniNodeObjects } from './cni.js';
import { serviceRouteStep } from './routes.js';
import { applyObjects, clusterNotReady, listDaemonSets, waitForClusterReady, waitForDaemonSets } from './kube.js';
import type { KubernetesObject } from '@kubernetes/client-node';
import type { Step } from './plan.js';
import { CONTAINERD_UNIT, containerdConfig, containerdConfigVersion, hostsWithBlock, KUBELET_KUBEADM_DROPIN, KUBELET_UNIT, MODULES_CONF, SITE_PORT, SYSCTL_CONF } from './system-files.js';
import { FERRY_ROOT, renderServeUnit } from './units.js';

export const BUNDLE_DIR = `${FERRY_ROOT}/bundle`;
export const PKI_DIR = '/etc/ferry/pki';
export const KUBEADM_CONFIG = '/etc/ferry/kubeadm.yaml';
export const ADMIN_CONF = '/etc/kubernetes/admin.conf';
const STATE = `${FERRY_ROOT}/state`;

export const NODES_FILE = '/etc/ferry/nodes.json';

/** The nodes of the cluster as ferry knows them: what the DNS records and LB backends list. */
export async function clusterNodes(host: Host, answers: InstallAnswers): Promise<BootstrapNode[]> {
  const t = await host.read(NODES_FILE);
  const known = t ? (JSON.parse(t) as BootstrapNode[]) : [];
  const self: BootstrapNode = { name: answers.node.name, ip: answers.node.ip, role: 'server' };
  return [self, ...known.filter((n) => n.name !== self.name)];
}

export async function saveClusterNodes(host: Host, nodes: BootstrapNode[]): Promise<void> {
  await host.write(NODES_FILE, `${JSON.stringify(nodes, null, 2)}\n`);
}

/** Values for the bootstrap chart from the answers, the bundle's images and the known nodes. */
export function bootstrapValues(answers: InstallAnswers, manifest: BundleManifest, nodes: BootstrapNode[]): BootstrapValues {
  const img = (re: RegExp) => manifest.images.find((i) => re.test(i.ref))?.ref;
  const coredns = img(/\/coredns(\/coredns)?:/);
  const haproxy = img(/\/haproxy:/);
  return {
    domain: answers.domain,
    clusterFqdn: clusterFqdn(answers),
    nodes,
    records: answers.records ?? [],
    ...(coredns || haproxy ? { images: { ...(coredns ? { coredns } : {}), ...(haproxy ? { haproxy } : {}) } } : {}),
  };
}

/** Applies the DNS and LB DaemonSets (server-side apply) and waits for them to roll out. */
export async function applyBootstrap(host: Host, values: BootstrapValues, reporter: Reporter, log: (l: string) => void, timeoutMs: number): Promise<void> {
  const objects = await renderBootstrap(values, await bundledBootstrapChart(host, await bundleManifest(host), (d) => chartBlob(host, d)), host);
  const kubeconfig = host.p(ADMIN_CONF);
  await applyObjects(kubeconfig, objects as KubernetesObject[], log);
  const sets = objects.filter((o) => o.kind === 'DaemonSet').map((o) => ({ namespace: o.metadata.namespace ?? BOOTSTRAP_NAMESPACE, name: o.metadata.name }));
  await waitForDaemonSets(kubeconfig, sets, { timeoutMs, reporter });
  log(`rolled out ${sets.map((x) => x.name).join(', ')}`);
}

export interface InstallContext {
  host: Host;
  bundle: string;
  answers: InstallAnswers;
  verify: VerifyOptions;
  reporter: Reporter;
  /** Preflight checks to skip by name (root, arch, swap, ports, disk, clock). */
  ignorePreflight?: string[];
  rolloutTimeoutMs?: number;
}

/** A step whose completion is a marker recording what it was applied with. */
function markerStep(ctx: InstallContext, id: string, title: string, fingerprint: () => Promise<string>, apply: (log: (l: string) => void) => Promise<void>): Step {
  const marker = `${STATE}/${id}`;
  return {
    id,
    title,
    check: async () => (await ctx.host.read(marker)) === (await fingerprint()),
    apply: async (log) => {
      await apply(log);
      await ctx.host.write(marker, await fingerprint());
    },
  };
}

/** The version of the bundle's containerd (files[name=containerd]), which picks its config version. */
export const containerdVersionOf = (m: Pick<BundleManifest, 'files'>) => m.files.find((f) => f.name === 'containerd')?.version;

/** The Kubernetes release a bundle installs. */
export const kubernetesVersionOf = (m: Pick<BundleManifest, 'kubernetes'>) => bundleKubernetesVersion(m);

export async function bundleManifest(host: Host): Promise<BundleManifest | undefined> {
  const t = await host.read(`${BUNDLE_DIR}/bundle.json`);
  return t ? (JSON.parse(t) as BundleManifest) : undefined;
}

/** This machine's architecture as the bundle names platforms (linux/<arch>). */
export const archOf = () => ({ x64: 'amd64', arm64: 'arm64' })[os.arch() as 'x64' | 'arm64'] ?? os.arch();

/** Checks ferry cannot fix by itself, each with what to do. */
export async function preflight(ctx: InstallContext, manifest: Pick<BundleManifest, 'platforms' | 'contentSize' | 'created'>): Promise<string[]> {
  const skip = new Set(ctx.ignorePreflight ?? []);
  const problems: string[] = [];
  const add = (name: string, msg: string) => !skip.has(name) && problems.push(`${name}: ${msg}`);
  if (process.getuid?.() !== 0) add('root', 'ferry install must run as root (sudo sh install.sh …)');
  const arch = `linux/${archOf()}`;
  if (!manifest.platforms.includes(arch)) add('arch', `this machine is ${arch}, the bundle carries ${manifest.platforms.join(', ')}`);
  const swaps = (await fs.readFile('/proc/swaps', 'utf8').catch(() => '')).trim().split('\n').slice(1).filter(Boolean);
  if (swaps.length) add('swap', `swap is on (${swaps.map((l) => l.split(/\s+/)[0]).join(', ')}); kubelet needs it off: swapoff -a, and remove it from /etc/fstab`);
  // Once ferry has started its services (a re-run after a failure), the ports are ours.
  if (!(await ctx.host.read(ADMIN_CONF)) && !(await ctx.host.read(`${STATE}/services`))) {
    for (const port of [API_PORT, 10250, 10257, 10259, 2379, 2380, SITE_PORT]) {
      const free = await new Promise<boolean>((resolve) => {
        const s = net.createServer();
        s.once('error', () => resolve(false));
        s.listen(port, ctx.answers.node.ip, () => s.close(() => resolve(true)));
      });
      if (!free) add('ports', `port ${port} on ${ctx.answers.node.ip} is in use; stop what holds it (ss -ltnp 'sport = :${port}')`);
    }
  }
  try {
    const dir = ctx.host.p('/var/lib');
    await fs.mkdir(dir, { recursive: true });
    const st = statfsSync(dir);
    const free = Number(st.bavail) * Number(st.bsize);
    const need = manifest.contentSize * 2 + 2 * 1024 ** 3;
    if (free < need) add('disk', `${dir} has ${(free / 1024 ** 3).toFixed(1)} GiB free; the bundle and the images unpacked need about ${(need / 1024 ** 3).toFixed(1)} GiB`);
  } catch {
    /* not a filesystem we can measure */
  }
  if (Date.now() < Date.parse(manifest.created) - 5 * 60_000) add('clock', `the clock says ${new Date().toISOString()}, before the bundle was made (${manifest.created}); set the time (certificates depend on it)`);
  return problems;
}

/** Installs the bundle's binaries: plain files to /usr/local/bin, archives unpacked (executables flattened; CNI plugins to /opt/cni/bin). */
export async function installBinaries(host: Host, bundleDir: string, manifest: BundleManifest, log: (l: string) => void): Promise<void> {
  const arch = `linux/${archOf()}`;
  for (const f of manifest.files.filter((x) => x.platform === arch)) {
    const src = path.join(bundleDir, f.path);
    if (!f.archive) {
      const dest = f.name === 'runc' ? '/usr/local/sbin/runc' : `/usr/local/bin/${f.name}`;
      await fs.mkdir(path.dirname(host.p(dest)), { recursive: true });
      await fs.copyFile(src, `${host.p(dest)}.ferry-new`);
      await fs.chmod(`${host.p(dest)}.ferry-new`, 0o755);
      await fs.rename(`${host.p(dest)}.ferry-new`, host.p(dest));
      log(`installed ${dest} (${f.name} ${f.version})`);
      continue;
    }
    const cni = f.name === 'cni-plugins';
    const destDir = host.p(cni ? '/opt/cni/bin' : '/usr/local/bin');
    await fs.mkdir(destDir, { recursive: true });
    await untar({
      file: src,
      cwd: destDir,
      // Only regular executables, flattened to their names: archives differ in their layout.
      filter: (p, e) => (e as { type?: string }).type === 'File' && ((e as { mode?: number }).mode ?? 0) & 0o111 ? true : false,
      strip: 0,
      onReadEntry: (e) => {
        e.path = path.basename(e.path);
      },
    } as Parameters<typeof untar>[0]);
    log(`unpacked ${f.name} ${f.version} into ${cni ? '/opt/cni/bin' : '/usr/local/bin'}`);
  }
}

/** The steps of the first server, in order. */
export function firstServerSteps(ctx: InstallContext): Step[] {
  const { host, answers } = ctx;
  const fqdn = clusterFqdn(answers);
  const registry = `registry.${answers.domain}`;
  const manifestOf = async () => {
    const m = await bundleManifest(host);
    if (!m) throw new FerryError(Codes.installStep, 'the bundle is not unpacked', { exit: 'io', hint: 'Re-run ferry install; it unpacks the bundle first.' });
    return m;
  };
  const bundleId = async () => (await host.read(`${BUNDLE_DIR}/checksums.txt`)) ?? 'none';
  let cgroupsP: Promise<NodeCgroups> | undefined;
  const cgroups = () => (cgroupsP ??= detectCgroups(host));
  const kubeadmConfig = async () => {
    const m = await manifestOf();
    return renderKubeadmInit({ answers, kubernetesVersion: kubernetesVersionOf(m), imageRepository: m.kubernetes?.imageRepository, cgroups: await cgroups() });
  };
  return [
    {
      id: 'preflight',
      title: 'check this machine (root, arch, swap, ports, disk, clock, cgroups)',
      always: true,
      check: async () => false,
      apply: async (log) => {
        const { readBundleManifest } = await import('../bundle/inspect.js');
        const m = await readBundleManifest(ctx.bundle);
        const problems = await preflight(ctx, m);
        if (problems.length) {
          throw new FerryError(Codes.preflight, `this machine is not ready:\n  ${problems.join('\n  ')}`, {
            exit: 'usage',
            hint: 'Fix each problem, or skip a check you accept with --ignore-preflight NAME (e.g. --ignore-preflight swap).',
          });
        }
        const cg = await cgroups();
        checkCgroupV1(cg, answers.cgroupV1, kubernetesVersionOf(m), ctx.reporter, answers.node.name);
        log(`preflight passed (cgroup v${cg.version})`);
      },
    },
    {
      id: 'unpack',
      title: `verify and unpack the bundle into ${BUNDLE_DIR}`,
      check: async () => {
        const { readBundleManifest } = await import('../bundle/inspect.js');
        const want = await readBundleManifest(ctx.bundle).catch(() => undefined);
        const have = await bundleManifest(host);
        return !!want && !!have && JSON.stringify(want) === JSON.stringify(have);
      },
      apply: async (log) => {
        const r = await unpackBundle(ctx.bundle, host.p(BUNDLE_DIR), { ...ctx.verify, force: true });
        log(`unpacked ${r.manifest.name} ${r.manifest.version}: ${r.entries} entries, signed by ${r.fingerprint}`);
      },
    },
    markerStep(ctx, 'binaries', 'install kubeadm, kubelet, kubectl, containerd, runc, CNI plugins, crictl, helm', bundleId, async (log) => {
      const m = await manifestOf();
      await installBinaries(host, host.p(BUNDLE_DIR), m, log);
      // The runtime and ferry itself, for the site service unit and for joining nodes.
      const rt = m.runtime.find((r) => r.platform === `linux/${archOf()}`);
      if (rt) {
        await fs.mkdir(host.p(`${FERRY_ROOT}/runtime`), { recursive: true });
        await fs.copyFile(host.p(`${BUNDLE_DIR}/${rt.path}`), host.p(`${FERRY_ROOT}/runtime/node`));
        await fs.chmod(host.p(`${FERRY_ROOT}/runtime/node`), 0o755);
      }
      await fs.rm(host.p(`${FERRY_ROOT}/ferry`), { recursive: true, force: true });
      await fs.cp(host.p(`${BUNDLE_DIR}/ferry`), host.p(`${FERRY_ROOT}/ferry`), { recursive: true });
    }),
    markerStep(ctx, 'kernel', 'load kernel modules and set sysctls for Kubernetes networking', async () => MODULES_CONF + SYSCTL_CONF, async (log) => {
      await loadModules(host, log);
      await applySysctls(host, log);
    }),
    serviceRouteStep(host, answers.serviceCidr, answers.node.ip),
    markerStep(ctx, 'pki', `site CA and the certificate for ${registry}`, async () => `${answers.domain} ${answers.node.ip}`, async (log) => {
      const r = await initPki({ domain: answers.domain, ips: [answers.node.ip], outDir: host.p(PKI_DIR) });
      log(`site CA ${r.caReused ? 'kept' : 'created'} (${r.caFingerprint}); registry certificate ${r.serverCert}`);
    }),
    markerStep(ctx, 'hosts', `map ${fqdn} and ${registry} to this server in /etc/hosts`, async () => `${fqdn} ${registry} ${answers.node.ip}`, async (log) => {
      const cur = (await host.read('/etc/hosts')) ?? '127.0.0.1\tlocalhost\n';
      await host.write('/etc/hosts', hostsWithBlock(cur, [{ ip: answers.node.ip, names: [fqdn, registry, `${answers.node.name}.${answers.domain}`, answers.node.name] }]));
      log(`/etc/hosts: ${fqdn} → ${answers.node.ip}`);
    }),
    markerStep(ctx, 'containerd-config', "configure containerd: the node's cgroup driver, mirrors to the site service only", async () => `${await bundleId()} ${(await cgroups()).driver}`, async (log) => {
      const m = await manifestOf();
      const pause = m.images.find((i) => /\/pause:/.test(i.ref))?.ref ?? 'registry.k8s.io/pause:3.10';
      const { driver } = await cgroups();
      const configVersion = containerdConfigVersion(containerdVersionOf(m));
      const restrictOomScoreAdj = !(await mayLowerOomScore());
      if (restrictOomScoreAdj) ctx.reporter.warn(`${answers.node.name} denies CAP_SYS_RESOURCE (a container or sandbox?): containerd will keep pods' OOM scores at or above its own (restrict_oom_score_adj)`);
      await host.write('/etc/containerd/config.toml', containerdConfig({ pauseImage: pause, cgroupDriver: driver, configVersion, restrictOomScoreAdj }));
      log(`config.toml: version ${configVersion} for containerd ${containerdVersionOf(m) ?? '(not in the bundle)'}, ${driver} cgroup driver${restrictOomScoreAdj ? ', OOM scores restricted' : ''}`);
      const r = await writeContainerdConfig({ bundleDir: host.p(BUNDLE_DIR), mirrors: [`https://${registry}:${SITE_PORT}`], caFile: `${PKI_DIR}/ca.crt`, outDir: host.p('/etc/containerd'), configPath: '/etc/containerd/certs.d' });
      log(`hosts.toml for ${r.registries.join(', ')}`);
    }),
    markerStep(ctx, 'units', 'install systemd units for containerd, kubelet and the site service', async () => `${answers.node.ip}`, async (log) => {
      await host.write('/etc/systemd/system/containerd.service', CONTAINERD_UNIT);
      await host.write('/etc/systemd/system/kubelet.service', KUBELET_UNIT);
      await host.write('/etc/systemd/system/kubelet.service.d/10-kubeadm.conf', KUBELET_KUBEADM_DROPIN);
      await host.write('/etc/systemd/system/ferry-serve.service', renderServeUnit({ listen: `0.0.0.0:${SITE_PORT}`, tlsCert: `${PKI_DIR}/registry.crt`, tlsKey: `${PKI_DIR}/registry.key` }));
      await host.run('systemctl', ['daemon-reload']);
      await host.run('systemctl', ['enable', 'containerd.service', 'kubelet.service', 'ferry-serve.service']);
      log('units written and enabled');
    }),
    markerStep(ctx, 'services', 'start containerd and the site service', async () => 'started', async (log) => {
      await host.run('systemctl', ['restart', 'ferry-serve.service']);
      await host.run('systemctl', ['restart', 'containerd.service']);
      log('containerd and ferry-serve started');
    }),
    markerStep(ctx, 'kubeadm-config', `write ${KUBEADM_CONFIG}`, kubeadmConfig, async (log) => {
      await host.write(KUBEADM_CONFIG, await kubeadmConfig(), 0o600);
      log(`kubeadm config for Kubernetes ${kubernetesVersionOf(await manifestOf())}, endpoint ${fqdn}:${API_PORT}`);
    }),
    imageCheckStep(host, answers, { kubeadmConfig: KUBEADM_CONFIG, manifest: manifestOf, chartTgz: (d) => chartBlob(host, d), bootstrapValues: async () => bootstrapValues(answers, await manifestOf(), await clusterNodes(host, answers)), bundleId }),
    {
      id: 'kubeadm-init',
      title: `kubeadm init (control plane behind ${fqdn}:${API_PORT})`,
      check: async () => !!(await host.read(ADMIN_CONF)),
      apply: async (log) => {
        const r = await host.run('kubeadm', ['init', '--config', KUBEADM_CONFIG, '--upload-certs'], { timeoutMs: 15 * 60_000 });
        log(r.stdout.split('\n').filter((l) => /initialized|Your Kubernetes/.test(l)).join(' ') || 'kubeadm init done');
      },
    },
    markerStep(ctx, 'cni', `apply the CNI${answers.cni ? ` (${answers.cni})` : ''} from the bundle`, async () => `${answers.cni ?? 'none'} ${answers.podCidr}`, async (log) => {
      const m = await manifestOf();
      const chart = answers.cni ? m.charts.find((c) => c.name === answers.cni) : undefined;
      if (!answers.cni) return log('no CNI chosen: none in the bundle; apply one before pods can run');
      if (!chart) throw new FerryError(Codes.installStep, `the bundle carries no chart named ${answers.cni}`, { exit: 'usage', hint: `Choose one of: ${m.charts.map((c) => c.name).join(', ') || '(none)'}.` });
      const tgz = await chartBlob(host, chart.digest);
      await applyObjects(host.p(ADMIN_CONF), cniNodeObjects(answers.cni, answers.node), log);
      const ns = answers.cni === 'flannel' ? 'kube-flannel' : 'kube-system';
      await host.run('helm', ['upgrade', '--install', answers.cni, tgz, '--namespace', ns, '--create-namespace', '--kubeconfig', host.p(ADMIN_CONF), '--set', `podCidr=${answers.podCidr}`, '--wait', '--timeout', '10m']);
      // helm --wait lets a DaemonSet be maxUnavailable short: on one node, that is all of it.
      const sets = (await listDaemonSets(host.p(ADMIN_CONF), ns)).map((name) => ({ namespace: ns, name }));
      await waitForDaemonSets(host.p(ADMIN_CONF), sets, { timeoutMs: ctx.rolloutTimeoutMs ?? 300_000, reporter: ctx.reporter });
      log(`${answers.cni} ${chart.version} installed in ${ns}; ${sets.map((x) => x.name).join(', ')} ready`);
    }),
    markerStep(ctx, 'bootstrap', 'apply the DNS and load-balancer DaemonSets (ferry-bootstrap) and wait for them', async () => {
      const m = await manifestOf();
      return JSON.stringify(bootstrapValues(answers, m, await clusterNodes(host, answers)));
    }, async (log) => {
      const m = await manifestOf();
      const nodes = await clusterNodes(host, answers);
      await saveClusterNodes(host, nodes);
      await applyBootstrap(host, bootstrapValues(answers, m, nodes), ctx.reporter, log, ctx.rolloutTimeoutMs ?? 300_000);
    }),
    {
      id: 'ready',
      title: `wait until ${answers.node.name} is Ready and kube-system's Deployments (CoreDNS) are available`,
      check: async () => !!(await host.read(ADMIN_CONF)) && (await clusterNotReady(host.p(ADMIN_CONF), answers.node.name).catch(() => ['unknown'])).length === 0,
      apply: async (log) => {
        await waitForClusterReady(host.p(ADMIN_CONF), answers.node.name, { timeoutMs: ctx.rolloutTimeoutMs ?? 300_000, reporter: ctx.reporter });
        log(`${answers.node.name} Ready; kube-system Deployments available`);
      },
    },
  ];
}

/** The chart .tgz of a chart manifest in the unpacked store. */
async function chartBlob(host: Host, manifestDigest: string): Promise<string> {
  const blobs = host.p(`${BUNDLE_DIR}/images/blobs/sha256`);
  const man = JSON.parse(await fs.readFile(path.join(blobs, manifestDigest.slice(7)), 'utf8')) as { layers: { mediaType: string; digest: string }[] };
  const layer = man.layers.find((l) => l.mediaType === 'application/vnd.cncf.helm.chart.content.v1.tar+gzip');
  if (!layer) throw new FerryError(Codes.installStep, `manifest ${manifestDigest} is not a Helm chart`, { exit: 'integrity' });
  // helm wants a chart archive by its usual name; the store names blobs by digest only.
  const tgz = host.p(`${FERRY_ROOT}/charts/${layer.digest.slice(7, 19)}.tgz`);
  await fs.mkdir(path.dirname(tgz), { recursive: true });
  await fs.copyFile(path.join(blobs, layer.digest.slice(7)), tgz);
  return tgz;
}

/** sha256:<hex> of the cluster CA's public key, the form --discovery-token-ca-cert-hash takes. */
export async function caCertHash(host: Host): Promise<string> {
  const pem = await host.read('/etc/kubernetes/pki/ca.crt');
  if (!pem) throw new FerryError(Codes.joinFailed, 'the cluster CA /etc/kubernetes/pki/ca.crt is missing', { exit: 'io', hint: 'Run ferry join on a server where ferry install finished.' });
  const spki = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
  return `sha256:${createHash('sha256').update(spki).digest('hex')}`;
}

