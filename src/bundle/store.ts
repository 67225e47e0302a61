import { createPublicKey } from 'node:crypto';
import { promises as fs, statfsSync } from 'node:fs';
import path from 'node:path';
import semver from 'semver';
import { Codes, IntegrityError, StoreError, UsageError } from '../errors.js';
import { CONTAINERD_NAME, REF_NAME } from '../oci/layout.js';
import type { Descriptor } from '../oci/media.js';
import { parseReference } from '../oci/reference.js';
import { sha256Hex } from '../util/digest.js';
import { exists, ioError, mkdirs, writeFileAtomic } from '../util/fsx.js';
import type { Reporter } from '../util/progress.js';
import { formatBytes } from '../util/size.js';
import { baseLabel, baseMissing, copyChecked, ownPath, type DeltaManifest } from './delta.js';
import { bundleId, entryMode, FILES, parseBundleManifest, parseChecksums, refuse, TABLE, VERSIONS_JSON, versionsJson, type BundleFile, type BundleManifest } from './format.js';
import { checkDowngrade, checkSigner, installedOf, label, markerRecord, readMarker, UNPACKED_MARKER, type Installed } from './unpack.js';
import { verifyBundle, type VerifyOptions } from './verify.js';

/*
 * The site store: every bundle a site added, content stored once.
 *
 *   .ferry-store            ferry made this directory (nothing here is deleted without it)
 *   images/                 one OCI layout: every bundle's blobs once by digest; index.json is the union
 *   files/                  every bundle's binaries (their paths carry the version); versions.json is the union
 *   checksums.txt           the union's files/ lines, what /files/checksums.txt serves
 *   current                 the id of the bundle the cluster runs
 *   bundles/<id>/           each bundle's signed table, its own index.json and versions.json, install.sh,
 *                           ferry/ and runtime/; images and files link to the union, so the directory
 *                           reads like an unpacked bundle (BUNDLE_DIR links to the current one)
 *   .staging/<id>/          an add under way; a re-run starts it afresh and skips what landed
 *
 * `ferry serve` of the store (or of any bundle's view) serves the union: a tag two bundles carry at
 * different digests is the current (else the newest) bundle's, the other stays reachable by digest.
 */

export const STORE_MARKER = '.ferry-store';
const BLOB_ENTRY = /^images\/blobs\/sha256\/([a-f0-9]{64})$/;
const OCI_LAYOUT = '{"imageLayoutVersion":"1.0.0"}\n';

export interface StoredBundle {
  id: string;
  name: string;
  version: string;
  kubernetesVersion: string | null;
  fingerprint: string;
  current: boolean;
  created: string;
}

export interface AddResult {
  id: string;
  manifest: BundleManifest;
  fingerprint: string;
  /** Already registered with the same signed table: nothing was written but the union. */
  already: boolean;
  blobsAdded: number;
  filesAdded: number;
  bytesWritten: number;
}

export interface PruneOptions {
  /** Keep exactly these (and the current one); without it: the current, any newer, and the previous one. */
  keep?: string[];
  /** Without keep: the previous bundle goes too. */
  all?: boolean;
  /**
   * The images running pods use (refs, `name@sha256:…`, or `sha256:…`, as the API's imageID or
   * crictl report them): a bundle that holds one is kept, and so is any blob named.
   */
  inUse?: Iterable<string>;
}

export interface PrunePlan {
  /** Bundles kept, and why (current, newer than current, the previous bundle, --keep, in use: IMAGE). */
  kept: { id: string; why: string }[];
  bundles: string[];
  blobs: string[];
  files: string[];
  bytes: number;
  /** files/ paths no bundle ever listed: not provably ferry's, so left. */
  unknown: string[];
}

/** Versions order bundles of one name only; otherwise the signed build time, an unreadable one oldest. */
const newestFirst = (a: BundleManifest, b: BundleManifest) => {
  if (a.name === b.name && semver.valid(a.version) && semver.valid(b.version) && semver.compare(a.version, b.version) !== 0) return semver.rcompare(a.version, b.version);
  const t = (m: BundleManifest) => (Number.isNaN(Date.parse(m.created)) ? -Infinity : Date.parse(m.created));
  return t(b) === t(a) ? 0 : t(b) > t(a) ? 1 : -1;
};

