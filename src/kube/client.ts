import type { KubernetesObject, KubernetesObjectApi } from '@kubernetes/client-node';
import { Codes, FerryError, HostError, RemoteError } from '../errors.js';
import { sleep } from '../util/limit.js';
import { silentReporter, type Reporter } from '../util/progress.js';
import { ADMIN_CONF } from './paths.js';

export const FIELD_MANAGER = 'ferry';

/** The client library is large: it loads only when ferry talks to a cluster. */
async function client(kubeconfig: string): Promise<KubernetesObjectApi> {
  let c = clients.get(kubeconfig);
  if (!c) {
    c = makeClient(kubeconfig);
    clients.set(kubeconfig, c);
    c.catch(() => clients.delete(kubeconfig));
  }
  return c;
}
/** One client per kubeconfig: each keeps what API discovery found. */
const clients = new Map<string, Promise<KubernetesObjectApi>>();

async function makeClient(kubeconfig: string): Promise<KubernetesObjectApi> {
  const { KubeConfig, KubernetesObjectApi } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  try {
    kc.loadFromFile(kubeconfig);
  } catch (e) {
    throw new HostError(Codes.kubeconfigRead, `cannot read kubeconfig ${kubeconfig}: ${(e as Error).message}`, { hint: `kubeadm init writes ${ADMIN_CONF}; re-run ferry install.`, cause: e });
  }
  return KubernetesObjectApi.makeApiClient(kc);
}

function kubeError(what: string, e: unknown): FerryError {
  const body = (e as { body?: unknown }).body;
  const msg = typeof body === 'string' ? body : body ? JSON.stringify(body) : (e as Error)?.message;
  return new RemoteError(Codes.kubeApi, `${what}: ${String(msg).slice(0, 500)}`, { hint: 'Check that the API server is up (crictl ps; journalctl -u kubelet), then re-run ferry install.', cause: e });
}

/** Server-side apply of each object, in order, as field manager "ferry" (forcing ownership). */
export async function applyObjects(kubeconfig: string, objects: KubernetesObject[], log: (l: string) => void = () => {}): Promise<void> {
  const api = await client(kubeconfig);
  const { PatchStrategy } = await import('@kubernetes/client-node');
  for (const o of objects) {
    const id = `${o.kind}/${o.metadata?.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata?.name}`;
    try {
      await api.patch(o, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply);
      log(`applied ${id}`);
    } catch (e) {
      throw kubeError(`server-side apply of ${id} failed`, e);
    }
  }
}

/** The DaemonSets of a namespace, by name (what a chart such as a CNI installed there). */
export async function listDaemonSets(kubeconfig: string, namespace: string): Promise<string[]> {
  const api = await client(kubeconfig);
  try {
    const list = await api.list('apps/v1', 'DaemonSet', namespace);
    return list.items.map((d) => d.metadata?.name ?? '').filter(Boolean);
  } catch (e) {
    throw kubeError(`cannot list DaemonSets in ${namespace}`, e);
  }
}

interface DaemonSetStatus {
  status?: { desiredNumberScheduled?: number; numberReady?: number; updatedNumberScheduled?: number; observedGeneration?: number };
  metadata?: { generation?: number };
}

