import semver from 'semver';
import { Codes, IntegrityError, UsageError } from '../errors.js';
import type { NodeRecord, SiteState } from './state.js';

/*
 * What `ferry upgrade` may do, decided before anything changes: pure, from the site state and the
 * verified table of the offered bundle. Each refusal has its own code; "nothing to do" is an
 * answer, not an error. The rollout order is data here, for the operation layer to run
 * (rollout('servers-first', parallel = maxUnavailable) over `order.nodes` runs exactly `order.waves`).
 */

/** The offered bundle, as its verified signed table says. */
export interface OfferedBundle {
  id: string;
  name: string;
  version: string;
  created: string;
  kubernetesVersion?: string;
  /** The key whose signature verified (SHA256:… fingerprint). */
  fingerprint: string;
  /** sha256 of its checksums.txt. */
  checksums: string;
}

/** The bundle the site runs, as the state records it (and its creation time, from its table in the store). */
export interface InstalledBundle {
  id: string;
  name: string;
  version: string;
  created?: string;
  kubernetesVersion?: string;
  fingerprint: string;
  checksums: string;
}

export type PolicyNode = Pick<NodeRecord, 'name' | 'role' | 'kubernetesVersion'>;

export interface UpgradeInputs {
  nodes: PolicyNode[];
  installed: InstalledBundle;
  offered: OfferedBundle;
  /** The server `ferry upgrade` runs on: it upgrades first (`kubeadm upgrade apply`). */
  firstServer: string;
  /** Agents upgraded at once (--max-unavailable, default 1). */
  maxUnavailable?: number;
  /** Nodes this run upgrades (a re-run skips those done); default every node. */
  upgrading?: string[];
}

/** The waves of the rollout: each wave's nodes at most `width` at once; a wave starts when the one before ended. */
export interface UpgradeOrder<N extends PolicyNode = PolicyNode> {
  nodes: N[];
  waves: { nodes: string[]; width: number }[];
}

export type UpgradeDecision =
  | { action: 'none'; reason: string }
  | {
      action: 'upgrade';
      from: string;
      to: string;
      /** Set when the Kubernetes version changes (kubeadm upgrade); else only the bundle's content moves on. */
      kubernetes?: { from: string; to: string };
      order: UpgradeOrder;
    };

const minorOf = (v: string) => {
  const s = semver.parse(v);
  if (!s) throw new UsageError(Codes.usage, `"${v}" is not a Kubernetes version`, { hint: 'Versions look like v1.37.2.' });
  return s;
};

/**
 * Bundle order: by version when both are semver (and of one name), else by creation time. Returns
 * <0 when a is older than b. (The signed build time and semver order of bundle.json, when they
 * land, replace the created fallback.)
 */
export function compareBundles(a: { name: string; version: string; created?: string }, b: { name: string; version: string; created?: string }): number {
  if (a.name === b.name && semver.valid(a.version) && semver.valid(b.version)) return semver.compare(a.version, b.version);
  if (a.created && b.created) return Date.parse(a.created) - Date.parse(b.created);
  return 0;
}

const list = (names: string[]) => (names.length > 3 ? `${names.slice(0, 3).join(', ')} and ${names.length - 3} more` : names.join(', '));

