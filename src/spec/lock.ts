import { promises as fs } from 'node:fs';
import { stringify } from 'yaml';
import { Codes, DriftError, SpecError } from '../errors.js';
import type { RegistryClient } from '../oci/client.js';
import { formatPlatform, isIndexType, parseManifest, platformMatches, type ImageIndex, type ImageManifest, type Platform } from '../oci/media.js';
import { isDigest } from '../oci/reference.js';
import { limiter } from '../util/limit.js';
import { writeFileAtomic } from '../util/fsx.js';
import type { LoadedSpec, SpecImage } from './spec.js';
import { loadYaml, positionOf } from './yamlpos.js';

export interface LockedPlatform {
  platform: string;
  digest: string;
  mediaType: string;
  size: number;
}

export interface LockedImage {
  /** Normalised reference as in the spec (`registry.k8s.io/pause:3.10`). */
  name: string;
  /** The top digest: an index for multi-arch images, else the manifest. */
  digest: string;
  mediaType: string;
  size: number;
  platforms: LockedPlatform[];
}

export interface ImagesLock {
  apiVersion: 'ferry.dev/v1alpha1';
  kind: 'ImagesLock';
  spec: { name: string; version: string };
  images: LockedImage[];
}

const byName = <T extends { name: string }>(a: T, b: T) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/** Resolves one spec image: tag → digest, and each wanted platform's manifest. */
async function resolveImage(client: RegistryClient, img: SpecImage): Promise<LockedImage> {
  const repo = { registry: img.ref.registry, repository: img.ref.repository };
  const m = await client.getManifest(repo, img.ref.digest ?? img.ref.tag ?? 'latest');
  const parsed = parseManifest(m.bytes, m.mediaType, img.name);
  const platforms: LockedPlatform[] = [];
  if (parsed.kind === 'index') {
    const idx: ImageIndex = parsed.index;
    for (const want of img.platforms) {
      const d = idx.manifests.find((c) => !isIndexType(c.mediaType) && platformMatches(want, c.platform));
      if (!d) {
        throw new DriftError(Codes.platformMissing, `${img.at}: ${img.name} has no ${formatPlatform(want)} image`, {
          hint: `It offers ${idx.manifests.map((c) => (c.platform ? formatPlatform(c.platform) : '?')).join(', ')}. Give this image its own platforms: in the spec.`,
        });
      }
      platforms.push({ platform: formatPlatform(want), digest: d.digest, mediaType: d.mediaType, size: d.size });
    }
  } else {
    const man: ImageManifest = parsed.manifest;
    const cfg = JSON.parse((await client.getBlobBytes(repo, man.config.digest)).toString('utf8')) as Partial<Platform>;
    const have: Platform = { os: cfg.os ?? '', architecture: cfg.architecture ?? '', ...(cfg.variant ? { variant: cfg.variant } : {}) };
    const want = img.platforms.find((p) => platformMatches(p, have) || platformMatches(have, p));
    if (!want || img.platforms.length > 1) {
      throw new DriftError(Codes.platformMissing, `${img.at}: ${img.name} is a single-platform image for ${formatPlatform(have)}, but the spec wants ${img.platforms.map(formatPlatform).join(', ')}`, {
        hint: `Set platforms: [${formatPlatform(have)}] on this image, or use a multi-arch tag.`,
      });
    }
    platforms.push({ platform: formatPlatform(want), digest: m.digest, mediaType: m.mediaType, size: m.bytes.length });
  }
  platforms.sort((a, b) => (a.platform < b.platform ? -1 : 1));
  return { name: img.name, digest: m.digest, mediaType: m.mediaType, size: m.bytes.length, platforms };
}

export async function resolveAll(client: RegistryClient, spec: LoadedSpec, concurrency = 8): Promise<ImagesLock> {
  const limit = limiter(concurrency);
  const images = await Promise.all(spec.images.map((img) => limit(() => resolveImage(client, img))));
  return {
    apiVersion: 'ferry.dev/v1alpha1',
    kind: 'ImagesLock',
    spec: { name: spec.spec.metadata.name, version: spec.spec.metadata.version },
    images: images.sort(byName),
  };
}

/** Sorted keys and entries, one line per field, so a moved tag is a two-line diff. */
export function formatLock(lock: ImagesLock): string {
  const images = [...lock.images].sort(byName).map((i) => ({
    name: i.name,
    digest: i.digest,
    mediaType: i.mediaType,
    size: i.size,
    platforms: [...i.platforms].sort((a, b) => (a.platform < b.platform ? -1 : 1)).map((p) => ({ platform: p.platform, digest: p.digest, mediaType: p.mediaType, size: p.size })),
  }));
  const head = '# Written by `ferry lock`. Every image pinned to a digest; edit the spec, not this file.\n';
  return head + stringify({ apiVersion: lock.apiVersion, kind: lock.kind, spec: lock.spec, images }, { lineWidth: 0 });
}

export async function writeLock(file: string, lock: ImagesLock): Promise<void> {
  await writeFileAtomic(file, formatLock(lock));
}

