import type { KeyObject } from 'node:crypto';
import { promises as fs, statfsSync } from 'node:fs';
import path from 'node:path';
import semver from 'semver';
import { Codes, IntegrityError, StoreError, UsageError } from '../errors.js';
import { exists, ioError, mkdirs } from '../util/fsx.js';
import { sha256Hex } from '../util/digest.js';
import { formatBytes } from '../util/size.js';
import type { Reporter } from '../util/progress.js';
import { verifyBytes } from '../sign/keys.js';
import { bundleId, CHECKSUMS_TXT, entryMode, parseBundleManifest, parseChecksums, TABLE, type BundleManifest } from './format.js';
import { baseMissing, copyChecked } from './delta.js';
import { readBundleDelta, readBundleManifest } from './inspect.js';
import { verifyBundle, type VerifyOptions, type VerifyResult } from './verify.js';

/** Written by unpack into every tree it makes: the one sign that a directory is ferry's to replace. */
export const UNPACKED_MARKER = '.ferry-unpacked';

export interface UnpackOptions extends VerifyOptions {
  /** Let a bundle older than the unpacked one replace it (--allow-downgrade). */
  allowDowngrade?: boolean;
}

/**
 * What `dest` holds now: nothing (absent or an empty directory), or a tree ferry unpacked, with its
 * bundle.json when that still reads. Anything else is not ferry's to delete.
 */
export async function currentTree(dest: string, o: { trust?: KeyObject; reporter?: Reporter }): Promise<{ manifest?: BundleManifest } | undefined> {
  const st = await fs.stat(dest).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  if (!st) return undefined;
  const notOurs = (what: string) =>
    new UsageError(Codes.unpackNotOurs, `${dest} ${what}, so ferry will not replace it`, {
      hint: `Choose a new or empty directory for --to. A bundle an older ferry unpacked there is recognised with --trust and the key that signed it, when it holds nothing but its signed files.`,
    });
  if (!st.isDirectory()) throw notOurs('is not a directory');
  const names = await fs.readdir(dest);
  if (!names.length) return undefined;
  if (!names.includes(UNPACKED_MARKER)) {
    const older = o.trust && (await olderFerryTree(dest, o.trust));
    if (!older) throw notOurs(`holds files and no ${UNPACKED_MARKER} (it is not a bundle ferry unpacked)`);
    o.reporter?.info(`${dest} holds ${label(older)} as an older ferry unpacked it (no ${UNPACKED_MARKER}; its own signed table lists every file there): replacing it`);
    return { manifest: older };
  }
  const manifest = await fs
    .readFile(path.join(dest, TABLE[0]))
    .then((b) => parseBundleManifest(b, dest))
    .catch(() => undefined);
  return manifest ? { manifest } : {};
}

/**
 * A tree unpacked before UNPACKED_MARKER existed: its own signed table (which unpack has always
 * kept) verifies under the trusted key, and lists every file below it. Anything more, a link, or a
 * table that does not check, and the tree is not ferry's to replace.
 */
async function olderFerryTree(dest: string, trust: KeyObject): Promise<BundleManifest | undefined> {
  try {
    const small = async (name: string) => {
      const f = path.join(dest, name);
      if ((await fs.lstat(f)).size > 64 << 20) throw new Error(`${name} is too large`);
      return fs.readFile(f);
    };
    const [json, sums, sig] = await Promise.all(TABLE.map(small));
    verifyBytes(trust, sums!, sig!.toString('utf8'), CHECKSUMS_TXT);
    const listed = parseChecksums(sums!.toString('utf8'));
    if (listed.get('bundle.json') !== sha256Hex(json!)) return undefined;
    const allowed = new Set<string>([...TABLE, ...listed.keys()]);
    const walk = async (rel: string): Promise<boolean> => {
      for (const e of await fs.readdir(path.join(dest, rel), { withFileTypes: true })) {
        const r = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory() ? !(await walk(r)) : !e.isFile() || !allowed.has(r)) return false;
      }
      return true;
    };
    return (await walk('')) ? parseBundleManifest(json!, dest) : undefined;
  } catch {
    return undefined;
  }
}

