import { Codes, DriftError, IntegrityError, RegistryError, StoreError } from '../errors.js';
import { sha256 } from '../util/digest.js';
import { allOrAbort, limiter, SingleFlight } from '../util/limit.js';
import { silentReporter, type Reporter } from '../util/progress.js';
import type { RegistryClient, Repo } from './client.js';
import type { Layout } from './layout.js';
import { GRAPH_LIMITS, graphTooLarge, walkManifests, walkStore, type ManifestRef } from './graph.js';
import { formatPlatform, isIndexType, parseManifest, platformMatches, type Descriptor, type ImageIndex, type Platform } from './media.js';

export interface CopyContext {
  client: RegistryClient;
  store: Layout;
  /** A shared cache store: blobs are fetched into it and linked into `store`. */
  cache?: Layout;
  reporter?: Reporter;
  /** Parallel blob transfers across every image of the run. */
  concurrency?: number;
}

export interface PullStats {
  blobsFetched: number;
  bytesFetched: number;
  blobsPresent: number;
}

/**
 * Copies images from registries into the store. Blobs are fetched once per run however many images
 * share them, and a blob already in the store costs one stat.
 */
export class Puller {
  private readonly limit: ReturnType<typeof limiter>;
  private readonly flights = new SingleFlight<void>();
  private readonly reporter: Reporter;
  /** Aborted on the first failure, so sibling transfers stop and clean up before we report. */
  readonly ac = new AbortController();
  readonly stats: PullStats = { blobsFetched: 0, bytesFetched: 0, blobsPresent: 0 };

  constructor(private readonly ctx: CopyContext) {
    this.limit = limiter(ctx.concurrency ?? 6);
    this.reporter = ctx.reporter ?? silentReporter;
  }

  /** Makes sure one blob is in the store, fetching it if needed. */
  private blob(repo: Repo, desc: Descriptor): Promise<void> {
    const { store, cache, client } = this.ctx;
    return this.flights.run(desc.digest, async () => {
      if ((await store.hasBlob(desc.digest, desc.size)) || (cache && (await store.adopt(cache, desc)))) {
        this.stats.blobsPresent++;
        return;
      }
      await this.limit(async () => {
        this.ac.signal.throwIfAborted();
        this.reporter.blobStart(desc.size);
        const into = cache ?? store;
        const w = await into.resumableWriter(desc);
        let resumed = w.offset;
        this.reporter.bytes(resumed);
        try {
          await client.fetchBlob(repo, w, this.ac.signal);
        } catch (e) {
          // A resumed prefix that does not check out was damaged on disk: fetch it whole, once.
          if (!(resumed > 0 && e instanceof IntegrityError)) throw e;
          this.reporter.verbose(`${desc.digest}: the partial blob an earlier run left does not check out; fetching it whole`);
          resumed = 0;
          await client.fetchBlob(repo, into.writer(desc), this.ac.signal);
        }
        if (cache) await store.adopt(cache, desc);
        this.reporter.blobDone();
        this.stats.blobsFetched++;
        this.stats.bytesFetched += desc.size - resumed;
      });
    });
  }

  /** Gets a manifest by digest: from the store when it is there, else from the registry (then stored). */
  private async manifest(repo: Repo, desc: ManifestRef): Promise<{ bytes: Buffer; mediaType: string }> {
    const { store, client, cache } = this.ctx;
    if (await store.hasBlob(desc.digest, desc.size)) {
      return { bytes: await store.readBlob(desc.digest), mediaType: desc.mediaType };
    }
    if (cache && (await cache.hasBlob(desc.digest, desc.size))) {
      const bytes = await cache.readBlob(desc.digest);
      await store.putBytes(bytes, { mediaType: desc.mediaType, digest: desc.digest, size: bytes.length });
      return { bytes, mediaType: desc.mediaType };
    }
    const m = await client.getManifest(repo, desc.digest);
    if (desc.size !== undefined && m.bytes.length !== desc.size) {
      throw new IntegrityError(Codes.sizeMismatch, `manifest ${desc.digest} is ${m.bytes.length} bytes, expected ${desc.size}`);
    }
    const md = { mediaType: m.mediaType, digest: m.digest, size: m.bytes.length };
    await store.putBytes(m.bytes, md);
    if (cache) await cache.putBytes(m.bytes, md);
    this.stats.blobsFetched++;
    this.stats.bytesFetched += m.bytes.length;
    return { bytes: m.bytes, mediaType: m.mediaType };
  }

