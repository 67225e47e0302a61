import type { BundleManifest } from '../bundle/format.js';
import { imagesInManifests, imagesInObjects, imagesMissingError, missingImages, type ImageNeed } from '../bundle/image-check.js';
import { parseReference } from '../oci/reference.js';
import type { InstallAnswers } from './answers.js';
import { BOOTSTRAP_CHART, bundledBootstrapChart, renderBootstrap, type BootstrapValues } from './bootstrap.js';
import type { Host } from './host.js';
import { markerStep } from './node-steps.js';
import { STATE_DIR } from './paths.js';
import type { Step } from './plan.js';

/**
 * The install-side images check: before `kubeadm init`, the *installed* kubeadm and helm say which
 * images they will ask for, and the unpacked bundle must carry each. ferry's build-time table can
 * lag a kubeadm patch release; kubeadm itself cannot.
 */
export interface ImageCheckDeps {
  /** Host path of the kubeadm config the init step uses. */
  kubeadmConfig: string;
  manifest: () => Promise<BundleManifest>;
  /** A chart's .tgz (host path, under the root) from its manifest digest in the store. */
  chartTgz: (manifestDigest: string) => Promise<string>;
  /** The values ferry applies the DNS and LB DaemonSets with. */
  bootstrapValues: () => Promise<BootstrapValues>;
  /** Changes whenever the bundle does. */
  bundleId: () => Promise<string>;
}

/** Lines of `kubeadm config images list` that are image references (it may print warnings too). */
function refsIn(stdout: string): string[] {
  return stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => {
      try {
        return /^\S+$/.test(l) && !!parseReference(l);
      } catch {
        return false;
      }
    });
}

/** `helm template` of the CNI chart with the same release, namespace and values as the cni step installs. */
export function cniTemplateArgs(answers: Pick<InstallAnswers, 'cni' | 'podCidr'>, chartName: string, tgz: string): string[] {
  const ns = answers.cni === 'flannel' ? 'kube-flannel' : 'kube-system';
  return ['template', chartName, tgz, '--namespace', ns, '--set', `podCidr=${answers.podCidr}`];
}

async function imageNeeds(host: Host, answers: InstallAnswers, d: ImageCheckDeps, m: BundleManifest, log: (l: string) => void): Promise<ImageNeed[]> {
  const needs: ImageNeed[] = [];
  const k = await host.run('kubeadm', ['config', 'images', 'list', '--config', d.kubeadmConfig]);
  needs.push(...refsIn(k.stdout).map((ref) => ({ ref, by: 'kubeadm config images list' })));
  const chart = answers.cni ? m.charts.find((c) => c.name === answers.cni) : undefined;
  if (chart) {
    const t = await host.run('helm', cniTemplateArgs(answers, chart.name, await d.chartTgz(chart.digest)));
    needs.push(...imagesInManifests(t.stdout, `chart ${chart.name} ${chart.version}`));
  }
  // Exactly the objects the bootstrap step applies: the bundle's chart through the bundle's helm.
  const boot = await renderBootstrap(await d.bootstrapValues(), await bundledBootstrapChart(host, m, d.chartTgz), host);
  needs.push(...imagesInObjects(boot, `${BOOTSTRAP_CHART} (the DNS and LB DaemonSets)`));
  log(`asked for: ${[...new Set(needs.map((n) => n.ref))].join(', ')}`);
  return needs;
}

export function imageCheckStep(host: Host, answers: InstallAnswers, d: ImageCheckDeps): Step {
  const fingerprint = async () =>
    JSON.stringify({ bundle: await d.bundleId(), config: (await host.read(d.kubeadmConfig)) ?? null, cni: answers.cni ?? null, podCidr: answers.podCidr, bootstrap: await d.bootstrapValues() });
  return markerStep(host, 'images-check', 'check that the bundle holds every image kubeadm and the charts will ask for', fingerprint, async (log) => {
    const m = await d.manifest();
    const needs = await imageNeeds(host, answers, d, m, log);
    const missing = missingImages(needs, m.images.map((i) => ({ ref: i.ref, digest: i.digest })));
    if (missing.length) {
      throw imagesMissingError(
        missing,
        'the bundle does not carry',
        'kubeadm init has not run. Add each image to spec.images, run `ferry lock` and `ferry bundle build` again (the build checks the same), and install the new bundle; or install a bundle whose kubeadm and charts match its images.',
      );
    }
    log(`the bundle carries all ${new Set(needs.map((n) => n.ref)).size} images`);
  });
}
