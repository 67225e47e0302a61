import { STATE_CONFIGMAP, STATE_NAMESPACE } from '../cluster/state.js';
import type { BundleManifest } from '../bundle/format.js';
import { readBundleManifest } from '../bundle/inspect.js';
import type { VerifyOptions } from '../bundle/verify.js';
import { Codes, HostError, UsageError } from '../errors.js';
import { initPki } from '../sign/pki.js';
import type { Reporter } from '../util/progress.js';
import { clusterFqdn, registryFqdn, type InstallAnswers } from './answers.js';
import { cgroupsOnce, checkCgroupV1, type NodeCgroups } from './cgroups.js';
import { applyBootstrap, bootstrapValues, bundleManifest, chartBlob, clusterNodes, containerdVersionOf, ensureSiteState, kubernetesVersionOf, pauseImageOf, siteOf } from './cluster.js';
import { BOOTSTRAP_CHART } from './bootstrap.js';
import { cniNodeObjects } from './cni.js';
import { registriesInIndex, writeContainerdConfig } from './containerd.js';
import type { Host } from './host.js';
import { imageCheckStep } from './image-check.js';
import { writeLauncher } from './launcher.js';
import { renderKubeadmInit } from './kubeadm.js';
import { archOf, carriedBinaries, installBinaries, installUnits, kernelStep, mapHosts, markerStep, resolverStep, resolversHad, serverHostNames, siteServiceUrl, writeContainerdToml } from './node-steps.js';
import { ADMIN_CONF, API_PORT, BUNDLE_DIR, CONTAINERD_DIR, CONTAINERD_CERTS_D, CONTROL_PLANE_PORTS, FERRY_DIR, FERRY_ROOT, KUBEADM_CONFIG, PKI_DIR, RUNTIME_DIR, RUNTIME_NODE, SITE_CA, SITE_PORT, STATE_DIR, STORE_DIR } from './paths.js';
import type { Step } from './plan.js';
import { preflight } from './preflight.js';
import { CERTS_TIMER, STATE_MIRROR_TIMER } from './units.js';
import { backupTimerStep } from './backup-timer.js';
import { serviceRouteStep } from './routes.js';
import { addAndUse } from './site-store.js';

export interface InstallContext {
  host: Host;
  bundle: string;
  answers: InstallAnswers;
  verify: VerifyOptions;
  reporter: Reporter;
  /** Preflight checks to skip by name (root, arch, swap, ports, disk, clock). */
  ignorePreflight?: string[];
  rolloutTimeoutMs?: number;
  /** Let an older bundle replace the unpacked one (--allow-downgrade). */
  allowDowngrade?: boolean;
  /** Let a bundle signed by another key replace the installed one (--allow-signer-change). */
  allowSignerChange?: boolean;
  /** The bundle's manifest as read before verifying (for the steps' titles; the steps verify). */
  manifest?: BundleManifest;
}

/**
 * This machine against the bundle and the answers: throws the refusal a real run stops on, and
 * warns as it warns (cgroup v1). The dry run calls it too, so it never passes where the real run
 * refuses; only `root` is the dry run's to skip (it needs none).
 */
export async function preflightCheck(ctx: InstallContext, m: Pick<BundleManifest, 'platforms' | 'contentSize' | 'created' | 'kubernetes'>, cgroups: () => Promise<NodeCgroups>, o: { dryRun?: boolean } = {}): Promise<NodeCgroups> {
  const problems = await preflight(o.dryRun ? { ...ctx, ignorePreflight: [...(ctx.ignorePreflight ?? []), 'root'] } : ctx, m);
  if (problems.length) {
    throw new UsageError(Codes.preflight, `this machine is not ready:\n  ${problems.join('\n  ')}`, {
      hint: 'Fix each problem, or skip a check you accept with --ignore-preflight NAME (e.g. --ignore-preflight swap).',
    });
  }
  const cg = await cgroups();
  checkCgroupV1(cg, ctx.answers.cgroupV1, kubernetesVersionOf(m), ctx.reporter, ctx.answers.node.name);
  return cg;
}

