import { createPublicKey, type KeyObject } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Codes, HostError, UsageError } from '../errors.js';
import type { RegistryClient } from '../oci/client.js';
import { collectImage } from '../oci/copy.js';
import { Layout } from '../oci/layout.js';
import { isIndexType, MediaType, type Descriptor } from '../oci/media.js';
import { fingerprint, signBytes, verifyBytes } from '../sign/keys.js';
import { assertNoDrift, readLock, resolveAll, writeLock } from '../spec/lock.js';
import { loadSpec, narrowPlatforms } from '../spec/spec.js';
import { hashFile, sha256Hex } from '../util/digest.js';
import { writeFileAtomic } from '../util/fsx.js';
import { cacheDir, cacheStoreDir, specBaseDir } from '../util/paths.js';
import { silentReporter, type Reporter } from '../util/progress.js';
import { writeArchive, type ArchiveEntry } from './archive.js';
import { fetchBinaries, type FetchedFile } from './binaries.js';
import { fetchCharts, type PackedChart } from './charts.js';
import { BASE_JSON, BASE_SIG, deltaBytes, fromBaseOf, type DeltaManifest } from './delta.js';
import type { BinaryMirror } from './fetch.js';
import {
  bundleId,
  CHECKSUMS_TXT,
  checksumsText,
  entryMode,
  FERRY_FILES_LIST,
  FERRY_VERSION,
  FORMAT_VERSION,
  INSTALL_SH,
  manifestBytes,
  parseBundleManifest,
  parseChecksums,
  partsFileOf,
  partsSigningBytes,
  TABLE,
  VERSIONS_JSON,
  versionsJson,
  writePartsManifest,
  type BundleManifest,
  type PartsManifest,
} from './format.js';
import { chartArchive, checkBundleImages, findHelm } from './image-check.js';
import { bundledReferrers, lockedPlatforms, pullImages } from './images.js';
import { fetchRuntimes, type FetchedRuntime } from './runtime.js';
import { verifyBundle } from './verify.js';

const publicOf = (k: KeyObject) => createPublicKey(k);


/**
 * Where the bundled ferry lives: dist/ferry/ (ferry.mjs and its lazily loaded chunks) beside the
 * compiled sources, or the directory of the running ferry.mjs, so a bundle carries the very ferry
 * that built it.
 */
function defaultFerryDir(): string {
  const here = fileURLToPath(import.meta.url);
  if (path.basename(here) === 'ferry.mjs' || path.basename(here) === 'main.mjs') return path.dirname(here);
  // A command's code is a lazily loaded chunk, in ferry/chunks/.
  if (here.endsWith('.mjs') && path.basename(path.dirname(here)) === 'chunks') return path.dirname(path.dirname(here));
  return path.resolve(path.dirname(here), '..', 'ferry');
}

/**
 * Every file of the bundled ferry, as archive entries under ferry/: exactly the files its own list
 * (FERRY_FILES_LIST, written by the build) names, which its guard checks its directory against on
 * every start. A file the list does not name, or one changed since, fails the build.
 */
