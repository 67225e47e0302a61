import { Codes, IntegrityError } from '../errors.js';
import { allOrAbort } from '../util/limit.js';
import { assertNoDrift, type ImagesLock, type LockedImage, type LockedPlatform } from '../spec/lock.js';
import type { LoadedSpec, SpecImage } from '../spec/spec.js';
import { formatPlatform, parsePlatform } from '../oci/media.js';
import { collectImage, Puller, Pusher, type CopyContext, type PullStats } from '../oci/copy.js';
import type { Layout } from '../oci/layout.js';
import type { Descriptor } from '../oci/media.js';
import { CONTAINERD_NAME, REF_NAME } from '../oci/layout.js';
import { DOCKER_HUB, parseReference, registryOf, type Reference } from '../oci/reference.js';
import { Codes as C, UsageError } from '../errors.js';

export interface PullResult {
  images: { name: string; digest: string; platforms: string[]; referrers?: { digest: string; artifactType?: string }[] }[];
  stats: PullStats;
}

export interface PullOptions {
  /** Also copy each image's referrers (signatures, SBOMs), named `<registry>/<repository>@<digest>`. */
  withReferrers?: boolean;
}

/** The lock's platforms of an image that this run wants (all of them, unless --platform narrowed it). */
export function lockedPlatforms(img: SpecImage, l: LockedImage): LockedPlatform[] {
  const want = new Set(img.platforms.map(formatPlatform));
  return l.platforms.filter((p) => want.has(p.platform));
}

/** Fills a store with every image of a spec, pinned by its lock. Refuses a spec that drifted from the lock. */
export async function pullImages(ctx: CopyContext, spec: LoadedSpec, lock: ImagesLock, lockFile: string, opts: PullOptions = {}): Promise<PullResult> {
  assertNoDrift(spec, lock, lockFile);
  const locked = new Map(lock.images.map((i) => [i.name, i]));
  const puller = new Puller(ctx);
  const images = await allOrAbort(
    spec.images.map(async (img) => {
      const l = locked.get(img.name)!;
      const platforms = lockedPlatforms(img, l);
      const desc = await puller.pull({ registry: img.ref.registry, repository: img.ref.repository }, l.digest, [img.name], platforms.map((p) => parsePlatform(p.platform)));
      if (desc.digest !== l.digest) {
        throw new IntegrityError(Codes.digestMismatch, `${img.name}: stored ${desc.digest}, lock says ${l.digest}`);
      }
      ctx.reporter?.verbose(`pulled ${img.name}@${l.digest}`);
      const out: PullResult['images'][number] = { name: img.name, digest: l.digest, platforms: platforms.map((p) => p.platform) };
      if (opts.withReferrers) {
        const refs = await puller.pullReferrers({ registry: img.ref.registry, repository: img.ref.repository }, desc);
        out.referrers = refs.map((r) => ({ digest: r.digest, ...(r.artifactType ? { artifactType: r.artifactType } : {}) }));
        if (refs.length) ctx.reporter?.verbose(`pulled ${refs.length} referrers of ${img.name}`);
      }
      return out;
    }),
    puller.ac,
  );
  return { images, stats: puller.stats };
}

export interface PushResult {
  images: { source: string; target: string; digest: string; filtered: boolean }[];
}