/** Waits until every DaemonSet has rolled out on every node it targets, or times out clearly. */
export async function waitForDaemonSets(kubeconfig: string, sets: { namespace: string; name: string }[], opts: { timeoutMs?: number; intervalMs?: number; reporter?: Reporter } = {}): Promise<void> {
  const api = await client(kubeconfig);
  const reporter = opts.reporter ?? silentReporter;
  const deadline = Date.now() + (opts.timeoutMs ?? 300_000);
  let last = '';
  for (;;) {
    // A node whose kubelet stopped reporting (Ready Unknown: powered off, cut off) cannot run its
    // pod; the rollout waits for the rest, or a join with one server down would never finish.
    let lost = 0;
    try {
      lost = ((await api.list('v1', 'Node')).items as NodeLike[]).filter((n) => n.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'Unknown').length;
    } catch (e) {
      throw kubeError('cannot list the nodes', e);
    }
    const states = await Promise.all(
      sets.map(async (s) => {
        try {
          const ds = (await api.read({ apiVersion: 'apps/v1', kind: 'DaemonSet', metadata: { name: s.name, namespace: s.namespace } })) as DaemonSetStatus;
          const want = ds.status?.desiredNumberScheduled ?? 0;
          const ready = ds.status?.numberReady ?? 0;
          const updated = ds.status?.updatedNumberScheduled ?? 0;
          const current = (ds.status?.observedGeneration ?? 0) >= (ds.metadata?.generation ?? 0);
          // A DaemonSet that targets no node (the LB before any agent joins) has nothing to roll out.
          return { s, want, ready, ok: current && ready + lost >= want && updated + lost >= want };
        } catch (e) {
          throw kubeError(`cannot read DaemonSet ${s.namespace}/${s.name}`, e);
        }
      }),
    );
    const line = `${states.map((x) => `${x.s.name} ${x.ready}/${x.want}`).join(', ')}${lost ? ` (${lost} node${lost === 1 ? '' : 's'} not reporting: not waited for)` : ''}`;
    if (line !== last) reporter.info(`rollout: ${line}`);
    last = line;
    if (states.every((x) => x.ok)) return;
    if (Date.now() > deadline) {
      const stuck = states.filter((x) => !x.ok).map((x) => `${x.s.namespace}/${x.s.name} (${x.ready} of ${x.want} ready)`);
      throw new RemoteError(Codes.rolloutTimeout, `timed out waiting for ${stuck.join(', ')}`, {
        hint: `Look at the pods: kubectl -n ${stuck.length ? states.find((x) => !x.ok)!.s.namespace : 'ferry-system'} get pods -o wide; kubectl describe pod … Images come from the site service; check it with curl https://registry.<domain>:<site port>/v2/. Then re-run ferry install.`,
      });
    }
    await sleep(opts.intervalMs ?? 2000);
  }
}

interface NodeLike {
  status?: { conditions?: { type: string; status: string }[] };
}
interface DeploymentLike {
  metadata?: { name?: string; generation?: number };
  spec?: { replicas?: number };
  status?: { availableReplicas?: number; observedGeneration?: number };
}

/** What still keeps the cluster from being usable: the node not Ready, a kube-system Deployment (CoreDNS) not available. */
export async function clusterNotReady(kubeconfig: string, nodeName: string): Promise<string[]> {
  const api = await client(kubeconfig);
  const out: string[] = [];
  try {
    const node = (await api.read({ apiVersion: 'v1', kind: 'Node', metadata: { name: nodeName } })) as NodeLike;
    if (node.status?.conditions?.find((c) => c.type === 'Ready')?.status !== 'True') out.push(`node ${nodeName} is not Ready`);
    const deps = (await api.list('apps/v1', 'Deployment', 'kube-system')).items as DeploymentLike[];
    for (const d of deps) {
      const want = d.spec?.replicas ?? 1;
      const current = (d.status?.observedGeneration ?? 0) >= (d.metadata?.generation ?? 0);
      if (!current || (d.status?.availableReplicas ?? 0) < want) out.push(`kube-system/${d.metadata?.name} has ${d.status?.availableReplicas ?? 0} of ${want} available`);
    }
  } catch (e) {
    throw kubeError('cannot read the cluster state', e);
  }
  return out;
}

/** Waits until clusterNotReady has nothing left to say, or times out naming what is still not ready. */
export async function waitForClusterReady(kubeconfig: string, nodeName: string, opts: { timeoutMs?: number; intervalMs?: number; reporter?: Reporter } = {}): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 300_000);
  let last = '';
  for (;;) {
    const left = await clusterNotReady(kubeconfig, nodeName);
    if (!left.length) return;
    const line = left.join('; ');
    if (line !== last) (opts.reporter ?? silentReporter).info(`waiting: ${line}`);
    last = line;
    if (Date.now() > deadline) {
      throw new RemoteError(Codes.rolloutTimeout, `timed out waiting for the cluster: ${line}`, {
        hint: 'Look at kubectl get nodes and kubectl -n kube-system get pods -o wide (describe the pending ones), then re-run ferry install.',
      });
    }
    await sleep(opts.intervalMs ?? 2000);
  }
}

/*
 * Objects read and replaced whole, by resourceVersion: what the site state and its lease are kept in.
 * A write that names a resourceVersion the server no longer holds is refused (409) as STATE_CONFLICT.
 */

/** How long one API request may take before the API counts as not answering (a powered-off server). */
export const KUBE_REQUEST_TIMEOUT_MS = 10_000;