  /**
   * Copies one image, pinned by digest, into the store and names it. With `platforms`, an index keeps
   * its upstream bytes (so its digest still matches the lock) but only the chosen platforms' content
   * is fetched.
   */
  async pull(repo: Repo, digest: string, names: string[], platforms?: Platform[]): Promise<Descriptor> {
    const what = `${repo.registry}/${repo.repository}@${digest}`;
    const nodes = await walkManifests<PulledNode, ManifestRef>([{ digest, mediaType: '' }], {
      read: async (d, parent) => {
        const m = await this.manifest(repo, d);
        // The top is judged by what the registry says it is; a child by its parent's entry.
        const parsed = parseManifest(m.bytes, parent ? d.mediaType : m.mediaType, parent ? `${what} → ${d.digest}` : what);
        if (parsed.kind === 'manifest') await allOrAbort([parsed.manifest.config, ...parsed.manifest.layers].map((b) => this.blob(repo, b)), this.ac);
        // Keep only what the walk and the top need: a graph's manifests are on disk, not held here.
        const mediaType = (parsed.kind === 'index' ? parsed.index.mediaType : parsed.manifest.mediaType) ?? m.mediaType;
        return { mediaType, size: m.bytes.length, next: parsed.kind === 'index' ? this.wanted(parsed.index, what, platforms) : [] };
      },
      next: (n) => n.next,
      concurrency: 16,
      ...GRAPH_LIMITS,
      tooLarge: (o) => {
        const { message, hint } = graphTooLarge(o, what);
        return new RegistryError(Codes.manifestGraphTooLarge, message, { hint });
      },
      abort: this.ac,
    });
    const top = nodes[nodes.length - 1]!;
    const desc: Descriptor = { mediaType: top.mediaType, digest, size: top.size };
    await this.ctx.store.addRefs(names.map((name) => ({ name, descriptor: desc })));
    return desc;
  }

  /**
   * Copies the referrers of an image pulled into the store (signatures, SBOMs: manifests whose
   * `subject` is the image or one of its platform manifests), and theirs in turn, a few levels
   * deep. Each is named `<registry>/<repository>@<digest>`, where it lives beside its subject.
   * A listed manifest whose subject is not what the listing says (a stale referrers tag) is left.
   */
  async pullReferrers(repo: Repo, image: Descriptor): Promise<Descriptor[]> {
    const { manifests } = await collectImage(this.ctx.store, image);
    let level = manifests.map((m) => m.desc.digest);
    const seen = new Set(level);
    const out: Descriptor[] = [];
    for (let depth = 0; depth < REFERRER_DEPTH && level.length; depth++) {
      const next: string[] = [];
      for (const subject of level) {
        const { manifests: listed } = await this.ctx.client.referrers(repo, subject);
        for (const d of listed) {
          if (seen.has(d.digest) || !d.digest.startsWith('sha256:')) continue;
          seen.add(d.digest);
          if (out.length >= MAX_REFERRERS) {
            throw new RegistryError(Codes.manifestGraphTooLarge, `${repo.registry}/${repo.repository}@${image.digest} has more than ${MAX_REFERRERS} referrers`, { hint: 'Pull without --with-referrers, or prune the artifacts attached to this image upstream.' });
          }
          const m = await this.manifest(repo, { digest: d.digest, mediaType: d.mediaType, size: d.size });
          const doc = parseManifest(m.bytes, m.mediaType, `referrer ${d.digest} of ${repo.registry}/${repo.repository}`);
          const subj = doc.kind === 'manifest' ? doc.manifest.subject : doc.index.subject;
          if (subj?.digest !== subject) {
            this.reporter.warn(`${repo.registry}/${repo.repository}: ${d.digest} is listed as a referrer of ${subject} but names ${subj?.digest ?? 'no subject'}; left out`);
            continue;
          }
          const desc = await this.pull(repo, d.digest, [`${repo.registry}/${repo.repository}@${d.digest}`]);
          out.push({ ...desc, ...(d.artifactType ? { artifactType: d.artifactType } : {}) });
          next.push(d.digest);
        }
      }
      level = next;
    }
    return out;
  }

  /** The entries of an index to fetch: those of the chosen platforms (and nested indexes), else all. */
  private wanted(index: ImageIndex, what: string, platforms?: Platform[]): Descriptor[] {
    if (!platforms?.length) return index.manifests;
    const missing = platforms.filter((p) => !index.manifests.some((d) => platformMatches(p, d.platform)));
    if (missing.length) {
      throw new DriftError(Codes.platformMissing, `${what} has no ${missing.map(formatPlatform).join(', ')} image`, {
        hint: `It offers ${index.manifests.map((d) => (d.platform ? formatPlatform(d.platform) : '?')).join(', ')}. Set platforms on this image in the spec.`,
      });
    }
    return index.manifests.filter((d) => isIndexType(d.mediaType) || platforms.some((p) => platformMatches(p, d.platform)));
  }
}

