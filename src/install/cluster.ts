import { X509Certificate } from 'node:crypto';
import { sha256 } from '../util/digest.js';
import type { KubernetesObject } from '@kubernetes/client-node';
import type { BundleManifest } from '../bundle/format.js';
import { Codes, IntegrityError, UsageError } from '../errors.js';
import { MediaType, parseManifest } from '../oci/media.js';
import { bundleKubernetesVersion } from '../spec/kubernetes.js';
import type { Reporter } from '../util/progress.js';
import { clusterFqdn, type InstallAnswers } from './answers.js';
import { BOOTSTRAP_NAMESPACE, bundledBootstrapChart, renderBootstrap, type BootstrapNode, type BootstrapValues } from './bootstrap.js';
import type { Host } from './host.js';
import { BUNDLE_DIR, CLUSTER_CA, FERRY_ROOT, NODES_FILE } from './paths.js';

/*
 * What a server knows about its cluster: the bundle it installed, the nodes (nodes.json), the
 * cluster CA, and the DNS and LB DaemonSets that follow the nodes. The first server writes it; ferry
 * join reads it and brings it up to date.
 */

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
    ...(answers.upstreamDns?.length ? { upstreamDns: answers.upstreamDns } : {}),
    ...(coredns || haproxy ? { images: { ...(coredns ? { coredns } : {}), ...(haproxy ? { haproxy } : {}) } } : {}),
  };
}

/** Applies the DNS and LB DaemonSets (server-side apply) and waits for them to roll out. */
export async function applyBootstrap(host: Host, values: BootstrapValues, reporter: Reporter, log: (l: string) => void, timeoutMs: number): Promise<void> {
  const objects = await renderBootstrap(values, await bundledBootstrapChart(host, await bundleManifest(host), (d) => chartBlob(host, d)), host);
  await host.apply(objects as KubernetesObject[], log);
  const sets = objects.filter((o) => o.kind === 'DaemonSet').map((o) => ({ namespace: o.metadata.namespace ?? BOOTSTRAP_NAMESPACE, name: o.metadata.name }));
  await host.waitForDaemonSets(sets, { timeoutMs, reporter });
  log(`rolled out ${sets.map((x) => x.name).join(', ')}`);
}

/** sha256:<hex> of the cluster CA's public key, the form --discovery-token-ca-cert-hash takes. */
export async function caCertHash(host: Host): Promise<string> {
  const pem = await host.read(CLUSTER_CA);
  if (!pem) throw new UsageError(Codes.installMissing, `the cluster CA ${CLUSTER_CA} is missing`, { hint: 'Run ferry join on a server where ferry install finished.' });
  const spki = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
  return sha256(spki);
}

/** The manifest of the bundle this server unpacked, if it has one. */
export async function bundleManifest(host: Host): Promise<BundleManifest | undefined> {
  const t = await host.read(`${BUNDLE_DIR}/bundle.json`);
  return t ? (JSON.parse(t) as BundleManifest) : undefined;
}

/** The version of the bundle's containerd (files[name=containerd]), which picks its config version. */
export const containerdVersionOf = (m: Pick<BundleManifest, 'files'>) => m.files.find((f) => f.name === 'containerd')?.version;

/** The Kubernetes release a bundle installs. */
export const kubernetesVersionOf = (m: Pick<BundleManifest, 'kubernetes'>) => bundleKubernetesVersion(m);

/** The sandbox (pause) image of the bundle, which containerd pins. */
export const pauseImageOf = (m: Pick<BundleManifest, 'images'>) => m.images.find((i) => /\/pause:/.test(i.ref))?.ref ?? 'registry.k8s.io/pause:3.10';

/** A blob of the unpacked store, as a host path. */
const storeBlob = (digest: string) => `${BUNDLE_DIR}/images/blobs/${digest.replace(':', '/')}`;

/** The chart .tgz of a chart manifest in the unpacked store, copied out for helm (returned as a real path). */
export async function chartBlob(host: Host, manifestDigest: string): Promise<string> {
  const text = await host.read(storeBlob(manifestDigest));
  if (text === undefined) throw new IntegrityError(Codes.bundleFormat, `the unpacked bundle has no blob ${manifestDigest}`, { hint: 'Re-run ferry install: it unpacks the bundle again.' });
  const parsed = parseManifest(Buffer.from(text, 'utf8'), '', manifestDigest);
  const layer = parsed.kind === 'manifest' ? parsed.manifest.layers.find((l) => l.mediaType === MediaType.helmChart) : undefined;
  if (!layer) throw new IntegrityError(Codes.bundleFormat, `manifest ${manifestDigest} is not a Helm chart`);
  // helm wants a chart archive by its usual name; the store names blobs by digest only.
  const tgz = `${FERRY_ROOT}/charts/${layer.digest.slice(7, 19)}.tgz`;
  await host.copy(storeBlob(layer.digest), tgz);
  return host.p(tgz);
}
