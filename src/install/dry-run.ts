import { verifyBundle } from '../bundle/verify.js';
import type { BundleManifest } from '../bundle/format.js';
import { imagesMissingError, missingImages } from '../bundle/image-check.js';
import { Codes, type FerryError, SpecError, UsageError } from '../errors.js';
import { parseReference } from '../oci/reference.js';
import { kubeadmImages } from '../spec/kubernetes.js';
import { clusterFqdn } from './answers.js';
import { mayLowerOomScore } from './capabilities.js';
import { cgroupsOnce } from './cgroups.js';
import { bootstrapValues, clusterNodes, containerdVersionOf, kubernetesVersionOf, pauseImageOf } from './cluster.js';
import { renderHostsToml } from './containerd.js';
import type { InstallContext } from './first-server.js';
import { renderKubeadmInit } from './kubeadm.js';
import { archOf, serverHostNames, siteServiceUrl, unitBinariesMissing } from './node-steps.js';
import { CONTAINERD_CERTS_D, CONTAINERD_CONFIG, ETC_HOSTS, KUBEADM_CONFIG, MODULES_LOAD_FILE, REGISTRY_CERT, REGISTRY_KEY, SITE_CA, SITE_PORT, STATE_DIR, SYSCTL_FILE, SYSTEMD_DIR } from './paths.js';
import { preflight } from './preflight.js';
import { CONTAINERD_UNIT, containerdConfig, containerdConfigVersion, hostsWithBlock, KUBELET_KUBEADM_DROPIN, KUBELET_UNIT, MODULES_CONF, SYSCTL_CONF } from './system-files.js';
import { renderServeUnit } from './units.js';

/*
 * ferry install --dry-run: what a real run checks before it changes anything (the signature, the
 * answers against the bundle, the architecture, the images kubeadm asks for), and every file it
 * would write, rendered but not written.
 */

export interface RenderedFile {
  /** The host path the real run writes. */
  path: string;
  content: string;
}

export interface DryRunFindings {
  signer: string;
  manifest: BundleManifest;
  /** Refusals: a real run would stop on each. */
  problems: FerryError[];
  /** Preflight findings about this machine, which may not be the one to install (a laptop). */
  preflight: string[];
  files: RenderedFile[];
}

/** Registries the bundle's images come from: containerd gets one hosts.toml for each. */
function registriesOf(m: BundleManifest): string[] {
  const out = new Set<string>();
  for (const i of m.images) {
    try {
      out.add(parseReference(i.ref, { defaultTag: false }).registry);
    } catch {
      /* not a full reference: nothing to configure */
    }
  }
  return [...out].sort();
}

function problemsOf(ctx: InstallContext, m: BundleManifest): FerryError[] {
  const { answers } = ctx;
  const out: FerryError[] = [];
  const arch = `linux/${archOf()}`;
  if (!m.platforms.includes(arch)) {
    out.push(new UsageError(Codes.preflight, `this machine is ${arch}, the bundle carries ${m.platforms.join(', ')}`, { hint: 'Build a bundle for this platform (spec.platforms), or install on a machine of the bundle\'s.' }));
  }
  if (answers.cni && !m.charts.some((c) => c.name === answers.cni)) {
    out.push(new UsageError(Codes.chartNotFound, `the answers choose the CNI ${answers.cni}, but the bundle carries no chart of that name`, { hint: `Choose one of: ${m.charts.map((c) => c.name).join(', ') || '(none)'}.` }));
  }
  const missingBins = unitBinariesMissing(m.files);
  if (missingBins.length) out.push(new UsageError(Codes.bundleBinaryMissing, `the bundle carries no ${missingBins.join(', ')} for ${arch}`, { hint: 'Add each binary to spec.binaries for this platform and build the bundle again.' }));
  if (m.kubernetes?.version) {
    const version = kubernetesVersionOf(m);
    const needs = kubeadmImages(version, m.kubernetes.imageRepository).map((ref) => ({ ref, by: `kubeadm ${version}` }));
    const missing = missingImages(needs, m.images.map((i) => ({ ref: i.ref, digest: i.digest })));
    if (missing.length) out.push(imagesMissingError(missing, 'the bundle does not carry', 'Add each image to spec.images, run `ferry lock` and `ferry bundle build` again.'));
  } else {
    out.push(new SpecError(Codes.kubernetesUnsupported, 'the bundle names no Kubernetes release (its spec has no spec.kubernetes)', { hint: 'Install a bundle built from a spec with spec.kubernetes.version.' }));
  }
  return out;
}

async function renderFiles(ctx: InstallContext, m: BundleManifest): Promise<RenderedFile[]> {
  const { host, answers } = ctx;
  const cg = await cgroupsOnce(host)();
  const fqdn = clusterFqdn(answers);
  const mirror = siteServiceUrl(answers.domain);
  const files: RenderedFile[] = [
    { path: MODULES_LOAD_FILE, content: MODULES_CONF },
    { path: SYSCTL_FILE, content: SYSCTL_CONF },
    { path: ETC_HOSTS, content: hostsWithBlock((await host.read(ETC_HOSTS)) ?? '127.0.0.1\tlocalhost\n', [{ ip: answers.node.ip, names: serverHostNames(answers.node, answers.domain, fqdn) }]) },
    {
      path: CONTAINERD_CONFIG,
      content: containerdConfig({ pauseImage: pauseImageOf(m), cgroupDriver: cg.driver, configVersion: containerdConfigVersion(containerdVersionOf(m)), restrictOomScoreAdj: !(await mayLowerOomScore()) }),
    },
    ...registriesOf(m).map((r) => ({ path: `${CONTAINERD_CERTS_D}/${r}/hosts.toml`, content: renderHostsToml(r, [mirror], SITE_CA) })),
    { path: `${SYSTEMD_DIR}/containerd.service`, content: CONTAINERD_UNIT },
    { path: `${SYSTEMD_DIR}/kubelet.service`, content: KUBELET_UNIT },
    { path: `${SYSTEMD_DIR}/kubelet.service.d/10-kubeadm.conf`, content: KUBELET_KUBEADM_DROPIN },
    { path: `${SYSTEMD_DIR}/ferry-serve.service`, content: renderServeUnit({ listen: `0.0.0.0:${SITE_PORT}`, tlsCert: REGISTRY_CERT, tlsKey: REGISTRY_KEY }) },
  ];
  if (m.kubernetes?.version) {
    files.push({ path: KUBEADM_CONFIG, content: renderKubeadmInit({ answers, kubernetesVersion: m.kubernetes.version, imageRepository: m.kubernetes.imageRepository, cgroups: cg }) });
  }
  // The values the DNS and LB chart is applied with; the objects need the unpacked chart and helm.
  files.push({ path: `${STATE_DIR}/bootstrap-values.json`, content: `${JSON.stringify(bootstrapValues(answers, m, await clusterNodes(host, answers)), null, 2)}\n` });
  return files;
}

/** Verifies the bundle (a missing one is an error), then checks and renders without writing. */
export async function dryRun(ctx: InstallContext): Promise<DryRunFindings> {
  const v = await verifyBundle(ctx.bundle, { trust: ctx.verify.trust, confirm: ctx.verify.confirm, reporter: ctx.reporter });
  const m = v.manifest;
  return {
    signer: v.fingerprint,
    manifest: m,
    problems: problemsOf(ctx, m),
    preflight: await preflight({ ...ctx, ignorePreflight: [...(ctx.ignorePreflight ?? []), 'root'] }, m),
    files: await renderFiles(ctx, m),
  };
}
