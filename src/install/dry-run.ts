import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { x as untar } from 'tar';
import { copyEntry, verifyBundle, type EntryPlace, type VerifyResult } from '../bundle/verify.js';
import { parseChecksums, refuse, type BundleManifest } from '../bundle/format.js';
import { imagesInManifests, imagesInObjects, imagesMissingError, missingImages, type ImageNeed } from '../bundle/image-check.js';
import { Codes, FerryError, SpecError, UsageError } from '../errors.js';
import { MediaType, parseManifest } from '../oci/media.js';
import { parseReference } from '../oci/reference.js';
import { kubeadmImages } from '../spec/kubernetes.js';
import { clusterFqdn } from './answers.js';
import { mayLowerOomScore } from './capabilities.js';
import { cgroupsOnce } from './cgroups.js';
import { bootstrapValues, clusterNodes, containerdVersionOf, kubernetesVersionOf, pauseImageOf } from './cluster.js';
import { renderHostsToml } from './containerd.js';
import type { InstallContext } from './first-server.js';
import { renderKubeadmInit } from './kubeadm.js';
import { renderLauncher } from './launcher.js';
import { archOf, serverHostNames, siteServiceUrl, unitBinariesMissing } from './node-steps.js';
import { CONTAINERD_CERTS_D, CONTAINERD_CONFIG, ETC_HOSTS, FERRY_LAUNCHER, KUBEADM_CONFIG, MODULES_LOAD_FILE, REGISTRY_CERT, REGISTRY_KEY, SITE_CA, SITE_PORT, STATE_DIR, SYSCTL_FILE, SYSTEMD_DIR } from './paths.js';
import { preflight } from './preflight.js';
import { CONTAINERD_UNIT, containerdConfig, containerdConfigVersion, hostsWithBlock, KUBELET_KUBEADM_DROPIN, KUBELET_UNIT, MODULES_CONF, SYSCTL_CONF } from './system-files.js';
import { renderServeUnit } from './units.js';
import { BOOTSTRAP_CHART, bundledBootstrapChart, renderBootstrap } from './bootstrap.js';
import { cniTemplateArgs } from './image-check.js';
import { Host } from './host.js';

/*
 * ferry install --dry-run: what a real run checks before it changes anything (the signature, the
 * answers against the bundle, the architecture, the images kubeadm and the charts ask for), and
 * every file it would write, rendered but not written.
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

/** Where each entry a chart check may need lies in the bundle: every blob (a chart's layer digest is known only from its manifest) and helm. */
const placeable = (p: string) => p.startsWith('images/blobs/') || p.startsWith('files/helm/');

/**
 * The images the CNI chart and the bootstrap chart ask for with these answers: both charts and this
 * arch's helm are copied out of the verified bundle into a temporary directory, rendered there by
 * that helm exactly as the real run's images check does, and the directory is removed. What cannot
 * be rendered is a refusal, as it would be on a real run.
 */
interface ChartFindings {
  needs: ImageNeed[];
  problems: FerryError[];
  /** The bundle has no helm for this arch to render the charts with. */
  noHelm: boolean;
}

