/* Where the site in a box keeps things, and the pinned component versions (versions.env). */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const SITE_SCRIPTS = path.join(ROOT, 'scripts/site');

/** Component builds, by version; kept across runs (outside the checkout). */
export const CACHE = process.env.FERRY_SITE_CACHE ?? path.join(os.homedir(), '.cache/ferry-site');
/** One site's state: hosts' disks, the bundle, keys. Removed by `down`. */
export const WORK = process.env.FERRY_SITE_WORK ?? '/var/tmp/ferry-site';
export const STATE_FILE = path.join(WORK, 'state.json');

export type Versions = Record<
  'KUBERNETES' | 'ETCD' | 'COREDNS' | 'PAUSE' | 'CONTAINERD' | 'RUNC' | 'CNI_PLUGINS' | 'CRICTL' | 'HELM' | 'FLANNEL' | 'FLANNEL_CNI_PLUGIN' | 'NODE',
  string
>;

/** The site can be installed at the current release or at the previous one (to prove an upgrade). */
export type Release = 'current' | 'previous';
export const RELEASES: readonly Release[] = ['current', 'previous'];

/** What differs between the releases: versions.env pins the previous one's as PREVIOUS_<NAME>. */
export const RELEASE_PINS = ['KUBERNETES', 'ETCD', 'COREDNS'] as const;

/** The pins of one release: the previous one's Kubernetes, etcd and CoreDNS, every other component shared. */
export function versions(release: Release = 'current'): Versions {
  const all: Record<string, string> = {};
  for (const line of readFileSync(path.join(SITE_SCRIPTS, 'versions.env'), 'utf8').split('\n')) {
    const m = /^([A-Z_]+)=(\S+)$/.exec(line.trim());
    if (m) all[m[1]!] = m[2]!;
  }
  // Only the component names, in file order: buildImages keys its cache on this object.
  const out = Object.fromEntries(Object.entries(all).filter(([k]) => !k.startsWith('PREVIOUS_')));
  if (release === 'previous') {
    for (const k of RELEASE_PINS) {
      const v = all[`PREVIOUS_${k}`];
      if (!v) throw new Error(`versions.env has no PREVIOUS_${k}`);
      out[k] = v;
    }
  }
  return out as Versions;
}

/** The cache directory of one built component. */
export const built = (name: string, version: string) => path.join(CACHE, 'bin', `${name}-${version}`);