export class SiteStore {
  private constructor(readonly dir: string) {}

  /**
   * Opens the store at `dir`, making it when absent or empty. A directory holding anything else is
   * not ferry's, and is refused.
   */
  static async open(dir: string, o: { create?: boolean } = {}): Promise<SiteStore> {
    const d = path.resolve(dir);
    const names = await fs.readdir(d).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined;
      throw ioError(`cannot read ${d}`, e);
    });
    if (names && names.includes(STORE_MARKER)) return new SiteStore(d);
    if (names?.length || o.create === false) {
      throw new UsageError(Codes.storeNotOurs, names?.length ? `${d} holds files and no ${STORE_MARKER}: it is not a ferry site store` : `${d} is not a ferry site store`, {
        hint: names?.length ? 'Point --store at a new or empty directory, or at a store ferry made.' : 'Add a bundle first: ferry bundle add BUNDLE --trust ferry.pub.',
      });
    }
    const local = <T>(what: string, op: Promise<T>) => op.catch((e: unknown) => Promise.reject(ioError(what, e)));
    await local(`cannot create ${d}`, mkdirs(path.join(d, 'images', 'blobs', 'sha256')));
    await local(`cannot create ${d}`, mkdirs(path.join(d, 'files')));
    await local(`cannot create ${d}`, mkdirs(path.join(d, 'bundles')));
    await writeFileAtomic(path.join(d, 'images', 'oci-layout'), OCI_LAYOUT);
    const s = new SiteStore(d);
    await s.refresh();
    await writeFileAtomic(path.join(d, STORE_MARKER), `${JSON.stringify({ format: 1 })}\n`);
    return s;
  }

  private bundleDir = (id: string) => path.join(this.dir, 'bundles', id);
  blobPath = (hex: string) => path.join(this.dir, 'images', 'blobs', 'sha256', hex);

  /** The directory that reads like an unpacked bundle of `id` (what BUNDLE_DIR links to). */
  viewOf(id: string): string {
    return this.bundleDir(id);
  }

  /** Registered bundles: a directory below bundles/ with its marker and bundle.json (an add renames it there last). */
  async ids(): Promise<string[]> {
    const names = await fs.readdir(path.join(this.dir, 'bundles')).catch(() => [] as string[]);
    const out: string[] = [];
    for (const n of names.sort()) if (await exists(path.join(this.bundleDir(n), UNPACKED_MARKER))) out.push(n);
    return out;
  }

  async manifest(id: string): Promise<BundleManifest> {
    const f = path.join(this.bundleDir(id), TABLE[0]);
    return parseBundleManifest(await fs.readFile(f), f);
  }

  private async sums(id: string): Promise<Map<string, string>> {
    return parseChecksums(await fs.readFile(path.join(this.bundleDir(id), TABLE[1]), 'utf8'));
  }

  /** What a registered bundle is, for the rollback and signer checks: its bundle.json, else what its marker recorded. */
  async installed(id: string): Promise<Installed> {
    const marker = await readMarker(this.bundleDir(id));
    const m = await this.manifest(id).catch(() => undefined);
    return m ? { ...installedOf(m), ...(marker.signer ? { signer: marker.signer } : {}) } : marker;
  }

  async current(): Promise<string | undefined> {
    const t = await fs.readFile(path.join(this.dir, 'current'), 'utf8').catch(() => undefined);
    const id = t?.trim();
    return id && (await exists(path.join(this.bundleDir(id), UNPACKED_MARKER))) ? id : undefined;
  }

  async list(): Promise<StoredBundle[]> {
    const cur = await this.current();
    const out: StoredBundle[] = [];
    for (const id of await this.ids()) {
      const m = await this.manifest(id);
      const marker = JSON.parse(await fs.readFile(path.join(this.bundleDir(id), UNPACKED_MARKER), 'utf8')) as { signer?: string };
      out.push({ id, name: m.name, version: m.version, kubernetesVersion: m.kubernetes?.version ?? null, fingerprint: marker.signer ?? m.signer.fingerprint, current: id === cur, created: m.created });
    }
    return out;
  }

  /** files/ path → sha256 over every registered bundle but `except`. */
  private async unionFiles(except?: string): Promise<Map<string, { sha: string; id: string }>> {
    const out = new Map<string, { sha: string; id: string }>();
    for (const id of await this.ids()) {
      if (id === except) continue;
      for (const [p, sha] of await this.sums(id)) if (p.startsWith(FILES) && p !== VERSIONS_JSON && !out.has(p)) out.set(p, { sha, id });
    }
    return out;
  }

  /**
   * Verifies a bundle (signature first, then every byte as it streams) and adds what the store
   * lacks: staged, then moved into place only when all of it checked out. Re-running an
   * interrupted add finishes it; adding a registered bundle again writes nothing.
   */
  async add(input: string, o: VerifyOptions = {}): Promise<AddResult> {
    const local = <T>(what: string, op: Promise<T>): Promise<T> => op.catch((e: unknown) => Promise.reject(ioError(what, e)));
    // The signed table first: what the store must check before a byte of content is written.
    const table = await verifyBundle(input, { ...o, tableOnly: true });
    const m = table.manifest;
    const id = bundleId(m);
    const sums = parseChecksums(table.table['checksums.txt'].toString('utf8'));
    // A blob is shared by its name, so its name must be its content's digest.
    for (const [p, sha] of sums) {
      const b = BLOB_ENTRY.exec(p);
      if (b && b[1] !== sha) throw refuse(Codes.bundleChecksum, `entry ${p} is listed with checksum ${sha}: a blob's name must be its digest`);
    }
    const registered = await exists(path.join(this.bundleDir(id), UNPACKED_MARKER));
    if (registered) {
      const have = await fs.readFile(path.join(this.bundleDir(id), TABLE[1]));
      if (!have.equals(table.table['checksums.txt'])) {
        throw new UsageError(Codes.storeBundleClash, `the store already holds a bundle ${id} with other content`, {
          hint: `A rebuilt bundle needs a new metadata.version; or prune ${id} first (ferry bundle prune --keep …) if it is not in use.`,
        });
      }
    }
    const union = await this.unionFiles(id);
    for (const [p, sha] of sums) {
      const other = union.get(p);
      if (other && other.sha !== sha) {
        throw new UsageError(Codes.storeFileClash, `${id} carries ${p} with other content than ${other.id} (sha256 ${sha.slice(0, 12)}… against ${other.sha.slice(0, 12)}…)`, {
          hint: 'Binaries are stored by a path that carries their version, so two bundles must agree on it: rebuild one with the same binary, or prune the other first.',
        });
      }
    }
    if (registered) {
      await this.refresh();
      return { id, manifest: m, fingerprint: table.fingerprint, already: true, blobsAdded: 0, filesAdded: 0, bytesWritten: 0 };
    }
    // A delta: the store must hold its exact base, with everything the delta leaves to it, before anything changes.
    const base = table.delta ? await this.deltaBase(input, table.delta.manifest, sums) : undefined;

    const staging = path.join(this.dir, '.staging', id);
    await local(`cannot clear ${staging}`, fs.rm(staging, { recursive: true, force: true }));
    const need = m.contentSize + 64 * 1024 * 1024;
    const st = statfsSync(this.dir);
    const free = Number(st.bavail) * Number(st.bsize);
    if (free < need) throw new StoreError(Codes.storeIo, `not enough space in ${this.dir}: the bundle needs up to ${formatBytes(need)}, ${formatBytes(free)} is free`, { hint: 'Free space there (ferry bundle prune removes what no bundle needs).' });
    const own = path.join(staging, 'bundle');
    await local(`cannot create ${own}`, mkdirs(own, 0o755));
    const blobs: string[] = [];
    const files: string[] = [];
    let bytesWritten = 0;
    const stageAt = async (target: string) => {
      if (!target.startsWith(staging + path.sep)) throw refuse(Codes.bundleTraversal, `an entry leaves the staging directory`);
      await local(`cannot create ${path.dirname(target)}`, mkdirs(path.dirname(target)));
      return target;
    };
    try {
      const res = await verifyBundle(input, {
        ...o,
        // The signer the table was checked against (confirmed at a prompt, if it was): asked once.
        trust: o.trust ?? (m.signer?.publicKey ? createPublicKey(m.signer.publicKey) : undefined),
        extractTo: async (p) => {
          const b = BLOB_ENTRY.exec(p);
          if (b) {
            if (await exists(this.blobPath(b[1]!))) return undefined;
            blobs.push(b[1]!);
            return stageAt(path.join(staging, 'blobs', b[1]!));
          }
          if (p === VERSIONS_JSON) return stageAt(path.join(own, 'versions.json'));
          if (p.startsWith(FILES)) {
            const rel = p.slice(FILES.length);
            if (union.get(p)?.sha === sums.get(p) && (await exists(path.join(this.dir, p)))) return undefined;
            files.push(rel);
            return stageAt(path.join(staging, 'files', rel));
          }
          if (p === 'images/index.json') return stageAt(path.join(own, 'index.json'));
          if (p === 'images/oci-layout') return stageAt(path.join(own, 'oci-layout'));
          // Anything else the bundle's own: install.sh, ferry/, runtime/.
          if (p.startsWith('images/')) return stageAt(path.join(own, '.images', p.slice('images/'.length)));
          return stageAt(path.join(own, p));
        },
      });
      if (!res.table['checksums.txt'].equals(table.table['checksums.txt'])) throw refuse(Codes.bundleInputMismatch, `${input} changed while it was read`);
      // What the delta left to its base and the bundle keeps for itself (install.sh, ferry/, its index …): copied from the base's view.
      for (const p of base?.own ?? []) await copyChecked(path.join(this.bundleDir(base!.id), ownPath(p)), await stageAt(path.join(own, ownPath(p))), sums.get(p)!, entryMode(p));
      // All of it checked out: content first (a blob or file in place is always verified), the bundle last.
      for (const hex of blobs) {
        const from = path.join(staging, 'blobs', hex);
        bytesWritten += (await fs.stat(from)).size;
        await local(`cannot move ${hex} into ${this.dir}`, fs.rename(from, this.blobPath(hex)));
      }
      for (const rel of files) {
        const from = path.join(staging, 'files', rel);
        const to = path.join(this.dir, FILES, rel);
        bytesWritten += (await fs.stat(from)).size;
        await local(`cannot create ${path.dirname(to)}`, mkdirs(path.dirname(to)));
        await local(`cannot move ${rel} into ${this.dir}`, fs.rename(from, to));
      }
      for (const [name, bytes] of Object.entries(res.table)) await local(`cannot write ${name}`, fs.writeFile(path.join(own, name), bytes, { mode: 0o644 }));
      await local('cannot link the union', fs.symlink('../../images', path.join(own, 'images')));
      await local('cannot link the union', fs.symlink('../../files', path.join(own, 'files')));
      const marker = markerRecord(res.manifest, res.table, res.fingerprint);
      await local('cannot write the marker', fs.writeFile(path.join(own, UNPACKED_MARKER), `${JSON.stringify(marker)}\n`, { mode: 0o644 }));
      await local(`cannot create ${path.join(this.dir, 'bundles')}`, mkdirs(path.join(this.dir, 'bundles')));
      // A directory left by an add killed between its rename and its marker is not registered: replace it.
      await local(`cannot clear ${this.bundleDir(id)}`, fs.rm(this.bundleDir(id), { recursive: true, force: true }));
      await local(`cannot register ${id}`, fs.rename(own, this.bundleDir(id)));
      await fs.rm(staging, { recursive: true, force: true }).catch(() => {});
      await this.refresh();
      return { id, manifest: res.manifest, fingerprint: res.fingerprint, already: false, blobsAdded: blobs.length, filesAdded: files.length, bytesWritten };
    } catch (e) {
      await fs.rm(staging, { recursive: true, force: true }).catch(() => {});
      throw e;
    }
  }

  /**
   * The registered bundle a delta's base.json names (by its checksums.txt digest), and the entries
   * it leaves to that base which the bundle keeps for itself. Refuses, naming the base, when the
   * store does not hold it, and when the base lacks anything the delta takes from it.
   */
  private async deltaBase(input: string, d: DeltaManifest, sums: Map<string, string>): Promise<{ id: string; own: string[] }> {
    let baseId: string | undefined;
    const ids = await this.ids();
    for (const id of ids) {
      if (sha256Hex(await fs.readFile(path.join(this.bundleDir(id), TABLE[1]))) === d.base.checksums) baseId = id;
    }
    if (!baseId) throw baseMissing(input, d, `the store ${this.dir}`, `; it holds ${ids.join(', ') || 'no bundle'}`);
    const baseSums = await this.sums(baseId);
    const own: string[] = [];
    for (const p of d.fromBase) {
      if (baseSums.get(p) !== sums.get(p)) throw new IntegrityError(Codes.bundleBaseMismatch, `${input} takes ${p} from ${baseLabel(d)}, which lists it with another checksum`, { hint: 'The delta was not built on this base. Bring the full bundle.' });
      const b = BLOB_ENTRY.exec(p);
      const at = b ? this.blobPath(b[1]!) : p.startsWith(FILES) && p !== VERSIONS_JSON ? path.join(this.dir, p) : path.join(this.bundleDir(baseId), ownPath(p));
      if (!b && !(p.startsWith(FILES) && p !== VERSIONS_JSON)) own.push(p);
      if (!(await exists(at))) throw new StoreError(Codes.storeMissing, `the store's copy of ${baseId} lacks ${p} (${at}), which the delta ${input} takes from it`, { hint: `Add ${baseId} again (ferry bundle add) to repair it, or bring the full bundle.` });
    }
    return { id: baseId, own };
  }

  /**
   * Makes `id` the bundle the cluster runs: its tags win in the union. An older bundle never
   * replaces a newer one without allowDowngrade.
   */
  async setCurrent(id: string, o: { allowDowngrade?: boolean; allowSignerChange?: boolean; reporter?: Reporter } = {}): Promise<void> {
    if (!(await exists(path.join(this.bundleDir(id), UNPACKED_MARKER)))) throw new UsageError(Codes.storeBundleUnknown, `the store holds no bundle ${id}`, { hint: 'ferry bundle list shows what it holds.' });
    const cur = await this.current();
    if (cur && cur !== id) {
      const where = `the site store (current: ${cur})`;
      const installed = await this.installed(cur);
      checkDowngrade(where, installed, await this.manifest(id), o);
      const signer = (await readMarker(this.bundleDir(id))).signer;
      if (signer) checkSigner(where, installed, signer, o);
    }
    await writeFileAtomic(path.join(this.dir, 'current'), `${id}\n`);
    await this.refresh();
  }

  /** Rewrites the union: images/index.json, files/versions.json and checksums.txt, from the registered bundles. */
  async refresh(): Promise<void> {
    const cur = await this.current();
    const bundles: { id: string; m: BundleManifest }[] = [];
    for (const id of await this.ids()) bundles.push({ id, m: await this.manifest(id) });
    bundles.sort((a, b) => (a.id === cur ? -1 : b.id === cur ? 1 : newestFirst(a.m, b.m)));
    const index: Descriptor[] = [];
    const named = new Map<string, string>();
    const seen = new Set<string>();
    const files = new Map<string, BundleFile>();
    const lines = new Map<string, string>();
    for (const { id, m } of bundles) {
      const t = await fs.readFile(path.join(this.bundleDir(id), 'index.json'), 'utf8').catch(() => undefined);
      const own = t ? ((JSON.parse(t) as { manifests?: Descriptor[] }).manifests ?? []) : [];
      for (const d of own) {
        const name = d.annotations?.[REF_NAME];
        if (name && named.get(name) === d.digest) continue;
        if (name && named.has(name)) {
          // Another bundle's tag won: this image stays reachable by its digest.
          let byDigest: string;
          try {
            const r = parseReference(name, { defaultTag: false });
            byDigest = `${r.registry}/${r.repository}@${d.digest}`;
          } catch {
            continue;
          }
          if (seen.has(byDigest)) continue;
          seen.add(byDigest);
          index.push({ ...d, annotations: { ...d.annotations, [REF_NAME]: byDigest, [CONTAINERD_NAME]: byDigest } });
          continue;
        }
        if (name) named.set(name, d.digest);
        else if (seen.has(d.digest)) continue;
        seen.add(name ?? d.digest);
        index.push(d);
      }
      for (const f of m.files) if (!files.has(f.path)) files.set(f.path, f);
      for (const [p, sha] of await this.sums(id)) if (p.startsWith(FILES) && p !== VERSIONS_JSON && !lines.has(p)) lines.set(p, sha);
    }
    const versions = versionsJson([...files.values()]);
    lines.set(VERSIONS_JSON, sha256Hex(versions));
    await writeFileAtomic(path.join(this.dir, VERSIONS_JSON), versions);
    await writeFileAtomic(path.join(this.dir, 'checksums.txt'), [...lines].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([p, sha]) => `${sha}  ${p}\n`).join(''));
    await writeFileAtomic(path.join(this.dir, 'images', 'index.json'), `${JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: index }, null, 2)}\n`);
  }

  /**
   * What pruning would remove: the bundles older than the current one but the previous (all of them
   * with `all`; all but `keep` when given), never a bundle that holds an image in use, then every
   * blob and file no kept bundle lists. Without a current bundle nothing is older: only unused content goes.
   */
  async prunePlan(o: PruneOptions = {}): Promise<PrunePlan> {
    const ids = await this.ids();
    const cur = await this.current();
    const keep = o.keep?.length ? o.keep : undefined;
    for (const k of keep ?? []) if (!ids.includes(k)) throw new UsageError(Codes.storeBundleUnknown, `the store holds no bundle ${k}`, { hint: `It holds: ${ids.join(', ') || '(none)'}.` });
    const why = new Map<string, string>();
    if (cur) why.set(cur, 'current');
    const manifests = new Map<string, BundleManifest>();
    for (const id of ids) manifests.set(id, await this.manifest(id));
    if (keep) for (const k of keep) if (!why.has(k)) why.set(k, '--keep');
    if (!keep && !cur) for (const id of ids) why.set(id, 'no bundle is current, so none is older');
    if (!keep && cur) {
      const curM = manifests.get(cur)!;
      const older = ids.filter((id) => id !== cur && newestFirst(curM, manifests.get(id)!) < 0).sort((a, b) => newestFirst(manifests.get(a)!, manifests.get(b)!));
      for (const id of ids) if (id !== cur && !older.includes(id)) why.set(id, 'newer than the current bundle');
      if (!o.all && older[0]) why.set(older[0], 'the previous bundle');
    }
    // What running pods use stays, whatever was asked: a bundle is kept for an image in use that no kept bundle holds.
    const used = inUseOf(o.inUse ?? []);
    const blobsOf = async (id: string) => [...(await this.sums(id)).keys()].map((p) => BLOB_ENTRY.exec(p)?.[1]).filter((h): h is string => !!h);
    const keptBlobs = new Set<string>();
    const keptImages = new Set<string>();
    const keepContent = async (id: string) => {
      for (const h of await blobsOf(id)) keptBlobs.add(h);
      for (const i of manifests.get(id)!.images) keptImages.add(`${normalRef(i.ref)}@${i.digest}`);
    };
    for (const id of why.keys()) await keepContent(id);
    for (const id of ids) {
      if (why.has(id)) continue;
      const m = manifests.get(id)!;
      const byTag = m.images.find((i) => used.refs.has(normalRef(i.ref)) && !keptImages.has(`${normalRef(i.ref)}@${i.digest}`));
      const byDigest = (await blobsOf(id)).find((h) => used.digests.has(h) && !keptBlobs.has(h));
      if (!byTag && !byDigest) continue;
      const named = byDigest ? (m.images.find((i) => i.digest === `sha256:${byDigest}`)?.ref ?? `sha256:${byDigest}`) : byTag!.ref;
      why.set(id, `in use by a running pod: ${named}`);
      await keepContent(id);
    }
    const kept = new Set(why.keys());
    const neededBlobs = new Set<string>();
    const neededFiles = new Set<string>();
    const everListed = new Set<string>();
    for (const id of ids) {
      for (const [p] of await this.sums(id)) {
        const b = BLOB_ENTRY.exec(p);
        if (p.startsWith(FILES) && p !== VERSIONS_JSON) everListed.add(p.slice(FILES.length));
        if (!kept.has(id)) continue;
        if (b) neededBlobs.add(b[1]!);
        else if (p.startsWith(FILES)) neededFiles.add(p.slice(FILES.length));
      }
    }
    let bytes = 0;
    const blobs: string[] = [];
    for (const hex of await fs.readdir(path.join(this.dir, 'images', 'blobs', 'sha256')).catch(() => [] as string[])) {
      // Only names that are digests: ferry put those there.
      if (!/^[a-f0-9]{64}$/.test(hex) || neededBlobs.has(hex) || used.digests.has(hex)) continue;
      blobs.push(hex);
      bytes += (await fs.stat(this.blobPath(hex))).size;
    }
    const files: string[] = [];
    const unknown: string[] = [];
    const walk = async (rel: string): Promise<void> => {
      for (const e of await fs.readdir(path.join(this.dir, FILES, rel), { withFileTypes: true }).catch(() => [])) {
        const r = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) await walk(r);
        else if (r === 'versions.json' || neededFiles.has(r)) continue;
        else if (everListed.has(r)) {
          files.push(r);
          bytes += (await fs.lstat(path.join(this.dir, FILES, r))).size;
        } else unknown.push(r);
      }
    };
    await walk('');
    return { kept: ids.filter((id) => kept.has(id)).map((id) => ({ id, why: why.get(id)! })), bundles: ids.filter((id) => !kept.has(id)), blobs, files, bytes, unknown };
  }

  /** Removes what a plan names: bundles first (the union stops naming them), then their content. */
  async prune(plan: PrunePlan): Promise<void> {
    const local = <T>(what: string, op: Promise<T>) => op.catch((e: unknown) => Promise.reject(ioError(what, e)));
    for (const id of plan.bundles) {
      // Unregister first (the marker goes), so a kill half-way leaves no half bundle registered.
      await local(`cannot remove ${id}`, fs.rm(path.join(this.bundleDir(id), UNPACKED_MARKER), { force: true }));
      await local(`cannot remove ${id}`, fs.rm(this.bundleDir(id), { recursive: true, force: true }));
    }
    await this.refresh();
    for (const hex of plan.blobs) await local(`cannot remove blob ${hex}`, fs.rm(this.blobPath(hex), { force: true }));
    for (const rel of plan.files) {
      await local(`cannot remove ${rel}`, fs.rm(path.join(this.dir, FILES, rel), { force: true }));
      // The directories of its version and arch, once empty (rmdir removes nothing else).
      for (let d = path.dirname(rel); d !== '.'; d = path.dirname(d)) if (!(await fs.rmdir(path.join(this.dir, FILES, d)).then(() => true, () => false))) break;
    }
    await fs.rm(path.join(this.dir, '.staging'), { recursive: true, force: true }).catch(() => {});
  }
}

/** A reference in one spelling: what parseReference makes of it (docker.io/library/… for short names), else as given. */
function normalRef(ref: string): string {
  try {
    const r = parseReference(ref);
    return `${r.registry}/${r.repository}${r.tag ? `:${r.tag}` : ''}`;
  } catch {
    return ref;
  }
}

/** The in-use list as digests (hex) and tag references; `docker-pullable://` and the like are dropped. */
function inUseOf(list: Iterable<string>): { digests: Set<string>; refs: Set<string> } {
  const digests = new Set<string>();
  const refs = new Set<string>();
  for (const raw of list) {
    const s = raw.trim().replace(/^[a-z-]+:\/\//, '');
    if (!s) continue;
    const d = /sha256:([a-f0-9]{64})/.exec(s);
    // A digest names the image exactly; a tag alone is matched by name.
    if (d) digests.add(d[1]!);
    else refs.add(normalRef(s));
  }
  return { digests, refs };
}

/** A line for an added bundle. */
export const addedLine = (r: AddResult) =>
  r.already ? `${label(r.manifest)} is already in the store` : `added ${label(r.manifest)}: ${r.blobsAdded} blobs and ${r.filesAdded} files new (${formatBytes(r.bytesWritten)}), signed by ${r.fingerprint}`;