/** The steps of the first server, in order. */
export function firstServerSteps(ctx: InstallContext): Step[] {
  const { host, answers } = ctx;
  const fqdn = clusterFqdn(answers);
  const registry = registryFqdn(answers.domain);
  const manifestOf = async () => {
    const m = await bundleManifest(host);
    if (!m) throw new HostError(Codes.installStep, 'the bundle is not unpacked', { hint: 'Re-run ferry install; it unpacks the bundle first.' });
    return m;
  };
  // The site's answers: without an upstreamDns answer, the site DNS forwards to what this server used before.
  const site = async (): Promise<InstallAnswers> => (answers.upstreamDns ? answers : { ...answers, upstreamDns: await resolversHad(host, [answers.node.ip]) });
  const bundleId = async () => (await host.read(`${BUNDLE_DIR}/checksums.txt`)) ?? 'none';
  const cgroups = cgroupsOnce(host);
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
        const cg = await preflightCheck(ctx, await readBundleManifest(ctx.bundle), cgroups);
        log(`preflight passed (cgroup v${cg.version})`);
      },
    },
    {
      id: 'unpack',
      title: `verify and unpack the bundle into the site store ${STORE_DIR}; ${BUNDLE_DIR} is its current bundle`,
      check: async () => {
        const want = await readBundleManifest(ctx.bundle).catch(() => undefined);
        const have = await bundleManifest(host);
        return !!want && !!have && JSON.stringify(want) === JSON.stringify(have);
      },
      apply: async (log) => {
        const opts = { ...ctx.verify, allowDowngrade: ctx.allowDowngrade, allowSignerChange: ctx.allowSignerChange };
        const r = await host.addBundle(ctx.bundle, BUNDLE_DIR, opts, async () => ({ ...(await addAndUse(host, ctx.bundle, opts)), entries: 0 }));
        log(`${r.already ? 'already in the store' : 'added to the store'}: ${r.manifest.name}-${r.manifest.version}, current (${r.manifest.kubernetes ? `Kubernetes ${r.manifest.kubernetes.version}` : 'no Kubernetes release'}): ${r.blobsAdded ?? r.entries ?? 0} blobs and ${r.filesAdded ?? 0} files new, signed by ${r.fingerprint}`);
      },
    },
    markerStep(host, 'binaries', `install the bundle's binaries${ctx.manifest ? ` (${carriedBinaries(ctx.manifest.files).join(', ') || 'none for this machine'})` : ''}`, bundleId, async (log) => {
      const m = await manifestOf();
      await installBinaries(host, BUNDLE_DIR, m.files, log);
      // The runtime and ferry itself, for the site service unit and for joining nodes.
      const rt = m.runtime.find((r) => r.platform === `linux/${archOf()}`);
      if (rt) await host.copy(`${BUNDLE_DIR}/${rt.path}`, RUNTIME_NODE, 0o755);
      await host.rm(FERRY_DIR);
      await host.copyTree(`${BUNDLE_DIR}/ferry`, FERRY_DIR);
      if (rt) await writeLauncher(host);
    }),
    kernelStep(host, 'load kernel modules and set sysctls for Kubernetes networking'),
    serviceRouteStep(host, answers.serviceCidr, answers.node.ip),
    markerStep(host, 'pki', `site CA and the certificate for ${registry}`, `${answers.domain} ${answers.node.ip}`, async (log) => {
      const r = await host.produce(PKI_DIR, (dir) => initPki({ domain: answers.domain, ips: [answers.node.ip], outDir: dir }));
      log(`site CA ${r.caReused ? 'kept' : 'created'} (${r.caFingerprint}); registry certificate ${r.serverCert}`);
    }),
    markerStep(host, 'hosts', `map ${fqdn} and ${registry} to this server in /etc/hosts`, `${fqdn} ${registry} ${answers.node.ip}`, async (log) => {
      await mapHosts(host, [{ ip: answers.node.ip, names: serverHostNames(answers.node, answers.domain, fqdn) }]);
      log(`/etc/hosts: ${fqdn} → ${answers.node.ip}`);
    }),
    // Before any pod starts: a pod copies the node's resolv.conf when it starts, and CoreDNS (which
    // forwards to it) must never hold the old resolvers. Site names resolve from /etc/hosts until
    // the site DNS runs.
    resolverStep(host, [answers.node.ip], answers.domain),
    markerStep(host, 'containerd-config', "configure containerd: the node's cgroup driver, mirrors to the site service only", async () => `${await bundleId()} ${(await cgroups()).driver}`, async (log) => {
      const m = await manifestOf();
      const { driver } = await cgroups();
      const { configVersion, restrictOomScoreAdj } = await writeContainerdToml(host, { pauseImage: pauseImageOf(m), cgroupDriver: driver, containerdVersion: containerdVersionOf(m) });
      if (restrictOomScoreAdj) ctx.reporter.warn(`${answers.node.name} denies CAP_SYS_RESOURCE (a container or sandbox?): containerd will keep pods' OOM scores at or above its own (restrict_oom_score_adj)`);
      log(`config.toml: version ${configVersion} for containerd ${containerdVersionOf(m) ?? '(not in the bundle)'}, ${driver} cgroup driver${restrictOomScoreAdj ? ', OOM scores restricted' : ''}`);
      const registries = registriesInIndex((await host.read(`${BUNDLE_DIR}/images/index.json`)) ?? '{}');
      const r = await host.produce(CONTAINERD_DIR, (dir) => writeContainerdConfig({ registries, mirrors: [siteServiceUrl(answers.domain)], caFile: SITE_CA, outDir: dir, configPath: CONTAINERD_CERTS_D }));
      log(`hosts.toml for ${r.registries.join(', ')}`);
    }),
    markerStep(host, 'units', 'install systemd units for containerd, kubelet and the site service', answers.node.ip, async (log) => {
      await installUnits(host, true, (await manifestOf()).files);
      log('units written and enabled');
    }),
    markerStep(host, 'services', 'start containerd and the site service', 'started', async (log) => {
      await host.run('systemctl', ['restart', 'ferry-serve.service']);
      await host.run('systemctl', ['restart', 'containerd.service']);
      log('containerd and ferry-serve started');
    }),
    markerStep(host, 'kubeadm-config', `write ${KUBEADM_CONFIG}`, kubeadmConfig, async (log) => {
      await host.write(KUBEADM_CONFIG, await kubeadmConfig(), 0o600);
      log(`kubeadm config for Kubernetes ${kubernetesVersionOf(await manifestOf())}, endpoint ${fqdn}:${API_PORT}`);
    }),
    imageCheckStep(host, answers, { kubeadmConfig: KUBEADM_CONFIG, manifest: manifestOf, chartTgz: (d) => chartBlob(host, d), bootstrapValues: async () => bootstrapValues(await site(), await manifestOf(), await clusterNodes(host, answers)), bundleId }),
    {
      id: 'kubeadm-init',
      title: `kubeadm init (control plane behind ${fqdn}:${API_PORT})`,
      check: async () => !!(await host.read(ADMIN_CONF)),
      apply: async (log) => {
        const r = await host.run('kubeadm', ['init', '--config', KUBEADM_CONFIG, '--upload-certs'], { timeoutMs: 15 * 60_000 });
        log(r.stdout.split('\n').filter((l) => /initialized|Your Kubernetes/.test(l)).join(' ') || 'kubeadm init done');
      },
    },
    {
      id: 'site-state',
      title: 'write the site state (nodes, answers, bundles) into the cluster',
      check: async () => ((await siteOf(host, ctx.reporter).cluster.read().catch(() => undefined))?.value.nodes ?? []).some((n) => n.name === answers.node.name),
      apply: async (log) => {
        const m = await manifestOf();
        await host.cluster(`ConfigMap/${STATE_NAMESPACE}/${STATE_CONFIGMAP} (the site state)`, async () => ensureSiteState(host, await site(), m, ctx.reporter, log));
        // Its mirror is kept from now on (OnBootSec covers the boots after).
        await host.run('systemctl', ['start', STATE_MIRROR_TIMER, CERTS_TIMER]);
      },
    },
    markerStep(host, 'cni', `apply the CNI${answers.cni ? ` (${answers.cni})` : ''} from the bundle`, `${answers.cni ?? 'none'} ${answers.podCidr}`, async (log) => {
      const m = await manifestOf();
      const chart = answers.cni ? m.charts.find((c) => c.name === answers.cni) : undefined;
      if (!answers.cni) return log('no CNI chosen: none in the bundle; apply one before pods can run');
      if (!chart) throw new UsageError(Codes.chartNotFound, `the bundle carries no chart named ${answers.cni}`, { hint: `Choose one of: ${m.charts.map((c) => c.name).join(', ') || '(none)'}.` });
      const tgz = await chartBlob(host, chart.digest);
      await host.apply(cniNodeObjects(answers.cni, answers.node), log);
      const ns = answers.cni === 'flannel' ? 'kube-flannel' : 'kube-system';
      await host.run('helm', ['upgrade', '--install', answers.cni, tgz, '--namespace', ns, '--create-namespace', '--kubeconfig', host.p(ADMIN_CONF), '--set', `podCidr=${answers.podCidr}`, '--wait', '--timeout', '10m']);
      // helm --wait lets a DaemonSet be maxUnavailable short: on one node, that is all of it.
      const sets = (await host.daemonSets(ns)).map((name) => ({ namespace: ns, name }));
      await host.waitForDaemonSets(sets, { timeoutMs: ctx.rolloutTimeoutMs ?? 300_000, reporter: ctx.reporter });
      log(`${answers.cni} ${chart.version} installed in ${ns}; ${sets.map((x) => x.name).join(', ')} ready`);
    }),
    markerStep(host, 'bootstrap', 'apply the DNS and load-balancer DaemonSets (ferry-bootstrap) and wait for them', async () => {
      const m = await manifestOf();
      // A newer bundle whose chart changed is applied again, even with the same values.
      const chart = m.charts.find((c) => c.name === BOOTSTRAP_CHART)?.digest ?? 'no-chart';
      return `${chart} ${JSON.stringify(bootstrapValues(await site(), m, await clusterNodes(host, answers)))}`;
    }, async (log) => {
      const m = await manifestOf();
      const nodes = await clusterNodes(host, answers, ctx.reporter);
      await applyBootstrap(host, bootstrapValues(await site(), m, nodes), ctx.reporter, log, ctx.rolloutTimeoutMs ?? 300_000);
    }),
    {
      id: 'ready',
      title: `wait until ${answers.node.name} is Ready and kube-system's Deployments (CoreDNS) are available`,
      check: async () => !!(await host.read(ADMIN_CONF)) && (await host.clusterNotReady(answers.node.name).catch(() => ['unknown'])).length === 0,
      apply: async (log) => {
        await host.waitForClusterReady(answers.node.name, { timeoutMs: ctx.rolloutTimeoutMs ?? 300_000, reporter: ctx.reporter });
        log(`${answers.node.name} Ready; kube-system Deployments available`);
      },
    },
    // Last: its first run (soon after) backs up a whole site.
    backupTimerStep(host, { makeKey: true }),
  ];
}