async function ferryEntries(dir: string): Promise<ArchiveEntry[]> {
  const listed = parseChecksums(await fs.readFile(path.join(dir, FERRY_FILES_LIST), 'utf8'));
  const out: ArchiveEntry[] = [];
  const walk = async (rel: string) => {
    for (const e of await fs.readdir(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(r);
      else {
        const h = e.isFile() ? await hashFile(path.join(dir, r)) : undefined;
        if (r !== FERRY_FILES_LIST && (!h || listed.get(r) !== h.digest.slice(7))) throw new Error(`${path.join(dir, r)} is not the file ${FERRY_FILES_LIST} lists`);
        out.push({ path: `ferry/${r}`, size: h!.size, sha256: h!.digest.slice(7), source: path.join(dir, r), mode: 0o644 });
      }
    }
  };
  await walk('');
  const missing = [...listed.keys()].filter((f) => !out.some((e) => e.path === `ferry/${f}`));
  if (missing.length) throw new Error(`${dir} lacks ${missing.join(', ')}`);
  if (!out.some((e) => e.path === 'ferry/ferry.mjs')) throw new Error(`${dir} has no ferry.mjs`);
  return out;
}

export interface BuildOptions {
  specFile: string;
  lockFile: string;
  key: KeyObject;
  out: string;
  partSize?: number;
  client: RegistryClient;
  reporter?: Reporter;
  updateLock?: boolean;
  /** The bundled ferry's directory (ferry.mjs and chunks/); default dist/ferry. */
  ferryDir?: string;
  /** Override the creation time (also from SOURCE_DATE_EPOCH). */
  created?: Date;
  /** --binary-mirror: where binaries, charts and the runtime are fetched from instead of upstream. */
  binaryMirrors?: BinaryMirror[];
  /** --platform: carry only these of the spec's platforms. */
  platforms?: string[];
  /** --offline: fetch nothing; the cache must hold every input and resolution. */
  offline?: boolean;
  /** --since: write a delta on this base (its archive, parts.json, or the bundle.json of an unpacked tree or store view). */
  since?: string;
}

export interface BuildResult {
  out: string;
  parts?: string;
  size: number;
  entries: number;
  manifest: BundleManifest;
  /** A delta: what it leaves to its base. */
  delta?: DeltaManifest;
  /** A delta: the bytes of content it carries, and the bytes the full bundle would carry. */
  carried?: { bytes: number; fullBytes: number };
}

/**
 * The base of a delta: its signed table, checked against the key the delta is signed with (a site
 * trusts one key, so a delta on a base of another key could never be added).
 */
async function readBase(since: string, key: KeyObject): Promise<{ manifest: BundleManifest; checksums: Buffer }> {
  const unreadable = (why: string, cause?: unknown) =>
    new UsageError(Codes.bundleBaseUnreadable, `cannot use ${since} as the base: ${why}`, {
      hint: 'Pass the base bundle (FILE or FILE.parts.json with its parts), or the bundle.json of a tree it was unpacked or added to (checksums.txt and its signature beside it), signed with the same --key.',
      ...(cause ? { cause } : {}),
    });
  try {
    if (path.basename(since) === TABLE[0]) {
      const dir = path.dirname(since);
      const [json, sums, sig] = await Promise.all(TABLE.map((n) => fs.readFile(path.join(dir, n)).catch((e: unknown) => Promise.reject(unreadable(`${path.join(dir, n)} cannot be read`, e)))));
      verifyBytes(publicOf(key), sums!, sig!.toString('utf8'), path.join(dir, CHECKSUMS_TXT));
      if (parseChecksums(sums!.toString('utf8')).get(TABLE[0]) !== sha256Hex(json!)) throw unreadable(`${since} does not match the checksums.txt beside it`);
      return { manifest: parseBundleManifest(json!, since), checksums: sums! };
    }
    const t = await verifyBundle(since, { trust: publicOf(key), tableOnly: true });
    return { manifest: t.manifest, checksums: t.table['checksums.txt'] };
  } catch (e) {
    if (e instanceof UsageError && e.code === Codes.bundleBaseUnreadable) throw e;
    throw unreadable((e as Error).message, e);
  }
}

/** Every store blob the bundle's images and charts need, from the cache. */
async function storeEntries(cache: Layout, named: { name: string; desc: Descriptor; only?: Set<string> }[]): Promise<{ entries: ArchiveEntry[]; index: Buffer }> {
  const blobs = new Map<string, ArchiveEntry>();
  for (const { desc, only } of named) {
    // The cache may hold platforms an earlier, wider build pulled: carry only this build's.
    const { manifests, blobs: layers } = await collectImage(cache, desc, only && ((c) => only.has(c.digest)));
    for (const d of [...manifests.map((m) => m.desc), ...layers]) {
      const hex = d.digest.slice('sha256:'.length);
      blobs.set(hex, { path: `images/blobs/sha256/${hex}`, size: d.size, sha256: hex, source: cache.blobPath(d.digest) });
    }
  }
  const manifests = [...named]
    .sort((a, b) => (a.name < b.name ? -1 : 1))
    .map(({ name, desc }) => ({
      mediaType: desc.mediaType,
      digest: desc.digest,
      size: desc.size,
      ...(desc.artifactType ? { artifactType: desc.artifactType } : {}),
      annotations: { 'io.containerd.image.name': name, 'org.opencontainers.image.ref.name': name },
    }));
  const index = Buffer.from(`${JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests }, null, 2)}\n`);
  return { entries: [...blobs.values()], index };
}

async function createdAt(files: string[], override?: Date): Promise<string> {
  if (override) return override.toISOString();
  const sde = process.env.SOURCE_DATE_EPOCH;
  if (sde && /^\d+$/.test(sde)) return new Date(Number(sde) * 1000).toISOString();
  // The newest input, so two builds from the same inputs agree.
  let t = 0;
  for (const f of files) t = Math.max(t, Math.floor((await fs.stat(f)).mtimeMs / 1000) * 1000);
  return new Date(t).toISOString();
}

/**
 * ECDSA signatures are randomised, so the same checksums signed twice differ. Reusing the
 * signature made earlier for identical bytes and key keeps rebuilds from one cache byte-identical.
 * A new signature is kept only by `keep()`, once the archive it signs has been written and every
 * byte of it checked against the checksums: the table is signed before the content it lists goes
 * into the archive (it comes first), but no signature outlives a build whose bytes did not match.
 */
async function cachedSignature(key: KeyObject, data: Buffer): Promise<{ sig: string; keep: () => Promise<void> }> {
  const dir = path.join(cacheDir(), 'signatures');
  const file = path.join(dir, `${sha256Hex(Buffer.concat([Buffer.from(fingerprint(publicOf(key))), data]))}.sig`);
  try {
    const sig = (await fs.readFile(file, 'utf8')).trim();
    verifyBytes(publicOf(key), data, sig, 'a cached signature');
    return { sig, keep: async () => {} };
  } catch {
    const sig = signBytes(key, data);
    return { sig, keep: () => writeFileAtomic(file, `${sig}\n`) };
  }
}

export async function buildBundle(o: BuildOptions): Promise<BuildResult> {
  const reporter = o.reporter ?? silentReporter;
  // The base first: a wrong --since fails before anything is fetched.
  const base = o.since ? await readBase(o.since, o.key) : undefined;
  const spec = narrowPlatforms(await loadSpec(o.specFile), o.platforms);
  const specDir = specBaseDir(o.specFile);
  let lock;
  if (o.updateLock) {
    reporter.info('resolving tags (--update-lock)');
    lock = await resolveAll(o.client, spec);
    await writeLock(o.lockFile, lock);
  } else {
    lock = await readLock(o.lockFile);
    assertNoDrift(spec, lock, o.lockFile);
  }
  const cache = await Layout.open(cacheStoreDir());
  const fileCache = path.join(cacheDir(), 'files');
  const fetchOpts = { reporter, baseDir: specDir, mirrors: o.binaryMirrors ?? [], offline: o.offline === true };

  const platforms = spec.spec.spec.platforms;
  reporter.info(`charts: ${spec.spec.spec.charts?.length ?? 0}`);
  const charts: PackedChart[] = await fetchCharts(spec.spec.spec.charts ?? [], { store: cache, client: o.client, fileCache, specDir, fetch: fetchOpts });
  // Before the big downloads: does the spec bundle every image kubeadm and the charts will ask for?
  const lockDigest = new Map(lock.images.map((i) => [i.name, i.digest]));
  await checkBundleImages({
    ...(spec.spec.spec.kubernetes ? { kubernetes: spec.spec.spec.kubernetes } : {}),
    charts: await Promise.all(charts.map(async (c) => ({ name: c.name, version: c.version, tgz: await chartArchive(cache, c.ref) }))),
    held: spec.images.map((i) => ({ ref: i.name, digest: lockDigest.get(i.name) })),
    helm: await findHelm(),
    reporter,
  });
  reporter.info(`images: ${spec.images.length}`);
  await pullImages({ client: o.client, store: cache, reporter }, spec, lock, o.lockFile);
  reporter.info(`binaries: ${spec.spec.spec.binaries?.length ?? 0} × ${platforms.length} platforms`);
  const files: FetchedFile[] = await fetchBinaries(spec.spec.spec.binaries ?? [], platforms, fileCache, fetchOpts);
  reporter.info(`runtime: Node.js for ${platforms.join(', ')}`);
  const runtimes: FetchedRuntime[] = await fetchRuntimes(platforms, spec.spec.spec.runtime?.node ?? {}, fileCache, fetchOpts);

  const ferryDir = o.ferryDir ?? defaultFerryDir();
  let ferryFiles: ArchiveEntry[];
  try {
    ferryFiles = await ferryEntries(ferryDir);
  } catch (e) {
    throw new HostError(Codes.bundleBuild, `the bundled ferry in ${ferryDir} is missing or not as built: ${(e as Error).message}`, { hint: 'Run `npm run build` (npm ci does it) to make dist/ferry/.', cause: e });
  }

  const locked = new Map(lock.images.map((i) => [i.name, i]));
  const images = spec.images.map((img) => {
    const l = locked.get(img.name)!;
    return { ...l, platforms: lockedPlatforms(img, l) };
  });
  const named: { name: string; desc: Descriptor; only?: Set<string> }[] = [];
  for (const img of images) {
    const only = spec.narrowed && isIndexType(img.mediaType) ? new Set(img.platforms.map((p) => p.digest)) : undefined;
    named.push({ name: img.name, desc: { mediaType: img.mediaType, digest: img.digest, size: img.size }, ...(only ? { only } : {}) });
  }
  for (const c of charts) {
    const d = await cache.resolve(c.ref);
    if (d) named.push({ name: c.ref, desc: d });
  }
  // Signatures and SBOMs the cache holds for these images travel with them.
  named.push(...(await bundledReferrers(cache, named)));
  const store = await storeEntries(cache, named);
  const ociLayout = Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const bundleFiles = files.map((f) => ({ name: f.name, version: f.version, platform: f.platform, path: f.bundlePath, sha256: f.sha256, size: f.size, archive: f.archive, url: f.url })).sort((a, b) => (a.path < b.path ? -1 : 1));
  const install = Buffer.from(INSTALL_SH);
  const bytesEntry = (p: string, b: Buffer): ArchiveEntry => ({ path: p, size: b.length, sha256: sha256Hex(b), source: b, mode: entryMode(p) });
  const content: ArchiveEntry[] = [
    bytesEntry('install.sh', install),
    ...ferryFiles,
    bytesEntry('images/oci-layout', ociLayout),
    bytesEntry('images/index.json', store.index),
    ...store.entries,
    bytesEntry(VERSIONS_JSON, versionsJson(bundleFiles)),
    ...files.map((f) => ({ path: f.bundlePath, size: f.size, sha256: f.sha256, source: f.source, mode: 0o755 })),
    ...runtimes.map((r) => ({ path: r.bundlePath, size: r.size, sha256: r.sha256, source: r.source, mode: 0o755 })),
  ];
  const seen = new Set<string>();
  for (const e of content) {
    if (seen.has(e.path)) throw new UsageError(Codes.bundlePathConflict, `two entries would share the path ${e.path}`, { hint: 'Two binaries in the spec have the same name and version; rename one.' });
    seen.add(e.path);
  }
  const manifest: BundleManifest = {
    formatVersion: FORMAT_VERSION,
    name: spec.spec.metadata.name,
    version: spec.spec.metadata.version,
    ...(spec.spec.metadata.description ? { description: spec.spec.metadata.description } : {}),
    created: await createdAt([o.specFile, o.lockFile], o.created),
    ferryVersion: FERRY_VERSION,
    platforms,
    ...(spec.spec.spec.kubernetes ? { kubernetes: spec.spec.spec.kubernetes } : {}),
    images: images.map((i) => ({ ref: i.name, digest: i.digest, mediaType: i.mediaType, platforms: i.platforms.map((p) => p.platform) })),
    charts: charts.map((c) => ({ name: c.name, version: c.version, ref: c.ref, digest: c.digest })),
    files: bundleFiles,
    runtime: runtimes.map((r) => ({ platform: r.platform, version: r.version, path: r.bundlePath, sha256: r.sha256, size: r.size })),
    signer: { fingerprint: fingerprint(publicOf(o.key)), publicKey: publicOf(o.key).export({ type: 'spki', format: 'pem' }) as string },
    contentSize: 0,
    entries: content.length + TABLE.length,
  };
  manifest.contentSize = content.reduce((n, e) => n + e.size, 0);
  // contentSize includes bundle.json itself; settle its length (it changes with its own digits).
  for (let i = 0; i < 3; i++) manifest.contentSize = content.reduce((n, e) => n + e.size, 0) + manifestBytes(manifest).length;
  const bundleJson = manifestBytes(manifest);
  const [manifestName, checksumsName, sigName] = TABLE;
  const checksums = checksumsText([bytesEntry(manifestName, bundleJson), ...content]);
  const signed = await cachedSignature(o.key, checksums);
  const sig = Buffer.from(`${signed.sig}\n`);
  const head = [bytesEntry(manifestName, bundleJson), bytesEntry(checksumsName, checksums), bytesEntry(sigName, sig)];
  // A delta: the same signed table, its base.json, and only what the base lacks.
  let delta: DeltaManifest | undefined;
  let carried = content;
  let deltaSig: Awaited<ReturnType<typeof cachedSignature>> | undefined;
  if (base) {
    const fromBase = fromBaseOf(parseChecksums(checksums.toString('utf8')), parseChecksums(base.checksums.toString('utf8')));
    const bm = base.manifest;
    delta = { formatVersion: 1, base: { id: bundleId(bm), name: bm.name, version: bm.version, ...(bm.kubernetes ? { kubernetesVersion: bm.kubernetes.version } : {}), checksums: sha256Hex(base.checksums) }, fromBase };
    const taken = new Set(fromBase);
    carried = content.filter((e) => !taken.has(e.path));
    const db = deltaBytes(delta);
    deltaSig = await cachedSignature(o.key, db);
    head.push(bytesEntry(BASE_JSON, db), bytesEntry(BASE_SIG, Buffer.from(`${deltaSig.sig}\n`)));
    reporter.info(`a delta on ${delta.base.id}: ${fromBase.length} of ${content.length} entries come from it`);
  }
  reporter.info(`writing ${o.out}: ${carried.length + head.length} entries`);
  // Every byte is hashed as it is written and must match the checksums; else nothing is kept.
  const r = await writeArchive(o.out, head, carried, { partSize: o.partSize, reporter });
  await signed.keep();
  await deltaSig?.keep();
  let partsFile: string | undefined;
  if (o.partSize) {
    partsFile = partsFileOf(o.out);
    const pm: PartsManifest = { formatVersion: 1, bundle: bundleId(manifest), checksums: sha256Hex(checksums), size: r.size, parts: r.parts, signer: manifest.signer };
    const partsSig = await cachedSignature(o.key, partsSigningBytes(pm));
    pm.signature = partsSig.sig;
    await writePartsManifest(partsFile, pm);
    await partsSig.keep();
  }
  const sum = (es: ArchiveEntry[]) => es.reduce((n, e) => n + e.size, 0);
  return { out: o.out, ...(partsFile ? { parts: partsFile } : {}), size: r.size, entries: carried.length + head.length, manifest, ...(delta ? { delta, carried: { bytes: sum(carried), fullBytes: sum(content) } } : {}) };
}
