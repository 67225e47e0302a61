import type { KeyObject } from 'node:crypto';
import { promises as fs, statfsSync } from 'node:fs';
import path from 'node:path';
import semver from 'semver';
import { Codes, IntegrityError, StoreError, UsageError } from '../errors.js';
import { exists, ioError, mkdirs } from '../util/fsx.js';
import { hashFile, sha256Hex } from '../util/digest.js';
import { formatBytes } from '../util/size.js';
import type { Reporter } from '../util/progress.js';
import { fingerprint, verifyBytes } from '../sign/keys.js';
import { bundleId, CHECKSUMS_TXT, entryMode, parseBundleManifest, parseChecksums, TABLE, type BundleManifest, type TableEntry } from './format.js';
import { baseMissing, copyChecked } from './delta.js';
import { readBundleDelta, readBundleManifest } from './inspect.js';
import { verifyBundle, type VerifyOptions, type VerifyResult } from './verify.js';

/** Written by unpack into every tree it makes: the one sign that a directory is ferry's to replace. */
export const UNPACKED_MARKER = '.ferry-unpacked';

export interface UnpackOptions extends VerifyOptions {
  /** Let a bundle older than the unpacked one, or of unknown order, replace it (--allow-downgrade). */
  allowDowngrade?: boolean;
  /** Let a bundle signed by another key replace the unpacked one (--allow-signer-change). */
  allowSignerChange?: boolean;
}

/**
 * What an unpacked tree or a store's current bundle is, for the rollback and signer checks: its
 * bundle.json, or, when that is missing or damaged, what its marker recorded. A field that is not
 * known makes the order unknown, which counts as a downgrade.
 */
export interface Installed {
  name?: string;
  version?: string;
  created?: string;
  /** The fingerprint the tree was verified against when it was unpacked. */
  signer?: string;
}

/** What unpack writes into UNPACKED_MARKER. */
export const markerRecord = (m: BundleManifest, table: Record<TableEntry, Buffer>, signer: string) => ({
  bundle: bundleId(m),
  name: m.name,
  version: m.version,
  created: m.created,
  checksums: sha256Hex(table['checksums.txt']),
  signer,
});

/** A tree's marker, read back; undefined fields when it is damaged or older. */
export async function readMarker(dir: string): Promise<Installed> {
  try {
    const v = JSON.parse(await fs.readFile(path.join(dir, UNPACKED_MARKER), 'utf8')) as Record<string, unknown>;
    const str = (k: string) => (typeof v?.[k] === 'string' ? { [k]: v[k] as string } : {});
    return { ...str('name'), ...str('version'), ...str('created'), ...str('signer') };
  } catch {
    return {};
  }
}

/**
 * What `dest` holds now: nothing (absent or an empty directory), or a tree ferry unpacked, with its
 * bundle.json when that still reads. Anything else is not ferry's to delete.
 */
export async function currentTree(dest: string, o: { trust?: KeyObject; reporter?: Reporter }): Promise<{ manifest?: BundleManifest; installed: Installed } | undefined> {
  const st = await fs.stat(dest).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  if (!st) return undefined;
  if (!st.isDirectory()) throw notOurs(dest, 'is not a directory');
  const names = await fs.readdir(dest);
  if (!names.length) return undefined;
  if (!names.includes(UNPACKED_MARKER)) {
    const older = o.trust ? await olderFerryTree(dest, o.trust) : { why: 'no --trust key to check its own signed table with' };
    if ('why' in older) throw notOurs(dest, `holds files and no ${UNPACKED_MARKER} (it is not a bundle ferry unpacked: ${older.why})`);
    o.reporter?.info(`${dest} holds ${label(older.manifest)} as an older ferry unpacked it (no ${UNPACKED_MARKER}; its own signed table lists every file there, and each matches): replacing it`);
    return { manifest: older.manifest, installed: { ...installedOf(older.manifest), signer: fingerprint(o.trust!) } };
  }
  const marker = await readMarker(dest);
  const manifest = await fs
    .readFile(path.join(dest, TABLE[0]))
    .then((b) => parseBundleManifest(b, dest))
    .catch(() => undefined);
  // A damaged bundle.json leaves what the marker recorded; what neither says stays unknown.
  if (!manifest) o.reporter?.warn(`${dest}/${TABLE[0]} is missing or damaged: comparing with what ${UNPACKED_MARKER} recorded${marker.version ? ` (${marker.name ?? '?'} ${marker.version})` : ', which names no version'}`);
  return manifest ? { manifest, installed: { ...installedOf(manifest), ...(marker.signer ? { signer: marker.signer } : {}) } } : { installed: marker };
}

