import { X509Certificate } from 'node:crypto';
import { sha256 } from '../util/digest.js';
import type { KubernetesObject } from '@kubernetes/client-node';
import type { BundleManifest } from '../bundle/format.js';
import { Codes, FerryError, IntegrityError, UsageError } from '../errors.js';
import { Layout } from '../oci/layout.js';
import { MediaType, parseManifest } from '../oci/media.js';
import { bundleKubernetesVersion } from '../spec/kubernetes.js';
import type { Reporter } from '../util/progress.js';
import { clusterFqdn, type InstallAnswers } from './answers.js';
import { BOOTSTRAP_NAMESPACE, bundledBootstrapChart, renderBootstrap, type BootstrapNode, type BootstrapValues } from './bootstrap.js';
import type { Host } from './host.js';
import { applyObjects, waitForDaemonSets } from '../kube/client.js';
import { openSiteState, type SiteStateHandle } from '../cluster/site.js';
import type { BundleRecord, NodeRecord, SiteAnswers, SiteState } from '../cluster/state.js';
import { STATE_API_VERSION, STATE_KIND } from '../cluster/state.js';
import { archOf } from './node-steps.js';
import { ADMIN_CONF, BUNDLE_DIR, CLUSTER_CA, FERRY_ROOT, NODES_FILE } from './paths.js';

/*
 * What a server knows about its cluster: the bundle it installed, the site state (nodes, answers,
 * bundles; kept in the cluster, src/cluster/), the cluster CA, and the DNS and LB DaemonSets that
 * follow the nodes. The first server writes the state; any server reads and updates it.
 */

/** The site state as this server reaches it: the cluster through its admin kubeconfig, its own mirror. */
export const siteOf = (host: Host, reporter?: Reporter): SiteStateHandle => openSiteState({ kubeconfig: host.p(ADMIN_CONF), root: host.root, reporter });

/** nodes.json, which servers installed by an older ferry kept: read only to migrate it. */
async function legacyNodes(host: Host): Promise<BootstrapNode[]> {
  const t = await host.read(NODES_FILE);
  return t ? (JSON.parse(t) as BootstrapNode[]) : [];
}

/**
 * The nodes of the cluster as ferry knows them: what the DNS records and LB backends list. From the
 * site state once the cluster exists (its mirror when the API does not answer); before, this server.
 */
export async function clusterNodes(host: Host, answers: InstallAnswers, reporter?: Reporter): Promise<BootstrapNode[]> {
  const state = (await host.read(ADMIN_CONF)) ? await siteOf(host, reporter).read() : undefined;
  const known = state ? state.nodes.map((n) => ({ name: n.name, ip: n.ip, role: n.role })) : await legacyNodes(host);
  const self: BootstrapNode = { name: answers.node.name, ip: answers.node.ip, role: 'server' };
  return [self, ...known.filter((n) => n.name !== self.name)];
}

/** The answers every server needs, without this node's own and without the hosts to join. */
export function siteAnswers(a: InstallAnswers): SiteAnswers {
  const { apiVersion: _v, kind: _k, node: _n, join: _j, clusterFqdn: _f, ...rest } = a;
  return { ...rest, clusterFqdn: clusterFqdn(a) } as SiteAnswers;
}

/** The bundle this server unpacked, as the site state records it. */
export async function bundleRecord(host: Host, m: BundleManifest): Promise<BundleRecord> {
  const sums = await host.read(`${BUNDLE_DIR}/checksums.txt`);
  if (sums === undefined) throw new UsageError(Codes.installMissing, `${BUNDLE_DIR}/checksums.txt is missing`, { hint: 'Re-run ferry install: it unpacks the bundle first.' });
  return { id: `${m.name}-${m.version}`, name: m.name, version: m.version, fingerprint: m.signer.fingerprint, kubernetesVersion: kubernetesVersionOf(m), checksums: sha256(sums), addedAt: new Date().toISOString() };
}

/** A node installed from this bundle now (its platform: this machine's, unless it is another). */
export const nodeRecord = (n: BootstrapNode, m: BundleManifest, platform: string): NodeRecord => ({ ...n, platform, kubernetesVersion: kubernetesVersionOf(m) ?? 'unknown', bundle: `${m.name}-${m.version}`, joinedAt: new Date().toISOString() });

/**
 * Makes sure the cluster holds the site state and lists this server: written at the first install,
 * built from nodes.json (then removed) on a server an older ferry installed. Returns the state.
 */
export async function ensureSiteState(host: Host, answers: InstallAnswers, m: BundleManifest, reporter: Reporter, log: (l: string) => void = () => {}): Promise<SiteState> {
  const site = siteOf(host, reporter);
  const self: BootstrapNode = { name: answers.node.name, ip: answers.node.ip, role: 'server' };
  const selfRecord = nodeRecord(self, m, `linux/${archOf()}`);
  const have = await site.cluster.read();
  let state: SiteState;
  if (have) {
    state = have.value.nodes.some((n) => n.name === self.name) ? have.value : await site.update((s) => void s.nodes.unshift(selfRecord));
  } else {
    // Nodes an older ferry joined: their platforms it never recorded.
    const legacy = (await legacyNodes(host)).filter((n) => n.name !== self.name);
    const bundle = await bundleRecord(host, m);
    state = { apiVersion: STATE_API_VERSION, kind: STATE_KIND, answers: siteAnswers(answers), nodes: [selfRecord, ...legacy.map((n) => nodeRecord(n, m, 'unknown'))], bundles: [bundle], current: bundle.id };
    try {
      await site.create(state);
      log(`site state written to ${site.cluster.where} (${state.nodes.length} node${state.nodes.length === 1 ? '' : 's'}${legacy.length ? `, migrated from ${NODES_FILE}` : ''})`);
    } catch (e) {
      // Another server wrote it first: add this one to it.
      if (!(e instanceof FerryError && e.code === Codes.stateConflict)) throw e;
      return ensureSiteState(host, answers, m, reporter, log);
    }
  }
  await host.rm(NODES_FILE);
  return state;
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
