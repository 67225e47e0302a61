import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import { Codes, StoreError, UsageError } from '../errors.js';
import { ioError } from '../util/fsx.js';
import { checkEntryPath, FILES, refuse, TABLE, VERSIONS_JSON } from './format.js';

/*
 * A delta bundle: the full bundle's signed table, byte for byte (so a delta and the full bundle it
 * stands for register as the same bundle), then `base.json` and its signature, then only the
 * entries its base lacks. base.json names the base by the digest of its checksums.txt and lists
 * every entry the archive leaves out because the base has it with the same checksum; together
 * with the base, the full table checks every byte.
 */

/** The delta's own signed entries: right after the full table, in this order. */
export const BASE_JSON = 'base.json';
export const BASE_SIG = 'base.json.sig';
export const DELTA_TABLE = [BASE_JSON, BASE_SIG] as const;

export interface DeltaManifest {
  formatVersion: 1;
  base: {
    /** `<name>-<version>` of the base. */
    id: string;
    name: string;
    version: string;
    kubernetesVersion?: string;
    /** sha256 hex of the base's checksums.txt: the base's identity. */
    checksums: string;
  };
  /** Entries of the full table the archive leaves out: the base carries them with the same checksum. */
  fromBase: string[];
}

export const deltaBytes = (d: DeltaManifest) => Buffer.from(`${JSON.stringify(d, null, 2)}\n`);

export function parseDelta(bytes: Buffer, where: string): DeltaManifest {
  let d: DeltaManifest;
  try {
    d = JSON.parse(bytes.toString('utf8')) as DeltaManifest;
  } catch {
    throw refuse(Codes.bundleFormat, `${BASE_JSON} of ${where} is not JSON`);
  }
  const b = d?.base;
  if (!d || d.formatVersion !== 1 || !b || typeof b.id !== 'string' || typeof b.name !== 'string' || typeof b.version !== 'string' || !/^[a-f0-9]{64}$/.test(String(b.checksums)) || !Array.isArray(d.fromBase) || !d.fromBase.every((p) => typeof p === 'string')) {
    throw refuse(Codes.bundleFormat, `${BASE_JSON} of ${where} is not a ferry delta manifest`);
  }
  for (const p of d.fromBase) {
    checkEntryPath(p);
    if ((TABLE as readonly string[]).includes(p) || (DELTA_TABLE as readonly string[]).includes(p)) throw refuse(Codes.bundleFormat, `${BASE_JSON} of ${where} takes ${p} from the base: the signed table is never the base's`);
  }
  return d;
}

/** Which entries of a full table a base with checksums `base` already has (same path, same checksum). */
export function fromBaseOf(full: Map<string, string>, base: Map<string, string>): string[] {
  return [...full].filter(([p, sha]) => p !== TABLE[0] && base.get(p) === sha).map(([p]) => p).sort();
}

/** A label for the base in messages: `site-1.0.0 (checksums sha256 abcdef012345…)`. */
export const baseLabel = (d: DeltaManifest) => `${d.base.id} (checksums.txt sha256 ${d.base.checksums.slice(0, 12)}…)`;

/** The store or tree that should hold the base does not: named, with what to do. */
export function baseMissing(what: string, d: DeltaManifest, where: string, more = ''): UsageError {
  return new UsageError(Codes.bundleBaseMissing, `${what} is a delta on ${baseLabel(d)}, which ${where} does not hold${more}`, {
    hint: `Add ${d.base.id} first (ferry bundle add ${d.base.id}.ferry.tar), or bring the full bundle instead of the delta.`,
  });
}

/** Where an entry the bundle keeps for itself (not a shared blob or binary) sits in a store's bundle view. */
export function ownPath(p: string): string {
  if (p === VERSIONS_JSON) return 'versions.json';
  if (p === 'images/index.json') return 'index.json';
  if (p === 'images/oci-layout') return 'oci-layout';
  if (p.startsWith('images/')) return `.images/${p.slice('images/'.length)}`;
  if (p.startsWith(FILES)) throw new Error(`${p} is a shared binary, not the bundle's own`);
  return p;
}

/** Copies a file into a new file, hashing it: a store's copy must still be what the signed table lists. */
export async function copyChecked(from: string, to: string, sha256: string, mode: number): Promise<void> {
  const h = createHash('sha256');
  const fh = await fs.open(to, 'wx', mode).catch((e: unknown) => Promise.reject(ioError(`cannot write ${to}`, e)));
  try {
    for await (const c of createReadStream(from) as AsyncIterable<Buffer>) {
      h.update(c);
      await fh.write(c);
    }
  } catch (e) {
    throw ioError(`cannot copy ${from} to ${to}`, e);
  } finally {
    await fh.close();
  }
  if (h.digest('hex') !== sha256) throw new StoreError(Codes.storeInvalid, `${from} no longer matches the checksum its bundle lists`, { hint: 'The store was changed by hand. Add that bundle again, or bring the full bundle.' });
}