const notOurs = (dir: string, what: string) =>
  new UsageError(Codes.unpackNotOurs, `${dir} ${what}, so ferry will not replace it`, {
    hint: `Choose a new or empty directory for --to, or move ${dir} away if it is yours. A bundle an older ferry unpacked there is recognised with --trust and the key that signed it, when it holds nothing but its signed files, unchanged.`,
  });

export const installedOf = (m: BundleManifest): Installed => ({ name: m.name, version: m.version, created: m.created });

/**
 * A tree unpacked before UNPACKED_MARKER existed: its own signed table (which unpack has always
 * kept) verifies under the trusted key, lists every file below it, and every file matches its
 * listed hash. Anything more, a link, a changed file, or a table that does not check, and the tree
 * is not ferry's to replace: an operator's edit is never deleted with it.
 */
async function olderFerryTree(dest: string, trust: KeyObject): Promise<{ manifest: BundleManifest } | { why: string }> {
  try {
    const small = async (name: string) => {
      const f = path.join(dest, name);
      if ((await fs.lstat(f)).size > 64 << 20) throw new Error(`${name} is too large`);
      return fs.readFile(f);
    };
    const [json, sums, sig] = await Promise.all(TABLE.map(small));
    verifyBytes(trust, sums!, sig!.toString('utf8'), CHECKSUMS_TXT);
    const listed = parseChecksums(sums!.toString('utf8'));
    if (listed.get('bundle.json') !== sha256Hex(json!)) return { why: 'its bundle.json does not match its checksums.txt' };
    const walk = async (rel: string): Promise<string | undefined> => {
      for (const e of await fs.readdir(path.join(dest, rel), { withFileTypes: true })) {
        const r = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) {
          const why = await walk(r);
          if (why) return why;
        } else if (!e.isFile()) return `${r} is not a regular file`;
        else if (!(TABLE as readonly string[]).includes(r)) {
          const want = listed.get(r);
          if (!want) return `${r} is not in its signed table`;
          if ((await hashFile(path.join(dest, r))).digest !== `sha256:${want}`) return `${r} differs from its signed table (changed since it was unpacked)`;
        }
      }
      return undefined;
    };
    const why = await walk('');
    return why ? { why } : { manifest: parseBundleManifest(json!, dest) };
  } catch (e) {
    return { why: `its signed table does not verify under --trust (${(e as Error).message})` };
  }
}

export const label = (m: BundleManifest) => `${m.name} ${m.version} (created ${m.created})`;

/**
 * Why `incoming` would roll `installed` back, or undefined when it is the same or newer. The order
 * is explicit: the spec's semver version, then, for the same version, the build time the bundle
 * signs (`created`). An unreadable time counts as older; versions that are not both semver and
 * differ, or a version not known, have no order, which counts as a downgrade. Only bundles of one
 * name are compared (the caller checks the name).
 */
export function downgradeOf(installed: Installed, incoming: Installed): string | undefined {
  const iv = installed.version;
  const nv = incoming.version;
  if (iv === undefined || nv === undefined) return 'the version of one of them is not known, so their order is not';
  const both = semver.valid(iv) && semver.valid(nv);
  if (both ? semver.compare(nv, iv) < 0 : false) return 'its version is lower';
  if (both ? semver.compare(nv, iv) > 0 : iv !== nv) return both ? undefined : `${iv} and ${nv} are not both semver versions, so their order is not known`;
  const ti = Date.parse(installed.created ?? '');
  const tn = Date.parse(incoming.created ?? '');
  if (Number.isNaN(tn)) return installed.created === incoming.created ? (installed.created === undefined ? 'neither creation time is known' : undefined) : 'its creation time cannot be read, which counts as older';
  if (Number.isNaN(ti)) return undefined;
  return tn < ti ? 'it was created earlier' : undefined;
}

const labelOf = (i: Installed) => `${i.name ?? '(unknown bundle)'} ${i.version ?? '(unknown version)'} (created ${i.created ?? 'unknown'})`;

/**
 * Refuses a rollback: a bundle of the same name that is older or of unknown order, unless
 * allowDowngrade. A bundle of another name is not compared by version; it replaces the installed
 * one, and the reporter says so.
 */