/** Splits `host[:port][/prefix]` into a registry and a repository prefix. */
function parsePushTarget(to: string): { registry: string; prefix: string } {
  const s = to.replace(/^[a-z]+:\/\//, '').replace(/\/+$/, '');
  const slash = s.indexOf('/');
  const registry = slash < 0 ? s : s.slice(0, slash);
  const prefix = slash < 0 ? '' : s.slice(slash + 1);
  if (!registry || !registryOf(registry, `${prefix || 'x'}/x`)) {
    throw new UsageError(C.usage, `--to "${to}" is not REGISTRY[/prefix]`, { hint: 'Write --to harbor.site.example/ferry or --to 127.0.0.1:5000.' });
  }
  return { registry, prefix };
}

/** Whether a name as written starts with its registry (docker.io/library/nginx), unlike a short name (nginx, library/nginx). */
function namesRegistry(name: string): boolean {
  const slash = name.indexOf('/');
  return slash > 0 && !!registryOf(name.slice(0, slash));
}

/**
 * Loads every named image of a store into a site registry, as `<prefix>/<upstream repository>`
 * with its tag (or by digest when it has none).
 */
export async function pushStore(ctx: CopyContext, to: string, only?: (name: string) => boolean): Promise<PushResult> {
  const { registry, prefix } = parsePushTarget(to);
  const idx = await ctx.store.readIndex();
  const entries = idx.manifests
    .map((d) => ({ d, name: d.annotations?.[REF_NAME] ?? d.annotations?.[CONTAINERD_NAME] }))
    .filter((e): e is { d: typeof e.d; name: string } => !!e.name && (!only || only(e.name)));
  const targets = new Map<string, string>();
  const plan = entries.map(({ d, name }) => {
    let ref: Reference;
    try {
      ref = parseReference(name);
    } catch (e) {
      throw new UsageError(C.usage, `the store names an image "${name}" that is not a valid reference`, { hint: 'Re-pull the store with ferry, or fix index.json.', cause: e });
    }
    // ferry stores full names; a short name from another tool keeps its path as written (no library/).
    const short = ref.registry === DOCKER_HUB && !namesRegistry(name);
    const path = short ? name.replace(/[:@].*$/, '') : ref.repository;
    const repository = prefix ? `${prefix}/${path}` : path;
    const key = `${repository}:${ref.tag ?? d.digest}`;
    const other = targets.get(key);
    if (other && other !== name) {
      throw new UsageError(C.usage, `${name} and ${other} would both be pushed as ${registry}/${key}`, {
        hint: 'They share a path on different upstream registries. Push them in separate runs with different --to prefixes.',
      });
    }
    targets.set(key, name);
    return { d, name, repo: { registry, repository }, tag: ref.tag };
  });
  const pusher = new Pusher(ctx);
  const images: PushResult['images'] = [];
  for (const p of plan) {
    const r = await pusher.push(p.d, { repo: p.repo, tag: p.tag });
    images.push({ source: p.name, target: `${registry}/${p.repo.repository}${p.tag ? `:${p.tag}` : `@${r.digest}`}`, digest: r.digest, filtered: r.filtered });
    ctx.reporter?.verbose(`pushed ${p.name} → ${images[images.length - 1]!.target}`);
  }
  return { images };
}

/**
 * The referrers a store holds for the images a bundle carries (and for those referrers in turn):
 * each store entry named `<registry>/<repository>@<digest>` whose manifest's `subject` is a
 * manifest of a carried image. `ferry images pull --with-referrers` put them there; a bundle
 * carries them under the same names, so the site serves them beside their subjects.
 */
export async function bundledReferrers(store: Layout, named: { name: string; desc: Descriptor; only?: Set<string> }[]): Promise<{ name: string; desc: Descriptor }[]> {
  const repoOf = (name: string) => {
    try {
      const r = parseReference(name, { defaultTag: false });
      return `${r.registry}/${r.repository}`;
    } catch {
      return undefined;
    }
  };
  // Candidates: by-digest names in the repository of a carried image.
  const byRepo = new Map<string, Descriptor[]>();
  for (const d of (await store.readIndex()).manifests) {
    const name = d.annotations?.[REF_NAME];
    const at = name?.lastIndexOf('@') ?? -1;
    if (!name || at < 0 || name.slice(at + 1) !== d.digest) continue;
    const list = byRepo.get(name.slice(0, at)) ?? [];
    list.push(d);
    byRepo.set(name.slice(0, at), list);
  }
  const out: { name: string; desc: Descriptor }[] = [];
  const taken = new Set(named.map((n) => n.name));
  for (const { name, desc, only } of named) {
    const repo = repoOf(name);
    const candidates = repo ? byRepo.get(repo) : undefined;
    if (!repo || !candidates) continue;
    const { manifests } = await collectImage(store, desc, only && ((c) => only.has(c.digest)));
    const subjects = new Set(manifests.map((m) => m.desc.digest));
    // Until a pass adds nothing: a referrer may refer to another referrer.
    for (let grew = true; grew; ) {
      grew = false;
      for (const c of candidates) {
        const refName = `${repo}@${c.digest}`;
        if (taken.has(refName) || !(await store.hasBlob(c.digest))) continue;
        let subject: string | undefined;
        let artifactType: string | undefined;
        try {
          const j = JSON.parse((await store.readBlob(c.digest, 4 << 20)).toString('utf8')) as { subject?: { digest?: unknown }; artifactType?: unknown; config?: { mediaType?: unknown } };
          subject = typeof j.subject?.digest === 'string' ? j.subject.digest : undefined;
          artifactType = typeof j.artifactType === 'string' ? j.artifactType : typeof j.config?.mediaType === 'string' ? j.config.mediaType : undefined;
        } catch {
          continue;
        }
        if (!subject || !subjects.has(subject)) continue;
        const { manifests: own, missing } = await collectImage(store, c);
        if (missing.length) continue;
        for (const m of own) subjects.add(m.desc.digest);
        taken.add(refName);
        out.push({ name: refName, desc: { mediaType: c.mediaType, digest: c.digest, size: c.size, ...(artifactType ? { artifactType } : {}) } });
        grew = true;
      }
    }
  }
  return out;
}