/** Every refusal, then the plan. Throws the first refusal that applies, in the order the operator should meet them. */
export function decideUpgrade(i: UpgradeInputs): UpgradeDecision {
  const { offered, installed } = i;
  if (offered.fingerprint !== installed.fingerprint) {
    throw new IntegrityError(Codes.upgradeSigner, `${offered.id} is signed by ${offered.fingerprint}; the site's bundles are signed by ${installed.fingerprint}`, {
      hint: 'Build the bundle with the key the site trusts (its ferry.pub), or get it from who holds that key.',
    });
  }
  const target = offered.kubernetesVersion;
  if (!target) throw new UsageError(Codes.usage, `${offered.id} carries no Kubernetes version, so it cannot upgrade a cluster`, { hint: 'Stage it with ferry bundle add instead.' });
  const to = minorOf(target);
  const servers = i.nodes.filter((n) => n.role === 'server');
  if (!servers.length) throw new UsageError(Codes.usage, 'the site state lists no server', { hint: 'ferry state show lists the nodes; run the upgrade on a server of the site.' });
  if (!servers.some((s) => s.name === i.firstServer)) throw new UsageError(Codes.usage, `${i.firstServer} is not a server of the site`, { hint: `Run ferry upgrade on a server: ${list(servers.map((s) => s.name))}.` });

  // Kubernetes never goes back, --allow-downgrade or not.
  const newer = i.nodes.filter((n) => semver.gt(minorOf(n.kubernetesVersion), to));
  if (newer.length) {
    throw new UsageError(Codes.upgradeNotNewer, `${offered.id} carries Kubernetes ${target}, older than ${list(newer.map((n) => `${n.name} (${n.kubernetesVersion})`))}: Kubernetes is never downgraded`, {
      hint: 'Use a bundle with the Kubernetes version the site runs or a newer one; to go back, restore the pre-upgrade etcd snapshot.',
    });
  }
  const sameBundle = offered.id === installed.id;
  if (sameBundle && offered.checksums !== installed.checksums) {
    throw new UsageError(Codes.upgradeNotNewer, `${offered.id} is not the bundle the site runs under that name: its content differs`, { hint: 'A rebuilt bundle needs a new metadata.version.' });
  }
  const cmp = compareBundles(offered, installed);
  const allAtTarget = i.nodes.every((n) => semver.eq(minorOf(n.kubernetesVersion), to));
  // The same bundle again: nothing to do once every node runs it, else a re-run that finishes the job.
  if (sameBundle && allAtTarget) return { action: 'none', reason: `already at ${installed.id} with Kubernetes ${target} on every node: nothing to do` };
  if (!sameBundle && cmp <= 0) {
    throw new UsageError(Codes.upgradeNotNewer, `${offered.id} is older than ${installed.id}, which the site runs: an upgrade never rolls a bundle back`, {
      hint: `Use a bundle newer than ${installed.version}.`,
    });
  }

  // kubeadm moves one minor at a time.
  const skips = i.nodes.filter((n) => {
    const v = minorOf(n.kubernetesVersion);
    return v.major !== to.major || to.minor - v.minor > 1;
  });
  if (skips.length) {
    const oldest = skips.map((n) => minorOf(n.kubernetesVersion)).sort(semver.compare)[0]!;
    throw new UsageError(Codes.upgradeSkipsMinor, `Kubernetes ${target} would skip a minor version on ${list(skips.map((n) => `${n.name} (${n.kubernetesVersion})`))}`, {
      hint: `Upgrade to a v${oldest.major}.${oldest.minor + 1} bundle first: kubeadm moves one minor version at a time.`,
    });
  }

  // The skew rule: no kubelet newer than any API server, once this run is done; and no agent's now
  // (a server's may be, half-way through a rollout of the servers that a re-run finishes).
  const upgrading = new Set(i.upgrading ?? i.nodes.map((n) => n.name));
  const after = (n: PolicyNode) => (upgrading.has(n.name) ? to : minorOf(n.kubernetesVersion));
  for (const [when, version, who] of [
    ['now', (n: PolicyNode) => minorOf(n.kubernetesVersion), i.nodes.filter((n) => n.role !== 'server')],
    ['after this upgrade', after, i.nodes],
  ] as const) {
    const oldestApi = servers.map(version).sort(semver.compare)[0]!;
    const ahead = who.filter((n) => semver.gt(version(n), oldestApi));
    if (ahead.length) {
      const behind = servers.filter((s) => semver.eq(version(s), oldestApi)).map((s) => s.name);
      throw new UsageError(Codes.upgradeKubeletSkew, `${when}, the kubelet of ${list(ahead.map((n) => `${n.name} (v${version(n).version})`))} would be newer than the API server of ${list(behind)} (v${oldestApi.version})`, {
        hint: when === 'now' ? 'Bring the servers up to the newest kubelet first.' : `Upgrade ${list(behind)} in the same run: servers go before agents.`,
      });
    }
  }

  const changes = !allAtTarget;
  const nodes = i.nodes.filter((n) => upgrading.has(n.name));
  return {
    action: 'upgrade',
    from: installed.id,
    to: offered.id,
    ...(changes ? { kubernetes: { from: `v${servers.map((s) => minorOf(s.kubernetesVersion)).sort(semver.compare)[0]!.version}`, to: target } } : {}),
    order: upgradeOrder(nodes, i.firstServer, i.maxUnavailable ?? 1),
  };
}

/**
 * The rollout order: the first server alone, then the other servers one at a time, then the agents
 * in batches of maxUnavailable. `nodes` comes back in that order, so the operation layer's
 * rollout('servers-first', parallel = maxUnavailable) over it keeps the same rule.
 */
export function upgradeOrder<N extends PolicyNode>(nodes: N[], firstServer: string, maxUnavailable: number): UpgradeOrder<N> {
  if (!Number.isSafeInteger(maxUnavailable) || maxUnavailable < 1) throw new UsageError(Codes.usage, `--max-unavailable must be a whole number of at least 1, not ${maxUnavailable}`, { hint: 'The default, 1, takes one agent down at a time.' });
  const first = nodes.filter((n) => n.name === firstServer && n.role === 'server');
  const servers = nodes.filter((n) => n.role === 'server' && n.name !== firstServer);
  const agents = nodes.filter((n) => n.role !== 'server');
  const waves: { nodes: string[]; width: number }[] = [...first, ...servers].map((n) => ({ nodes: [n.name], width: 1 }));
  for (let k = 0; k < agents.length; k += maxUnavailable) waves.push({ nodes: agents.slice(k, k + maxUnavailable).map((n) => n.name), width: maxUnavailable });
  return { nodes: [...first, ...servers, ...agents], waves };
}

/** The decision's inputs from the site state: the installed bundle and node inventory it records. */
export function upgradeInputs(state: Pick<SiteState, 'nodes' | 'bundles' | 'current'>, offered: OfferedBundle, o: { firstServer: string; maxUnavailable?: number; upgrading?: string[]; installedCreated?: string }): UpgradeInputs {
  const cur = state.bundles.find((b) => b.id === state.current);
  if (!cur) throw new UsageError(Codes.stateMissing, `the site state names ${state.current || 'no bundle'} as current, and lists no such bundle`, { hint: 'ferry state show; re-run ferry install on the first server to record it.' });
  return {
    nodes: state.nodes,
    installed: { id: cur.id, name: cur.name, version: cur.version, fingerprint: cur.fingerprint, checksums: cur.checksums, ...(cur.kubernetesVersion ? { kubernetesVersion: cur.kubernetesVersion } : {}), ...(o.installedCreated ? { created: o.installedCreated } : {}) },
    offered,
    firstServer: o.firstServer,
    ...(o.maxUnavailable !== undefined ? { maxUnavailable: o.maxUnavailable } : {}),
    ...(o.upgrading ? { upgrading: o.upgrading } : {}),
  };
}