export function checkDowngrade(dest: string, installed: Installed | undefined, incoming: BundleManifest, o: { allowDowngrade?: boolean; reporter?: Reporter }): void {
  if (!installed) return;
  if (installed.name !== undefined && installed.name !== incoming.name) {
    o.reporter?.warn(`${dest} holds ${labelOf(installed)}; ${label(incoming)} is another bundle, so their versions are not compared: replacing it`);
    return;
  }
  const why = downgradeOf(installed, installedOf(incoming));
  if (!why) return;
  const msg = `${dest} holds ${labelOf(installed)}; ${label(incoming)} is older or of unknown order: ${why}`;
  if (o.allowDowngrade) {
    o.reporter?.warn(`${msg}; replacing it anyway (--allow-downgrade)`);
    return;
  }
  throw new UsageError(Codes.bundleDowngrade, `refusing to roll back: ${msg}`, {
    hint: `Use a bundle of ${installed.name ?? 'that name'} newer than ${installed.version ?? 'the installed one'}, or pass --allow-downgrade if you mean to go back.`,
  });
}

/**
 * Refuses a bundle signed by another key than the installed one was, unless allowSignerChange;
 * with it, the change is said in the log. `signer` is the verified fingerprint.
 */
export function checkSigner(dest: string, installed: Installed | undefined, signer: string, o: { allowSignerChange?: boolean; reporter?: Reporter }): void {
  if (!installed?.signer || installed.signer === signer) return;
  const msg = `${dest} holds ${labelOf(installed)}, signed by ${installed.signer}; the new bundle is signed by ${signer}`;
  if (o.allowSignerChange) {
    o.reporter?.warn(`${msg}: the signer changes (--allow-signer-change)`);
    return;
  }
  throw new UsageError(Codes.bundleSignerChanged, `refusing to change the signer: ${msg}`, {
    hint: 'Check that the new key is meant to sign this site\'s bundles, then pass --allow-signer-change.',
  });
}

/**
 * Removes a directory unpack left beside `dest` (its staging or the tree moved aside) only when it
 * is provably ferry's: empty, or holding UNPACKED_MARKER or STAGING_MARKER. Anything else is refused.
 */
export async function removeOwnLeftover(dir: string): Promise<void> {
  const st = await fs.lstat(dir).catch(() => undefined);
  if (!st) return;
  const names = st.isDirectory() ? await fs.readdir(dir) : undefined;
  if (!names || (names.length && !names.includes(UNPACKED_MARKER) && !names.includes(STAGING_MARKER))) throw notOurs(dir, `is in the way and holds no ${UNPACKED_MARKER} or ${STAGING_MARKER}`);
  await fs.rm(dir, { recursive: true, force: true }).catch((e: unknown) => Promise.reject(ioError(`cannot remove ${dir}`, e)));
}

/**
 * `dest` holds the tree of this signed table: its marker records the same checksums.txt digest, and
 * every entry the table lists is there (a file removed since is put back by a real unpack).
 */
async function sameTree(dest: string, t: VerifyResult): Promise<boolean> {
  const marker = await fs.readFile(path.join(dest, UNPACKED_MARKER), 'utf8').then((x) => JSON.parse(x) as { checksums?: unknown }).catch(() => undefined);
  if (marker?.checksums !== sha256Hex(t.table['checksums.txt'])) return false;
  for (const p of parseChecksums(t.table['checksums.txt'].toString('utf8')).keys()) {
    if (!(await fs.stat(path.join(dest, p)).then((st) => st.isFile(), () => false))) return false;
  }
  return true;
}

/** Written first into a staging directory, so a later run knows it for ferry's own. */
export const STAGING_MARKER = '.ferry-staging';

/**
 * Verifies while extracting into a staging directory beside `to`, and moves the tree into place
 * only when every entry checks out. A refused bundle leaves `to` as it was; a re-run after an
 * interruption starts a fresh staging directory. `to` is replaced only when it is empty or a tree
 * ferry unpacked (it holds UNPACKED_MARKER), and not by an older bundle unless allowDowngrade.
 */
