import { promises as fs, type Stats } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { BundleManifest } from '../bundle/format.js';
import { readBundleManifest } from '../bundle/inspect.js';
import { SiteStore, type AddResult } from '../bundle/store.js';
import { checkDowngrade, checkSigner, currentTree, removeOwnLeftover, type Installed } from '../bundle/unpack.js';
import type { VerifyOptions } from '../bundle/verify.js';
import { Codes, UsageError } from '../errors.js';
import { ioError } from '../util/fsx.js';
import { bundleManifest } from './cluster.js';
import type { Host } from './host.js';
import { ADMIN_CONF, BUNDLE_DIR, KUBEADM_CONFIG, STORE_DIR } from './paths.js';

/*
 * A server's bundle: added to the site store, made current, and BUNDLE_DIR linked to its view, so
 * every reader of BUNDLE_DIR (bundleManifest, chartBlob, the binaries, ferry-serve) is unchanged.
 */

/**
 * What this server runs now, for the rollback and signer checks: the store's current bundle, or a
 * tree an earlier ferry unpacked at BUNDLE_DIR. The dry run checks against the same.
 */
export async function installedHere(host: Host, o: VerifyOptions): Promise<Installed | undefined> {
  const existing = await SiteStore.open(host.p(STORE_DIR), { create: false }).catch(() => undefined);
  const cur = existing && (await existing.current());
  if (cur) return existing!.installed(cur);
  const view = host.p(BUNDLE_DIR);
  const st = await fs.lstat(view).catch(() => undefined);
  return st && !st.isSymbolicLink() ? (await currentTree(view, o))?.installed : undefined;
}

/**
 * Adds `bundle` to this server's store and makes it the one the cluster runs. BUNDLE_DIR may be
 * absent, a link ferry made, or a tree an earlier ferry unpacked (replaced by the link); anything
 * else is not ferry's and is refused before anything is written.
 */
export async function addAndUse(host: Host, bundle: string, o: VerifyOptions & { allowDowngrade?: boolean; allowSignerChange?: boolean }): Promise<AddResult> {
  const view = host.p(BUNDLE_DIR);
  const st = await fs.lstat(view).catch(() => undefined);
  const tree = st && !st.isSymbolicLink() ? await currentTree(view, o) : undefined;
  const storeDir = host.p(STORE_DIR);
  // A link is ferry's only when it leads into the store's bundles; anything else is the operator's.
  if (st?.isSymbolicLink()) {
    const to = path.resolve(path.dirname(view), await fs.readlink(view));
    if (!to.startsWith(path.join(storeDir, 'bundles') + path.sep)) {
      throw new UsageError(Codes.unpackNotOurs, `${view} is a link to ${to}, not to a bundle of the site store ${storeDir}, so ferry will not replace it`, { hint: `Remove or move the link if it is yours; ferry makes ${BUNDLE_DIR} a link to the current bundle in ${STORE_DIR}.` });
    }
  }
  const existing = await SiteStore.open(storeDir, { create: false }).catch(() => undefined);
  const cur = existing && (await existing.current());
  const installed: Installed | undefined = cur ? await existing!.installed(cur) : tree?.installed;
  // A first check on the unverified table: a refusal here writes nothing.
  if (!o.allowDowngrade) checkDowngrade(BUNDLE_DIR, installed, await readBundleManifest(bundle), o);
  const store = existing ?? (await SiteStore.open(storeDir));
  const r = await store.add(bundle, o);
  if (!cur) {
    checkDowngrade(BUNDLE_DIR, installed, r.manifest, o);
    checkSigner(BUNDLE_DIR, installed, r.fingerprint, o);
  }
  await store.setCurrent(r.id, o);
  await linkView(host, store, r.id, st);
  return r;
}