export interface KubeRef {
  apiVersion: string;
  kind: string;
  namespace?: string;
  name: string;
}

/** An object as read: its body and the resourceVersion a replace must name. */
export interface KubeObject<T = Record<string, unknown>> {
  body: T & KubernetesObject;
  resourceVersion: string;
}

const statusOf = (e: unknown): number | undefined => {
  const c = (e as { code?: unknown })?.code;
  return typeof c === 'number' ? c : undefined;
};

/** Whether an error means the API did not answer at all (as opposed to answering no). */
export const unreachable = (e: unknown): boolean => e instanceof FerryError && e.code === Codes.kubeUnreachable;

async function call<T>(what: string, f: () => Promise<T>, timeoutMs = KUBE_REQUEST_TIMEOUT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new RemoteError(Codes.kubeUnreachable, `${what}: the API server did not answer in ${timeoutMs / 1000}s`, { hint: 'Check that the API server is up (kubectl get --raw /readyz; crictl ps; journalctl -u kubelet).' })), timeoutMs);
  });
  try {
    return await Promise.race([f(), timeout]);
  } catch (e) {
    if (e instanceof FerryError) throw e;
    if (statusOf(e) === undefined) {
      throw new RemoteError(Codes.kubeUnreachable, `${what}: the API server did not answer (${String((e as Error)?.message ?? e).split('\n')[0]!.slice(0, 200)})`, { hint: 'Check that the API server is up (kubectl get --raw /readyz; crictl ps; journalctl -u kubelet).', cause: e });
    }
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

const idOf = (r: KubeRef) => `${r.kind}/${r.namespace ? `${r.namespace}/` : ''}${r.name}`;
const specOf = (r: KubeRef) => ({ apiVersion: r.apiVersion, kind: r.kind, metadata: { name: r.name, ...(r.namespace ? { namespace: r.namespace } : {}) } });
const conflict = (r: KubeRef, e: unknown) =>
  new RemoteError(Codes.stateConflict, `${idOf(r)} changed since it was read`, { hint: 'Another ferry updated it at the same time; run the command again.', cause: e });

/** Reads an object; undefined when there is none. */
export async function getObject<T>(kubeconfig: string, ref: KubeRef): Promise<KubeObject<T> | undefined> {
  const api = await call('cannot reach the API', () => client(kubeconfig));
  try {
    const body = (await call(`cannot read ${idOf(ref)}`, () => api.read(specOf(ref) as never))) as T & KubernetesObject;
    return { body, resourceVersion: body.metadata?.resourceVersion ?? '' };
  } catch (e) {
    if (statusOf(e) === 404) return undefined;
    if (e instanceof FerryError) throw e;
    throw kubeError(`cannot read ${idOf(ref)}`, e);
  }
}

/** Creates an object; STATE_CONFLICT when one of its name exists already. Returns its resourceVersion. */
export async function createObject(kubeconfig: string, ref: KubeRef, fields: Record<string, unknown>): Promise<string> {
  const api = await call('cannot reach the API', () => client(kubeconfig));
  try {
    const o = await call(`cannot create ${idOf(ref)}`, () => api.create({ ...specOf(ref), ...fields } as KubernetesObject, undefined, undefined, FIELD_MANAGER));
    return o.metadata?.resourceVersion ?? '';
  } catch (e) {
    if (statusOf(e) === 409) throw conflict(ref, e);
    if (e instanceof FerryError) throw e;
    throw kubeError(`cannot create ${idOf(ref)}`, e);
  }
}

/** Replaces an object if the server still holds `resourceVersion`; STATE_CONFLICT otherwise. */
export async function replaceObject(kubeconfig: string, ref: KubeRef, fields: Record<string, unknown>, resourceVersion: string): Promise<string> {
  const api = await call('cannot reach the API', () => client(kubeconfig));
  const spec = specOf(ref);
  try {
    const o = await call(`cannot replace ${idOf(ref)}`, () => api.replace({ ...spec, ...fields, metadata: { ...spec.metadata, resourceVersion } } as KubernetesObject, undefined, undefined, FIELD_MANAGER));
    return o.metadata?.resourceVersion ?? '';
  } catch (e) {
    if (statusOf(e) === 409 || statusOf(e) === 404) throw conflict(ref, e);
    if (e instanceof FerryError) throw e;
    throw kubeError(`cannot replace ${idOf(ref)}`, e);
  }
}

/** A ConfigMap's data and resourceVersion. */
export async function getConfigMap(kubeconfig: string, namespace: string, name: string): Promise<{ data: Record<string, string>; resourceVersion: string; uid?: string } | undefined> {
  const o = await getObject<{ data?: Record<string, string> }>(kubeconfig, { apiVersion: 'v1', kind: 'ConfigMap', namespace, name });
  return o && { data: o.body.data ?? {}, resourceVersion: o.resourceVersion, uid: o.body.metadata?.uid };
}

/** Writes a ConfigMap's data: created when `resourceVersion` is undefined, else replaced if unchanged since. */
export async function putConfigMap(kubeconfig: string, namespace: string, name: string, data: Record<string, string>, resourceVersion: string | undefined): Promise<string> {
  const ref = { apiVersion: 'v1', kind: 'ConfigMap', namespace, name };
  const fields = { metadata: { name, namespace, labels: { 'app.kubernetes.io/managed-by': 'ferry' } }, data };
  return resourceVersion === undefined ? createObject(kubeconfig, ref, fields) : replaceObject(kubeconfig, ref, fields, resourceVersion);
}

/** coordination.k8s.io/v1 Lease spec. */
export interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

export async function getLease(kubeconfig: string, namespace: string, name: string): Promise<{ spec: LeaseSpec; resourceVersion: string } | undefined> {
  const o = await getObject<{ spec?: LeaseSpec }>(kubeconfig, { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', namespace, name });
  return o && { spec: o.body.spec ?? {}, resourceVersion: o.resourceVersion };
}

/** Writes a Lease: created when `resourceVersion` is undefined, else replaced if unchanged since. */
export async function putLease(kubeconfig: string, namespace: string, name: string, spec: LeaseSpec, resourceVersion: string | undefined): Promise<string> {
  const ref = { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', namespace, name };
  const fields = { spec };
  return resourceVersion === undefined ? createObject(kubeconfig, ref, fields) : replaceObject(kubeconfig, ref, fields, resourceVersion);
}

/**
 * Makes sure a namespace exists: created when missing, never applied over, so that the labels the
 * bootstrap chart gives ferry-system (pod security) stay its own.
 */
export async function ensureNamespace(kubeconfig: string, name: string): Promise<void> {
  const ref = { apiVersion: 'v1', kind: 'Namespace', name };
  if (await getObject(kubeconfig, ref)) return;
  try {
    await createObject(kubeconfig, ref, {});
  } catch (e) {
    // Created by another ferry meanwhile.
    if (!(e instanceof FerryError && e.code === Codes.stateConflict)) throw e;
  }
}

/** A pod as far as the images it runs go. */
export interface PodImages {
  spec?: { containers?: { image?: string }[]; initContainers?: { image?: string }[]; ephemeralContainers?: { image?: string }[] };
  status?: { phase?: string; containerStatuses?: { image?: string; imageID?: string }[]; initContainerStatuses?: { image?: string; imageID?: string }[]; ephemeralContainerStatuses?: { image?: string; imageID?: string }[] };
}

/**
 * The images pods use (issue 19, what bundle prune must keep): each container's image as the spec
 * names it and as the kubelet resolved it (imageID, by digest). Finished pods (Succeeded, Failed)
 * use none.
 */
export function imagesOfPods(pods: PodImages[]): string[] {
  const out = new Set<string>();
  for (const p of pods) {
    if (p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed') continue;
    for (const c of [...(p.spec?.containers ?? []), ...(p.spec?.initContainers ?? []), ...(p.spec?.ephemeralContainers ?? [])]) if (c.image) out.add(c.image);
    for (const s of [...(p.status?.containerStatuses ?? []), ...(p.status?.initContainerStatuses ?? []), ...(p.status?.ephemeralContainerStatuses ?? [])]) {
      if (s.image) out.add(s.image);
      if (s.imageID) out.add(s.imageID);
    }
  }
  return [...out].sort();
}

/** imagesOfPods over every pod of the cluster. */
export async function podImages(kubeconfig: string): Promise<string[]> {
  const api = await call('cannot reach the API', () => client(kubeconfig));
  try {
    const pods = await call('cannot list the pods', () => api.list('v1', 'Pod'));
    return imagesOfPods(pods.items as PodImages[]);
  } catch (e) {
    if (e instanceof FerryError) throw e;
    throw kubeError('cannot list the pods', e);
  }
}
