/*
 * The site's state: what ferry knows of the cluster, kept in the cluster (ConfigMap `ferry-site` in
 * `ferry-system`) and mirrored to every server's disk for when the API is down. Any server reads and
 * updates it; every update is a compare-and-swap on the store's version.
 *
 * This file is the contract between the state room (stores, lease, journal) and its users (install,
 * the operation layer, the CLI). It holds types and pure functions only.
 */

import type { InstallAnswers } from '../spec/answers.js';

export const STATE_API_VERSION = 'ferry.dev/v1alpha1';
export const STATE_KIND = 'SiteState';
/** Where the state lives in the cluster. */
export const STATE_NAMESPACE = 'ferry-system';
export const STATE_CONFIGMAP = 'ferry-site';
/** The key of the ConfigMap that holds the document (JSON). */
export const STATE_KEY = 'state.json';
/** The Lease object that one multi-node operation holds at a time. */
export const OPERATION_LEASE = 'ferry-operation';

export type NodeRole = 'server' | 'agent';

/** One node as ferry knows it. */
export interface NodeRecord {
  name: string;
  ip: string;
  role: NodeRole;
  /** linux/amd64, linux/arm64 */
  platform: string;
  kubernetesVersion: string;
  /** The id of the bundle the node was installed or last upgraded from. */
  bundle: string;
  /** ISO 8601 */
  joinedAt: string;
}

/** One bundle in the site store. */
export interface BundleRecord {
  /** `<name>-<version>`, as the store registers it. */
  id: string;
  name: string;
  version: string;
  /** The signer's key fingerprint (SHA256:…). */
  fingerprint: string;
  kubernetesVersion?: string;
  /** sha256 of the bundle's checksums.txt: what makes two bundles of one id the same. */
  checksums: string;
  addedAt: string;
}

/** One entry of an operation's journal: a step of the operation, on one node or on the site. */
export interface JournalEntry {
  /** `<node>/<step>` or `site/<step>` */
  key: string;
  at: string;
}

/** The multi-node operation in progress (absent when none is). */
export interface OperationRecord {
  id: string;
  /** join, upgrade, reset, certs-renew, backup, restore */
  kind: string;
  /** Who runs it: `<node>/<pid>`. */
  holder: string;
  startedAt: string;
  /** What it was asked to do, enough for a re-run to check it is the same operation. */
  args: Record<string, unknown>;
  /** Steps finished, in order: a re-run skips them. */
  journal: JournalEntry[];
}

/** The site's answers without secrets, this node's own and the hosts to join: what every server needs to act on the cluster. */
export type SiteAnswers = Omit<InstallAnswers, 'apiVersion' | 'kind' | 'node' | 'join' | 'clusterFqdn'> & { clusterFqdn: string };

export interface SiteState {
  apiVersion: typeof STATE_API_VERSION;
  kind: typeof STATE_KIND;
  answers: SiteAnswers;
  nodes: NodeRecord[];
  bundles: BundleRecord[];
  /** The bundle the cluster runs (an id of `bundles`). */
  current: string;
  operation?: OperationRecord;
}

/** A state read from a store, with the version a write must name to replace it. */
export interface Versioned<T> {
  value: T;
  /** The ConfigMap's resourceVersion, or the mirror's sequence number. */
  version: string;
}

/**
 * Where the state is kept. `write` replaces the document only if the store still holds `version`
 * (undefined: only if there is none yet), and refuses otherwise with STATE_CONFLICT.
 */
export interface StateStore {
  readonly where: string;
  read(): Promise<Versioned<SiteState> | undefined>;
  write(value: SiteState, version: string | undefined): Promise<string>;
}

/**
 * The state as its users see it: read from the cluster (or, when the API does not answer, the
 * local mirror, with a warning), and updated by a compare-and-swap loop that re-reads and re-applies
 * `fn` on a conflict, then refreshes the local mirror.
 */
export interface SiteStateAccess {
  read(): Promise<SiteState | undefined>;
  /** `fn` edits the document in place (or returns a new one); it may run more than once. */
  update(fn: (s: SiteState) => SiteState | void): Promise<SiteState>;
}

/** The site's one operation lease, held while a multi-node operation runs (renewed in the background). */
export interface OperationLease {
  readonly holder: string;
  release(): Promise<void>;
}

export interface LeaseProvider {
  /**
   * Takes the lease for `holder`. Held by another live holder: refused with OPERATION_IN_PROGRESS
   * naming it, or, with `wait`, polled until it is free. An expired lease is taken over.
   */
  acquire(holder: string, o?: { wait?: boolean; onWait?: (holder: string) => void }): Promise<OperationLease>;
}