/** Points BUNDLE_DIR at the store's view of `id` in one rename; a tree from an earlier ferry moves aside first. */
async function linkView(host: Host, store: SiteStore, id: string, st: Stats | undefined): Promise<void> {
  const view = host.p(BUNDLE_DIR);
  const link = `${view}.ferry-link`;
  const local = <T>(what: string, op: Promise<T>) => op.catch((e: unknown) => Promise.reject(ioError(what, e)));
  await local(`cannot link ${view}`, fs.rm(link, { force: true }));
  await local(`cannot link ${view}`, fs.symlink(path.relative(path.dirname(view), store.viewOf(id)), link));
  if (st && !st.isSymbolicLink()) {
    const old = `${view}.ferry-old`;
    await removeOwnLeftover(old);
    await local(`cannot move ${view} aside`, fs.rename(view, old));
    await local(`cannot link ${view}`, fs.rename(link, view));
    await local(`cannot remove ${old}`, fs.rm(old, { recursive: true, force: true }));
  } else await local(`cannot link ${view}`, fs.rename(link, view));
}

/**
 * Makes a bundle already in this server's store the one it runs (an upgrade, once this server is
 * upgraded): the store's current, and BUNDLE_DIR's link.
 */
export async function useStored(host: Host, id: string, o: { allowDowngrade?: boolean } = {}): Promise<void> {
  const store = await SiteStore.open(host.p(STORE_DIR), { create: false });
  const st = await fs.lstat(host.p(BUNDLE_DIR)).catch(() => undefined);
  if (st && !st.isSymbolicLink()) throw new UsageError(Codes.unpackNotOurs, `${BUNDLE_DIR} is not a link into the site store`, { hint: 'Re-run ferry install (or ferry join) on this server, which moves an older tree into the store.' });
  if ((await store.current()) !== id) await store.setCurrent(id, o);
  await linkView(host, store, id, st);
}

/** x.y.z of a Kubernetes version (`v1.31.2`, `1.31.2+k3s1`), for comparing. */
const core = (v: string) => /(\d+\.\d+\.\d+)/.exec(v)?.[1] ?? v;

/**
 * The Kubernetes version this node's cluster runs: the API server's own (/version), else the
 * kubeadm ClusterConfiguration ferry rendered, else the installed bundle's.
 */
export async function clusterKubernetesVersion(host: Host): Promise<{ version: string; from: string } | undefined> {
  if (!(await host.read(ADMIN_CONF))) return undefined;
  try {
    const { KubeConfig, VersionApi } = await import('@kubernetes/client-node');
    const kc = new KubeConfig();
    kc.loadFromFile(host.p(ADMIN_CONF));
    const api = kc.makeApiClient(VersionApi);
    const v = await Promise.race([api.getCode(), new Promise<never>((_, no) => setTimeout(() => no(new Error('timeout')), 5000).unref())]);
    if (v?.gitVersion) return { version: v.gitVersion, from: 'the API server' };
  } catch {
    /* the API does not answer: ferry's own record of the cluster */
  }
  const cfg = await host.read(KUBEADM_CONFIG);
  if (cfg) {
    for (const doc of cfg.split(/^---$/m)) {
      const d = parseYaml(doc) as { kind?: string; kubernetesVersion?: string } | null;
      if (d?.kind === 'ClusterConfiguration' && d.kubernetesVersion) return { version: d.kubernetesVersion, from: KUBEADM_CONFIG };
    }
  }
  const m = await bundleManifest(host).catch(() => undefined);
  if (m?.kubernetes?.version) return { version: m.kubernetes.version, from: `the installed bundle (${BUNDLE_DIR})` };
  return undefined;
}

/**
 * The install guard: on an initialised node, a bundle of another Kubernetes version is refused
 * before anything is written; re-installing the same version is an idempotent re-run.
 */
export async function guardInstallVersion(host: Host, bundle: string): Promise<void> {
  const cluster = await clusterKubernetesVersion(host);
  if (!cluster) return;
  const m = await readBundleManifest(bundle);
  const want = m.kubernetes?.version;
  if (!want || core(want) === core(cluster.version)) return;
  throw new UsageError(Codes.installVersionMismatch, `this node's cluster runs Kubernetes ${cluster.version} (from ${cluster.from}); ${path.basename(bundle)} carries ${want}: ferry install does not change a cluster's version, and nothing was changed`, {
    hint: `Stage the bundle with \`ferry bundle add ${path.basename(bundle)} --trust ferry.pub\`; \`ferry upgrade\` (coming) will move the cluster to it node by node. To re-run the install, use the bundle of ${cluster.version}.`,
  });
}
