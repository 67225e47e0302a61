import { Codes, FerryError, RemoteError, UsageError } from '../errors.js';
import { ensureNamespace, getConfigMap, putConfigMap, unreachable } from '../kube/client.js';
import { sleep } from '../util/limit.js';
import { silentReporter, type Reporter } from '../util/progress.js';
import { checkState, parseState, renderState } from './document.js';
import { MirrorStore } from './mirror.js';
import { STATE_CONFIGMAP, STATE_KEY, STATE_NAMESPACE, type NodeRecord, type SiteState, type SiteStateAccess, type StateStore, type Versioned } from './state.js';

/** The state in the cluster: ConfigMap ferry-site/state.json in ferry-system, written by resourceVersion. */
export class ConfigMapStore implements StateStore {
  readonly where = `ConfigMap ${STATE_NAMESPACE}/${STATE_CONFIGMAP}`;
  constructor(private readonly kubeconfig: string) {}

  /** `uid`: the ConfigMap's identity; a cluster built again starts its resourceVersions over. */
  async read(): Promise<(Versioned<SiteState> & { uid?: string }) | undefined> {
    const cm = await getConfigMap(this.kubeconfig, STATE_NAMESPACE, STATE_CONFIGMAP);
    if (!cm) return undefined;
    const text = cm.data[STATE_KEY];
    if (text === undefined) return undefined;
    return { value: parseState(text, this.where), version: cm.resourceVersion, uid: cm.uid };
  }

  async write(value: SiteState, version: string | undefined): Promise<string> {
    checkState(value, 'the document about to be written');
    return putConfigMap(this.kubeconfig, STATE_NAMESPACE, STATE_CONFIGMAP, { [STATE_KEY]: renderState(value) }, version);
  }
}

export interface SiteStateOptions {
  /** The admin kubeconfig (host path, root prefix included). */
  kubeconfig: string;
  /** The root prefix of the mirror (tests); default /. */
  root?: string;
  reporter?: Reporter;
  /** Compare-and-swap attempts before giving up with STATE_CONFLICT. */
  attempts?: number;
}

/** SiteStateAccess, and what only the state's own commands and install need. */
export interface SiteStateHandle extends SiteStateAccess {
  readonly cluster: ConfigMapStore;
  readonly mirror: MirrorStore;
  /** Writes the first document (the first server, or migration); STATE_CONFLICT when one exists. */
  create(s: SiteState): Promise<void>;
  /** The document and where it came from: the cluster, or the mirror when the API does not answer. */
  readFrom(): Promise<{ state: SiteState; version: string; source: 'cluster' | 'mirror'; copiedAt?: string } | undefined>;
}

const missing = () =>
  new UsageError(Codes.stateMissing, 'there is no site state in the cluster', { hint: 'Run ferry install on the first server (it writes the state), or on a server installed by an older ferry, run it again to migrate nodes.json.' });

export function openSiteState(o: SiteStateOptions): SiteStateHandle {
  const cluster = new ConfigMapStore(o.kubeconfig);
  const mirror = new MirrorStore(o.root ?? '/');
  const reporter = o.reporter ?? silentReporter;
  const attempts = o.attempts ?? 12;
  // A mirror is best effort: a reader without write access to it (not root) still reads the cluster.
  const keep = async (s: SiteState, rv: string, uid?: string) => {
    try {
      await mirror.copy(s, rv, uid);
    } catch (e) {
      reporter.verbose(`state mirror ${mirror.file} not refreshed: ${(e as Error).message}`);
    }
  };
  const readFrom: SiteStateHandle['readFrom'] = async () => {
    try {
      const v = await cluster.read();
      if (!v) return undefined;
      await keep(v.value, v.version, v.uid);
      return { state: v.value, version: v.version, source: 'cluster' };
    } catch (e) {
      if (!unreachable(e)) throw e;
      const m = await mirror.read();
      if (!m) throw e;
      reporter.warn(`the Kubernetes API does not answer (${(e as Error).message.split('\n')[0]}); using this server's state mirror ${mirror.file}, copied ${m.copiedAt} (resourceVersion ${m.version}), which may be behind`);
      return { state: m.value, version: m.version, source: 'mirror', copiedAt: m.copiedAt };
    }
  };
  return {
    cluster,
    mirror,
    readFrom,
    read: async () => (await readFrom())?.state,
    create: async (s) => {
      await ensureNamespace(o.kubeconfig, STATE_NAMESPACE);
      const rv = await cluster.write(s, undefined);
      await keep(s, rv);
    },
    update: async (fn) => {
      for (let i = 1; ; i++) {
        const cur = await cluster.read();
        if (!cur) throw missing();
        const draft = structuredClone(cur.value);
        const next = fn(draft) ?? draft;
        try {
          const rv = await cluster.write(next, cur.version);
          await keep(next, rv, cur.uid);
          return structuredClone(next);
        } catch (e) {
          if (!(e instanceof FerryError && e.code === Codes.stateConflict)) throw e;
          if (i >= attempts) throw new RemoteError(Codes.stateConflict, `the site state kept changing under ${attempts} attempts to update it`, { hint: 'Other ferry runs update it at the same time; run the command again when they finish.', cause: e });
          reporter.verbose(`site state changed while updating it (attempt ${i}); reading it again`);
          // Two writers that collided must not collide again in step.
          await sleep(20 + Math.floor(Math.random() * 30 * i));
        }
      }
    },
  };
}

/** Adds (or, by name, replaces) nodes in the inventory: what a join records when it finished. */
export async function addNodes(site: SiteStateAccess, nodes: NodeRecord[]): Promise<SiteState> {
  return site.update((s) => {
    for (const n of nodes) {
      const i = s.nodes.findIndex((x) => x.name === n.name);
      if (i >= 0) s.nodes[i] = n;
      else s.nodes.push(n);
    }
  });
}

/** One refresh of this server's mirror from the cluster (`ferry state mirror`, its timer). */
export async function refreshMirror(o: { kubeconfig: string; root?: string }): Promise<{ resourceVersion?: string; updated: boolean; where: string }> {
  const cluster = new ConfigMapStore(o.kubeconfig);
  const mirror = new MirrorStore(o.root ?? '/');
  const v = await cluster.read();
  if (!v) return { updated: false, where: mirror.file };
  return { resourceVersion: v.version, updated: await mirror.copy(v.value, v.version, v.uid), where: mirror.file };
}