export const label = (m: BundleManifest) => `${m.name} ${m.version} (created ${m.created})`;

/** Why `incoming` would roll `installed` back: older by creation time, or by version when both are semver. */
function downgradeOf(installed: BundleManifest, incoming: BundleManifest): string | undefined {
  const why: string[] = [];
  if (Date.parse(incoming.created) < Date.parse(installed.created)) why.push('it was created earlier');
  if (semver.valid(incoming.version) && semver.valid(installed.version) && semver.lt(incoming.version, installed.version)) why.push('its version is lower');
  return why.length ? why.join(' and ') : undefined;
}

export function checkDowngrade(dest: string, installed: BundleManifest | undefined, incoming: BundleManifest, o: { allowDowngrade?: boolean; reporter?: Reporter }): void {
  const why = installed && downgradeOf(installed, incoming);
  if (!why) return;
  const msg = `${dest} holds ${label(installed)}; ${label(incoming)} is older: ${why}`;
  if (o.allowDowngrade) {
    o.reporter?.warn(`${msg}; replacing it anyway (--allow-downgrade)`);
    return;
  }
  throw new UsageError(Codes.bundleDowngrade, `refusing to roll back: ${msg}`, {
    hint: `Use a bundle at least as new as ${installed.name} ${installed.version}, or pass --allow-downgrade if you mean to go back.`,
  });
}

/**
 * Verifies while extracting into a staging directory beside `to`, and moves the tree into place
 * only when every entry checks out. A refused bundle leaves `to` as it was; a re-run after an
 * interruption starts a fresh staging directory. `to` is replaced only when it is empty or a tree
 * ferry unpacked (it holds UNPACKED_MARKER), and not by an older bundle unless allowDowngrade.
 */
export async function unpackBundle(input: string, to: string, o: UnpackOptions = {}): Promise<VerifyResult & { dir: string }> {
  const dest = path.resolve(to);
  const parent = path.dirname(dest);
  // The host's filesystem failing (read-only, full, no permission) is an io error, never a bug.
  const local = <T>(what: string, op: Promise<T>): Promise<T> => op.catch((e: unknown) => Promise.reject(ioError(what, e)));
  await local(`cannot create ${parent}`, mkdirs(parent));
  const staging = path.join(parent, `.${path.basename(dest)}.ferry-staging`);
  await local(`cannot clear ${staging}`, fs.rm(staging, { recursive: true, force: true }));
  const current = await currentTree(dest, o);
  // Disk preflight and a first rollback check from the (not yet trusted) table: a lie here only
  // changes whether we try; the verified manifest is checked again before anything is replaced.
  const manifest = await readBundleManifest(input);
  if (!o.allowDowngrade) checkDowngrade(dest, current?.manifest, manifest, o);
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
    checkDowngrade(dest, current?.manifest, res.manifest, o);
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
    const marker = { bundle: bundleId(res.manifest), created: res.manifest.created, checksums: sha256Hex(res.table['checksums.txt']), signer: res.fingerprint };
    await local(`cannot write ${path.join(staging, UNPACKED_MARKER)}`, fs.writeFile(path.join(staging, UNPACKED_MARKER), `${JSON.stringify(marker)}\n`, { mode: 0o644 }));
    const old = `${dest}.ferry-old`;
    await local(`cannot remove ${old}`, fs.rm(old, { recursive: true, force: true }));
    if (await exists(dest)) await local(`cannot move ${dest} aside`, fs.rename(dest, old));
    await local(`cannot move ${staging} to ${dest}`, fs.rename(staging, dest));
    await local(`cannot remove ${old}`, fs.rm(old, { recursive: true, force: true }));
    return { ...res, dir: dest };
  } catch (e) {
    await fs.rm(staging, { recursive: true, force: true }).catch(() => {});
    throw e;
  }
}