export async function unpackBundle(input: string, to: string, o: UnpackOptions = {}): Promise<VerifyResult & { dir: string; already?: boolean }> {
  const dest = path.resolve(to);
  const parent = path.dirname(dest);
  // The host's filesystem failing (read-only, full, no permission) is an io error, never a bug.
  const local = <T>(what: string, op: Promise<T>): Promise<T> => op.catch((e: unknown) => Promise.reject(ioError(what, e)));
  await local(`cannot create ${parent}`, mkdirs(parent));
  const staging = path.join(parent, `.${path.basename(dest)}.ferry-staging`);
  const old = `${dest}.ferry-old`;
  const current = await currentTree(dest, o);
  await removeOwnLeftover(staging);
  await removeOwnLeftover(old);
  // The same signed table unpacked here already, by the same signer, every entry in place: only the table is read.
  let accepted: string | undefined;
  if (current?.manifest) {
    const t = await verifyBundle(input, { ...o, tableOnly: true, confirm: o.confirm && (async (fp) => ((await o.confirm!(fp)) ? ((accepted = fp), true) : false)) });
    if ((await sameTree(dest, t)) && (!current.installed.signer || current.installed.signer === t.fingerprint)) {
      o.reporter?.info(`${dest} already holds ${label(t.manifest)}, unpacked from this same signed table (signed by ${t.fingerprint}): nothing to do`);
      return { ...t, entries: 0, bytes: 0, dir: dest, already: true };
    }
  }
  // A fingerprint the operator just accepted is not asked about twice.
  if (accepted) {
    const ask = o.confirm!;
    o = { ...o, confirm: async (fp) => fp === accepted || ask(fp) };
  }
  // Disk preflight and a first rollback check from the (not yet trusted) table: a lie here only
  // changes whether we try; the verified manifest is checked again before anything is replaced.
  const manifest = await readBundleManifest(input);
  if (!o.allowDowngrade) checkDowngrade(dest, current?.installed, manifest, o);
  // A delta applies only onto the tree of its exact base (checked again once its table is verified).
  const treeSums = async () => (current ? sha256Hex(await fs.readFile(path.join(dest, CHECKSUMS_TXT)).catch(() => Buffer.alloc(0))) : undefined);
  const claimed = await readBundleDelta(input);
  if (claimed && claimed.base.checksums !== (await treeSums())) throw baseMissing(input, claimed, dest);
  const st = statfsSync(parent);
  const free = Number(st.bavail) * Number(st.bsize);
  const need = manifest.contentSize + 64 * 1024 * 1024;
  if (free < need) {
    throw new StoreError(Codes.storeIo, `not enough space in ${parent}: the bundle needs ${formatBytes(need)}, ${formatBytes(free)} is free`, {
      hint: 'Free space there, or unpack to a larger filesystem with --to.',
    });
  }
  await local(`cannot create ${staging}`, mkdirs(staging, 0o755));
  await local(`cannot write ${staging}`, fs.writeFile(path.join(staging, STAGING_MARKER), ''));
  try {
    const res = await verifyBundle(input, {
      ...o,
      extractTo: async (p, mode) => {
        const target = path.join(staging, p);
        // checkEntryPath already refused .. and absolute paths; stay inside staging regardless.
        if (!target.startsWith(staging + path.sep)) throw new IntegrityError(Codes.bundleTraversal, `entry ${p} leaves the staging directory`);
        await local(`cannot create ${path.dirname(target)}`, mkdirs(path.dirname(target)));
        void mode;
        return target;
      },
    });
    checkDowngrade(dest, current?.installed, res.manifest, o);
    checkSigner(dest, current?.installed, res.fingerprint, o);
    const d = res.delta?.manifest;
    if (d) {
      if (d.base.checksums !== (await treeSums())) throw baseMissing(input, d, dest);
      const sums = parseChecksums(res.table['checksums.txt'].toString('utf8'));
      for (const p of d.fromBase) {
        await local(`cannot create ${path.dirname(path.join(staging, p))}`, mkdirs(path.dirname(path.join(staging, p))));
        await copyChecked(path.join(dest, p), path.join(staging, p), sums.get(p)!, entryMode(p));
      }
    }
    // Keep the signed table too, so the unpacked tree can be checked again later.
    for (const [name, bytes] of Object.entries(res.table)) await local(`cannot write ${path.join(staging, name)}`, fs.writeFile(path.join(staging, name), bytes, { mode: 0o644 }));
    const marker = markerRecord(res.manifest, res.table, res.fingerprint);
    await local(`cannot write ${path.join(staging, UNPACKED_MARKER)}`, fs.writeFile(path.join(staging, UNPACKED_MARKER), `${JSON.stringify(marker)}\n`, { mode: 0o644 }));
    await local(`cannot write ${staging}`, fs.rm(path.join(staging, STAGING_MARKER)));
    if (await exists(dest)) await local(`cannot move ${dest} aside`, fs.rename(dest, old));
    await local(`cannot move ${staging} to ${dest}`, fs.rename(staging, dest));
    await local(`cannot remove ${old}`, fs.rm(old, { recursive: true, force: true }));
    return { ...res, dir: dest };
  } catch (e) {
    // Ours: made above, and still marked.
    await removeOwnLeftover(staging).catch(() => {});
    throw e;
  }
}