async function chartNeeds(ctx: InstallContext, v: VerifyResult, places: Map<string, EntryPlace>): Promise<ChartFindings> {
  const { answers } = ctx;
  const m = v.manifest;
  const needs: ImageNeed[] = [];
  const problems: FerryError[] = [];
  let noHelm = false;
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-dry-run-'));
  // helm's own homes in the temporary directory too, so the dry run writes nothing else.
  const host = new Host(ctx.host.root, { ...ctx.host.env, HELM_CACHE_HOME: `${tmp}/helm/cache`, HELM_CONFIG_HOME: `${tmp}/helm/config`, HELM_DATA_HOME: `${tmp}/helm/data` });
  try {
    const sums = parseChecksums(v.table['checksums.txt'].toString('utf8'));
    const take = async (entry: string, dest: string, mode?: number) => {
      const at = places.get(entry);
      const want = sums.get(entry);
      if (!at || !want) throw refuse(Codes.bundleFormat, `the bundle lists no entry ${entry}`);
      await copyEntry(ctx.bundle, entry, at, want, dest, mode);
      return dest;
    };
    const chartTgz = async (manifestDigest: string) => {
      const man = await take(`images/blobs/${manifestDigest.replace(':', '/')}`, path.join(tmp, `${manifestDigest.slice(7, 19)}.json`));
      const parsed = parseManifest(await fs.readFile(man), '', manifestDigest);
      const layer = parsed.kind === 'manifest' ? parsed.manifest.layers.find((l) => l.mediaType === MediaType.helmChart) : undefined;
      if (!layer) throw refuse(Codes.bundleFormat, `manifest ${manifestDigest} is not a Helm chart`);
      return take(`images/blobs/${layer.digest.replace(':', '/')}`, path.join(tmp, `${layer.digest.slice(7, 19)}.tgz`));
    };
    const arch = `linux/${archOf()}`;
    const helmOf = async (): Promise<string | undefined> => {
      if (ctx.host.env.FERRY_HELM) return ctx.host.env.FERRY_HELM;
      const f = m.files.find((x) => x.name === 'helm' && x.platform === arch);
      if (!f) {
        noHelm = true;
        return undefined;
      }
      if (!f.archive) return take(f.path, path.join(tmp, 'helm'), 0o755);
      // Unpacked as the binaries step does: the executable named helm, wherever the archive keeps it.
      const dir = path.join(tmp, 'helm-bin');
      await fs.mkdir(dir);
      await untar({ file: await take(f.path, path.join(tmp, 'helm.tgz')), cwd: dir, filter: (p: string) => path.basename(p) === 'helm', onReadEntry: (e: { path: string }) => void (e.path = 'helm') } as Parameters<typeof untar>[0]);
      return path.join(dir, 'helm');
    };
    const settle = async (f: () => Promise<void>) => {
      try {
        await f();
      } catch (e) {
        if (!(e instanceof FerryError)) throw e;
        problems.push(e);
      }
    };
    const chart = answers.cni ? m.charts.find((c) => c.name === answers.cni) : undefined;
    const hasBootstrap = m.charts.some((c) => c.name === BOOTSTRAP_CHART);
    const helm = chart || hasBootstrap ? await helmOf() : undefined;
    if (chart && helm) {
      await settle(async () => {
        const t = await host.run(helm, cniTemplateArgs(answers, chart.name, await chartTgz(chart.digest)), { allowFail: true, timeoutMs: 120_000 });
        if (t.code !== 0) throw new UsageError(Codes.chartInvalid, `helm template of the CNI chart ${chart.name} failed (exit ${t.code}): ${t.stderr.trim().split('\n').slice(-2).join(' / ')}`, { hint: 'Check the chart with `helm lint` and `helm template`, and build the bundle again.' });
        needs.push(...imagesInManifests(t.stdout, `chart ${chart.name} ${chart.version}`));
      });
    }
    await settle(async () => {
      // Only the chart is checked here: helm was settled above (a missing one is named with the units' binaries).
      const from = await bundledBootstrapChart(new Host(host.root, { ...host.env, FERRY_HELM: helm ?? 'helm' }), m, chartTgz);
      if (!helm) return;
      const objects = await renderBootstrap(bootstrapValues(answers, m, await clusterNodes(ctx.host, answers)), { chart: from.chart, helm }, host);
      needs.push(...imagesInObjects(objects, `${BOOTSTRAP_CHART} (the DNS and LB DaemonSets)`));
    });
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
  return { needs, problems, noHelm };
}

function problemsOf(ctx: InstallContext, m: BundleManifest, charts: ChartFindings): FerryError[] {
  const { answers } = ctx;
  const out: FerryError[] = [];
  const arch = `linux/${archOf()}`;
  if (!m.platforms.includes(arch)) {
    out.push(new UsageError(Codes.preflight, `this machine is ${arch}, the bundle carries ${m.platforms.join(', ')}`, { hint: 'Build a bundle for this platform (spec.platforms), or install on a machine of the bundle\'s.' }));
  }
  if (answers.cni && !m.charts.some((c) => c.name === answers.cni)) {
    out.push(new UsageError(Codes.chartNotFound, `the answers choose the CNI ${answers.cni}, but the bundle carries no chart of that name`, { hint: `Choose one of: ${m.charts.map((c) => c.name).join(', ') || '(none)'}.` }));
  }
  const missingBins = [...unitBinariesMissing(m.files), ...(charts.noHelm ? [`helm (for the ${[answers.cni, BOOTSTRAP_CHART].filter(Boolean).join(' and ')} charts)`] : [])];
  if (missingBins.length) out.push(new UsageError(Codes.bundleBinaryMissing, `the bundle carries no ${missingBins.join(', ')} for ${arch}`, { hint: 'Add each binary to spec.binaries for this platform and build the bundle again.' }));
  const needs: ImageNeed[] = [];
  if (m.kubernetes?.version) {
    const version = kubernetesVersionOf(m);
    needs.push(...kubeadmImages(version, m.kubernetes.imageRepository).map((ref) => ({ ref, by: `kubeadm ${version}` })));
  } else {
    out.push(new SpecError(Codes.kubernetesUnsupported, 'the bundle names no Kubernetes release (its spec has no spec.kubernetes)', { hint: 'Install a bundle built from a spec with spec.kubernetes.version.' }));
  }
  out.push(...charts.problems);
  // One refusal naming every missing image, kubeadm's and the charts' alike.
  const missing = missingImages([...needs, ...charts.needs], m.images.map((i) => ({ ref: i.ref, digest: i.digest })));
  if (missing.length) out.push(imagesMissingError(missing, 'the bundle does not carry', 'Add each image to spec.images, run `ferry lock` and `ferry bundle build` again.'));
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
    { path: FERRY_LAUNCHER, content: renderLauncher() },
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
  const places = new Map<string, EntryPlace>();
  const v = await verifyBundle(ctx.bundle, { trust: ctx.verify.trust, confirm: ctx.verify.confirm, reporter: ctx.reporter, onEntry: (p, at) => void (placeable(p) && places.set(p, at)) });
  const m = v.manifest;
  return {
    signer: v.fingerprint,
    manifest: m,
    problems: problemsOf(ctx, m, await chartNeeds(ctx, v, places)),
    preflight: await preflight({ ...ctx, ignorePreflight: [...(ctx.ignorePreflight ?? []), 'root'] }, m),
    files: await renderFiles(ctx, m),
  };
}
