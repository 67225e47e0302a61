import { promises as fs } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../util/fsx.js';
import { Codes, IntegrityError } from '../errors.js';
import { checkState } from './document.js';
import type { SiteState, Versioned } from './state.js';

/** The state's copy on every server's disk, for when the API does not answer. */
export const STATE_MIRROR = '/var/lib/ferry/site/state.json';

/** The mirror file: the ConfigMap's document and the resourceVersion it copies. */
interface MirrorFile {
  resourceVersion: string;
  /** The ConfigMap's uid: a cluster built again has another, and its resourceVersions start over. */
  uid?: string;
  copiedAt: string;
  state: SiteState;
}

/** resourceVersions are opaque, but etcd's are integers: compared as such when both are, else "differs" counts as newer. */
export function newerVersion(candidate: string, have: string | undefined): boolean {
  if (have === undefined) return true;
  if (/^\d+$/.test(candidate) && /^\d+$/.test(have)) return BigInt(candidate) > BigInt(have);
  return candidate !== have;
}

export class MirrorStore {
  readonly file: string;
  constructor(root = '/') {
    this.file = path.join(root, STATE_MIRROR);
  }

  get where(): string {
    return this.file;
  }

  /** The mirrored document and the resourceVersion it copies; undefined when there is no mirror. */
  async read(): Promise<(Versioned<SiteState> & { copiedAt: string; uid?: string }) | undefined> {
    let text: string;
    try {
      text = await fs.readFile(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    let f: Partial<MirrorFile>;
    try {
      f = JSON.parse(text) as Partial<MirrorFile>;
    } catch (e) {
      throw new IntegrityError(Codes.stateInvalid, `the state mirror ${this.file} is not JSON`, { hint: `Remove it; ferry state mirror copies it again from the cluster.`, cause: e });
    }
    if (typeof f.resourceVersion !== 'string') throw new IntegrityError(Codes.stateInvalid, `the state mirror ${this.file} names no resourceVersion`, { hint: 'Remove it; ferry state mirror copies it again from the cluster.' });
    return { value: checkState(f.state, this.file), version: f.resourceVersion, copiedAt: String(f.copiedAt ?? ''), ...(f.uid ? { uid: f.uid } : {}) };
  }

  /** Keeps `state` of `resourceVersion` unless the mirror already copies a newer one of the same ConfigMap; true when written. */
  async copy(state: SiteState, resourceVersion: string, uid?: string): Promise<boolean> {
    const have = await this.read().catch(() => undefined);
    if (have && (!uid || uid === have.uid) && !newerVersion(resourceVersion, have.version)) return false;
    const f: MirrorFile = { resourceVersion, ...(uid ? { uid } : {}), copiedAt: new Date().toISOString(), state };
    // The answers hold no secrets, but the inventory is the site's map: root only.
    await writeFileAtomic(this.file, `${JSON.stringify(f, null, 2)}\n`, 0o600);
    return true;
  }
}
