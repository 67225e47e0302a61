import { promises as fs, statfsSync } from 'node:fs';
import path from 'node:path';
import { Codes, FerryError } from '../errors.js';
import { exists, ioError, mkdirs } from '../util/fsx.js';
import { formatBytes } from '../util/size.js';
import { TABLE } from './format.js';
import { readBundleManifest } from './inspect.js';
import { verifyBundle, type VerifyOptions, type VerifyResult } from './verify.js';

/**
 * Verifies while extracting into a staging directory beside `to`, and moves the tree into place
 * only when every entry checks out. A refused bundle leaves `to` as it was; a re-run after an
 * interruption starts a fresh staging directory.
 */
export async function unpackBundle(input: string, to: string, o: VerifyOptions & { force?: boolean } = {}): Promise<VerifyResult & { dir: string }> {
  const dest = path.resolve(to);
  const parent = path.dirname(dest);
  // The host's filesystem failing (read-only, full, no permission) is an io error, never a bug.
  const local = <T>(what: string, op: Promise<T>): Promise<T> => op.catch((e: unknown) => Promise.reject(ioError(what, e)));
  await local(`cannot create ${parent}`, mkdirs(parent));
  const staging = path.join(parent, `.${path.basename(dest)}.ferry-staging`);
  await local(`cannot clear ${staging}`, fs.rm(staging, { recursive: true, force: true }));
  if ((await exists(dest)) && !o.force) {
    const marker = path.join(dest, TABLE[0]);
    if (!(await exists(marker))) {
      throw new FerryError(Codes.usage, `${dest} exists and is not an unpacked bundle`, { exit: 'usage', hint: 'Choose an empty or new directory for --to.' });
    }
  }
  // Disk preflight from the (not yet trusted) table: a lie here only changes whether we try.
  const manifest = await readBundleManifest(input);
  const st = statfsSync(parent);
  const free = Number(st.bavail) * Number(st.bsize);
  const need = manifest.contentSize + 64 * 1024 * 1024;
  if (free < need) {
    throw new FerryError(Codes.storeIo, `not enough space in ${parent}: the bundle needs ${formatBytes(need)}, ${formatBytes(free)} is free`, {
      exit: 'io',
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
        if (!target.startsWith(staging + path.sep)) throw new FerryError(Codes.bundleTraversal, `entry ${p} leaves the staging directory`, { exit: 'integrity' });
        await local(`cannot create ${path.dirname(target)}`, mkdirs(path.dirname(target)));
        void mode;
        return target;
      },
    });
    // Keep the signed table too, so the unpacked tree can be checked again later.
    for (const [name, bytes] of Object.entries(res.table)) await local(`cannot write ${path.join(staging, name)}`, fs.writeFile(path.join(staging, name), bytes, { mode: 0o644 }));
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