/** Referrers of referrers (a signature of an SBOM) are followed this deep. */
const REFERRER_DEPTH = 3;
/** Referrers carried per image, at most. */
const MAX_REFERRERS = 1000;

interface PulledNode {
  mediaType: string;
  size: number;
  next: Descriptor[];
}

/**
 * Every manifest and blob an image in the store needs, children first, as far as the store holds
 * them. `keep` picks the children of the top index to follow (a build narrowed by --platform).
 */
export async function collectImage(store: Layout, desc: Descriptor, keep?: (child: Descriptor) => boolean): Promise<{ manifests: { desc: Descriptor; bytes: Buffer }[]; blobs: Descriptor[]; missing: Descriptor[] }> {
  const missing: Descriptor[] = [];
  const nodes = await walkStore(store, [desc], { follow: (c, parent) => parent.desc !== desc || !keep || keep(c), onMissing: (d) => missing.push(d) });
  const blobs = new Map<string, Descriptor>();
  for (const { desc: d, parsed } of nodes) {
    if (parsed.kind !== 'manifest') continue;
    for (const b of [parsed.manifest.config, ...parsed.manifest.layers]) {
      if (!(await store.hasBlob(b.digest, b.size))) {
        throw new StoreError(Codes.storeMissing, `the store lacks blob ${b.digest} of manifest ${d.digest}`, { hint: 'Re-run `ferry images pull` to complete the store.' });
      }
      blobs.set(b.digest, b);
    }
  }
  return { manifests: nodes.map(({ desc: d, bytes }) => ({ desc: d, bytes })), blobs: [...blobs.values()], missing };
}

export interface PushTarget {
  repo: Repo;
  tag?: string;
}

/**
 * Pushes one image from the store: blobs (mounted from another repo of this run when possible),
 * then child manifests by digest, then the top by tag. An index whose platforms were filtered at
 * pull time is pushed as a new index of what the store holds, because registries refuse an index
 * whose children are missing.
 */
export class Pusher {
  private readonly limit: ReturnType<typeof limiter>;
  private readonly reporter: Reporter;
  /** digest → a repository on the target registry that already has it, for cross-repo mounts. */
  private readonly seen = new Map<string, string>();

  constructor(private readonly ctx: CopyContext) {
    this.limit = limiter(ctx.concurrency ?? 4);
    this.reporter = ctx.reporter ?? silentReporter;
  }

  async push(desc: Descriptor, target: PushTarget): Promise<{ digest: string; filtered: boolean }> {
    const { store, client } = this.ctx;
    const { manifests, blobs, missing } = await collectImage(store, desc);
    if (manifests.length === 0) {
      throw new StoreError(Codes.storeMissing, `the store lacks manifest ${desc.digest}`, { hint: 'Re-run `ferry images pull` to complete the store.' });
    }
    await Promise.all(
      blobs.map((b) =>
        this.limit(async () => {
          this.reporter.blobStart(b.size);
          const from = this.seen.get(b.digest);
          const how = await client.pushBlob(target.repo, b.size, b.digest, (s, e) => store.openBlob(b.digest, s, e), from && from !== target.repo.repository ? from : undefined);
          if (how !== 'uploaded') this.reporter.bytes(b.size); // done without moving bytes
          this.seen.set(b.digest, target.repo.repository);
          this.reporter.blobDone();
        }),
      ),
    );
    const top = manifests[manifests.length - 1]!;
    for (const m of manifests.slice(0, -1)) await client.putManifest(target.repo, m.desc.digest, m.bytes, m.desc.mediaType);
    let bytes = top.bytes;
    let filtered = false;
    if (missing.length && top.desc.digest === desc.digest) {
      const idx = JSON.parse(top.bytes.toString('utf8')) as ImageIndex;
      const gone = new Set(missing.map((m) => m.digest));
      idx.manifests = idx.manifests.filter((m) => !gone.has(m.digest));
      bytes = Buffer.from(JSON.stringify(idx));
      filtered = true;
      this.reporter.warn(`${target.repo.repository}: the store holds ${idx.manifests.length} of the index's platforms; pushing an index of those (digest ${sha256(bytes).slice(0, 19)}…, not the upstream ${desc.digest.slice(0, 19)}…)`);
    }
    const digest = sha256(bytes);
    await client.putManifest(target.repo, target.tag ?? digest, bytes, desc.mediaType);
    return { digest, filtered };
  }
}