export async function readLock(file: string): Promise<ImagesLock> {
  try {
    await fs.access(file);
  } catch {
    throw new SpecError(Codes.lockParse, `lock file ${file} does not exist`, {
      hint: 'Run `ferry lock SPEC --lock FILE` on a host that can reach the registries to write it.',
    });
  }
  const y = await loadYaml(file, 'lock');
  const v = y.value as Partial<ImagesLock> | null;
  const bad = (path: (string | number)[], msg: string): never => {
    throw new SpecError(Codes.lockInvalid, `${positionOf(y, path)}: ${msg}`, { hint: 'The lock is written by `ferry lock`; re-run it rather than editing by hand.' });
  };
  if (!v || v.kind !== 'ImagesLock' || v.apiVersion !== 'ferry.dev/v1alpha1') bad(['kind'], `${file} is not an ImagesLock (apiVersion ferry.dev/v1alpha1)`);
  if (!Array.isArray(v!.images)) bad(['images'], 'images must be a list');
  v!.images!.forEach((img, i) => {
    if (typeof img?.name !== 'string') bad(['images', i], 'each image needs a name');
    if (!isDigest(img.digest ?? '')) bad(['images', i, 'digest'], `${img.name}: "${img.digest}" is not a digest`);
    if (!Array.isArray(img.platforms)) bad(['images', i, 'platforms'], `${img.name}: platforms must be a list`);
    img.platforms.forEach((p, j) => {
      if (!isDigest(p?.digest ?? '')) bad(['images', i, 'platforms', j, 'digest'], `${img.name} ${p?.platform}: "${p?.digest}" is not a digest`);
    });
  });
  return v as ImagesLock;
}

export interface Drift {
  name: string;
  problem: string;
}

/**
 * What differs between a spec and its lock, without the network. A spec narrowed by --platform
 * matches a lock that holds at least its platforms, so one full lock serves every narrowed run.
 */
export function specLockDrift(spec: LoadedSpec, lock: ImagesLock): Drift[] {
  const drift: Drift[] = [];
  // A lock pins one spec's images: another spec's lock is never taken for it, however alike.
  if (lock.spec?.name !== undefined && lock.spec.name !== spec.spec.metadata.name) drift.push({ name: 'metadata.name', problem: `is "${spec.spec.metadata.name}" in the spec, but the lock was written for spec "${lock.spec.name}"` });
  const locked = new Map(lock.images.map((i) => [i.name, i]));
  for (const name of spec.narrowed?.skipped ?? []) locked.delete(name);
  for (const img of spec.images) {
    const l = locked.get(img.name);
    if (!l) {
      drift.push({ name: img.name, problem: 'is in the spec but not in the lock' });
      continue;
    }
    locked.delete(img.name);
    if (img.ref.digest && img.ref.digest !== l.digest) drift.push({ name: img.name, problem: `is pinned to ${img.ref.digest} in the spec but ${l.digest} in the lock` });
    const wantList = img.platforms.map(formatPlatform).sort();
    const haveList = l.platforms.map((p) => p.platform).sort();
    const [want, have] = [wantList.join(', '), haveList.join(', ')];
    if (spec.narrowed ? !wantList.every((p) => haveList.includes(p)) : want !== have) drift.push({ name: img.name, problem: `wants platforms [${want}] but the lock has [${have}]` });
  }
  for (const name of locked.keys()) drift.push({ name, problem: 'is in the lock but no longer in the spec' });
  return drift;
}

export function assertNoDrift(spec: LoadedSpec, lock: ImagesLock, lockFile: string): void {
  const drift = specLockDrift(spec, lock);
  if (drift.length) {
    throw new DriftError(Codes.lockDrift, `${spec.file} no longer matches ${lockFile}:\n  ${drift.map((d) => `${d.name} ${d.problem}`).join('\n  ')}`, {
      hint: `Run \`ferry lock ${spec.file} --lock ${lockFile}\` to re-pin, review the diff, then run this command again.`,
      details: { drift },
    });
  }
}

/**
 * Compares a fresh resolution with the lock: which tags moved upstream. With a spec narrowed by
 * --platform, only its platforms and images are compared.
 */
export function movedTags(lock: ImagesLock, fresh: ImagesLock, narrowed?: LoadedSpec['narrowed']): Drift[] {
  const old = new Map(lock.images.map((i) => [i.name, i]));
  const out: Drift[] = [];
  for (const f of fresh.images) {
    const o = old.get(f.name);
    const oldPlatforms = narrowed ? o?.platforms.filter((p) => f.platforms.some((x) => x.platform === p.platform)) : o?.platforms;
    if (!o) out.push({ name: f.name, problem: 'is not in the lock' });
    else if (o.digest !== f.digest) out.push({ name: f.name, problem: `moved from ${o.digest} to ${f.digest}` });
    else if (JSON.stringify(oldPlatforms) !== JSON.stringify(f.platforms)) out.push({ name: f.name, problem: 'platform manifests changed' });
  }
  for (const o of lock.images) {
    if (narrowed?.skipped.includes(o.name)) continue;
    if (!fresh.images.some((f) => f.name === o.name)) out.push({ name: o.name, problem: 'is in the lock but not in the spec' });
  }
  return out;
}
