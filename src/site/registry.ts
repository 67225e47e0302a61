import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Codes, StoreError } from '../errors.js';
import { walkManifests } from '../oci/graph.js';
import { REF_NAME, Layout } from '../oci/layout.js';
import { isIndexType, isManifestType, MediaType, type Descriptor } from '../oci/media.js';
import { DOCKER_HUB, isDigest, isPathComponent, isTag, normalizeRegistry, parseReference } from '../oci/reference.js';
import { API_HEADER, clean, HttpError, notModified, realFileUnder, sendBody, sendFile, type Ctx } from './respond.js';

/*
 * The OCI distribution pull API over an unpacked bundle's images/ layout: each image indexed by its
 * upstream registry and repository path, and served only to the repositories whose images reach it.
 */

// ---------------------------------------------------------------------------------------------
// Grammar checks (exported for unit tests)

/** The distribution spec's repository name grammar, at most 255 characters. */
export function isValidRepoName(name: string): boolean {
  return name.length > 0 && name.length <= 255 && name.split('/').every(isPathComponent);
}
export const isValidTag = isTag;
/** sha256 only: the store holds nothing else, and a digest becomes a path below blobs/. */
export const isValidDigest = (d: string): boolean => d.startsWith('sha256:') && isDigest(d);

/**
 * A digest a client sent, as the store holds it: sha256 (and then a path below blobs/). Another
 * registered algorithm, well formed, names nothing here: undefined, for the 404 the spec wants.
 * Anything else is DIGEST_INVALID.
 */
function storeDigest(d: string): string | undefined {
  if (isValidDigest(d)) return d;
  if (isDigest(d)) return undefined;
  throw new HttpError(400, 'DIGEST_INVALID', 'invalid digest', { digest: clean(d, 200) });
}

/** `n`/`last` pagination over a sorted list, as /v2/_catalog and tags/list do it. */
export function paginate(items: string[], n: number | undefined, last: string | undefined): { page: string[]; more: boolean } {
  const from = last === undefined ? items : items.filter((i) => i > last);
  if (n === undefined) return { page: from, more: false };
  return { page: from.slice(0, n), more: from.length > n };
}

// ---------------------------------------------------------------------------------------------
// The bundle's images, indexed by upstream registry and repository path

interface Repo {
  registry: string;
  path: string;
  tags: Map<string, Descriptor>;
  roots: Descriptor[];
  graph?: Promise<RepoGraph>;
}

interface RepoGraph {
  /** manifest digest → media type it is served with */
  manifests: Map<string, string>;
  /** every config and layer digest */
  blobs: Set<string>;
  /** subject digest → the manifests that name it as their `subject`, as the referrers API lists them */
  referrers: Map<string, Descriptor[]>;
}

const MAX_MANIFEST = 4 << 20;
const MAX_GRAPH_NODES = 100_000;
const FRESHNESS_MS = 1000;

const sortStrings = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

class BundleImages {
  /** path → registry → repo */
  private repos = new Map<string, Map<string, Repo>>();
  private registries = new Set<string>();
  private stamp = '';
  private checkedAt = 0;
  private loading: Promise<void> | undefined;

  constructor(
    readonly layout: Layout,
    private readonly log: (l: string) => void,
  ) {}

  /** Re-reads index.json when it changed, looking at most once a second. */
  async fresh(): Promise<void> {
    if (Date.now() - this.checkedAt < FRESHNESS_MS && this.stamp) return;
    this.loading ??= this.reloadIfChanged().finally(() => {
      this.loading = undefined;
    });
    await this.loading;
  }

  private async reloadIfChanged(): Promise<void> {
    const st = await fs.stat(path.join(this.layout.dir, 'index.json'));
    const stamp = `${st.ino}:${st.size}:${st.mtimeMs}`;
    this.checkedAt = Date.now();
    if (stamp === this.stamp) return;
    const idx = await this.layout.readIndex();
    const repos = new Map<string, Map<string, Repo>>();
    const registries = new Set<string>();
    for (const d of idx.manifests) {
      const name = d.annotations?.[REF_NAME];
      if (!name || !isValidDigest(d.digest)) continue;
      let ref;
      try {
        ref = parseReference(name, { defaultTag: false });
      } catch {
        this.log(`index.json: skipping "${name}": not a full image reference`);
        continue;
      }
      const registry = normalizeRegistry(ref.registry);
      registries.add(registry);
      let byReg = repos.get(ref.repository);
      if (!byReg) repos.set(ref.repository, (byReg = new Map()));
      let repo = byReg.get(registry);
      if (!repo) byReg.set(registry, (repo = { registry, path: ref.repository, tags: new Map(), roots: [] }));
      repo.roots.push(d);
      if (ref.tag) repo.tags.set(ref.tag, d);
    }
    this.repos = repos;
    this.registries = registries;
    this.stamp = stamp;
  }

  registryNames(): string[] {
    return [...this.registries].sort(sortStrings);
  }

  /** Repository paths, deduplicated across registries, or only those of `ns`. */
  catalog(ns?: string): string[] {
    const out: string[] = [];
    for (const [p, byReg] of this.repos) if (ns === undefined || byReg.has(normalizeRegistry(ns))) out.push(p);
    return out.sort(sortStrings);
  }

  /**
   * The repositories a client means, in the order they answer. containerd names the upstream in
   * `?ns=`, which settles it: exactly that registry's repository. Without `ns`, every registry that
   * holds the path answers, docker.io first, then the others sorted by name, so the answer never
   * depends on the order of index.json: a tag comes from the first of them that has it, and a digest
   * from the first whose images reach it. Two fallbacks help clients that cannot send `ns`: a first
   * path component naming a registry of the bundle (`registry.k8s.io/pause`) selects that registry,
   * and a one-component name on docker.io means `library/<name>`, as Docker Hub treats it.
   */
  resolve(name: string, ns?: string): Repo[] {
    const pick = (p: string, reg?: string): Repo[] => {
      const byReg = this.repos.get(p);
      if (!byReg) return [];
      if (reg !== undefined) return byReg.has(reg) ? [byReg.get(reg)!] : [];
      const regs = [...byReg.keys()].sort((a, b) => (a === DOCKER_HUB ? -1 : b === DOCKER_HUB ? 1 : sortStrings(a, b)));
      return regs.map((r) => byReg.get(r)!);
    };
    const reg = ns === undefined ? undefined : normalizeRegistry(ns);
    const direct = pick(name, reg);
    if (direct.length) return direct;
    if (reg === undefined) {
      const slash = name.indexOf('/');
      if (slash > 0 && this.registries.has(name.slice(0, slash))) return pick(name.slice(slash + 1), name.slice(0, slash));
    }
    if (!name.includes('/') && (reg === undefined || reg === DOCKER_HUB)) return pick(`library/${name}`, DOCKER_HUB);
    return [];
  }

  /** Every manifest and blob reachable from the repository's images; built once and kept. */
  graph(repo: Repo): Promise<RepoGraph> {
    repo.graph ??= this.walk(repo).catch((e) => {
      repo.graph = undefined;
      throw e;
    });
    return repo.graph;
  }

  private async walk(repo: Repo): Promise<RepoGraph> {
    const manifests = new Map<string, string>();
    const blobs = new Set<string>();
    const referrers = new Map<string, Descriptor[]>();
    await walkManifests<ManifestDoc>(repo.roots, {
      maxNodes: MAX_GRAPH_NODES,
      read: async (d) => {
        // A platform-filtered image keeps its upstream index but not every child: skip what is absent.
        if (!isValidDigest(d.digest) || !(await this.layout.hasBlob(d.digest))) return undefined;
        let doc: ManifestDoc;
        let size: number;
        try {
          const bytes = await this.layout.readBlob(d.digest, MAX_MANIFEST);
          size = bytes.length;
          doc = JSON.parse(bytes.toString('utf8')) as ManifestDoc;
        } catch (e) {
          this.log(`${repo.registry}/${repo.path}: cannot read manifest ${d.digest}: ${(e as Error).message}`);
          return undefined;
        }
        if (typeof doc !== 'object' || doc === null) return undefined;
        const type = manifestType(d.mediaType, doc);
        manifests.set(d.digest, type);
        const subject = doc.subject?.digest;
        if (typeof subject === 'string' && isDigest(subject)) {
          const artifactType = typeof doc.artifactType === 'string' ? doc.artifactType : typeof doc.config?.mediaType === 'string' ? doc.config.mediaType : undefined;
          const annotations = doc.annotations && typeof doc.annotations === 'object' ? doc.annotations : undefined;
          const list = referrers.get(subject) ?? [];
          if (!list.some((r) => r.digest === d.digest)) list.push({ mediaType: type, digest: d.digest, size, ...(artifactType ? { artifactType } : {}), ...(annotations ? { annotations } : {}) });
          referrers.set(subject, list);
        }
        for (const b of [doc.config, ...(Array.isArray(doc.layers) ? doc.layers : [])]) {
          if (b && typeof b.digest === 'string' && isValidDigest(b.digest)) blobs.add(b.digest);
        }
        return doc;
      },
      next: (doc) => (Array.isArray(doc.manifests) ? doc.manifests.filter((c) => c && typeof c.digest === 'string') : []),
    });
    return { manifests, blobs, referrers };
  }
}

/** A manifest read by its shape alone: whatever the store holds is served as it is. */
interface ManifestDoc {
  mediaType?: string;
  artifactType?: string;
  manifests?: Descriptor[];
  config?: Descriptor;
  layers?: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** The type a manifest is served with: what its parent says, else what it says, else its shape. */
function manifestType(fromDescriptor: string | undefined, doc: { mediaType?: string; manifests?: unknown }): string {
  if (isIndexType(fromDescriptor) || isManifestType(fromDescriptor)) return fromDescriptor!;
  if (typeof doc.mediaType === 'string' && doc.mediaType) return doc.mediaType;
  return Array.isArray(doc.manifests) ? MediaType.ociIndex : MediaType.ociManifest;
}

// ---------------------------------------------------------------------------------------------
// The routes below /v2/

export class SiteRegistry {
  private constructor(private readonly images: BundleImages) {}

  /** Opens the bundle's images/ layout; refuses a directory that is not an unpacked bundle. */
  static async open(bundleDir: string, log: (l: string) => void): Promise<SiteRegistry> {
    const imagesDir = path.join(bundleDir, 'images');
    let imagesReal: string;
    try {
      imagesReal = await fs.realpath(imagesDir);
      await fs.access(path.join(imagesReal, 'index.json'));
    } catch (e) {
      throw new StoreError(Codes.serveBundle, `${bundleDir} is not an unpacked bundle: ${imagesDir}/index.json is missing`, {
        hint: 'Point --bundle at the directory `ferry bundle unpack FILE --trust ferry.pub --to DIR` wrote (it holds images/, files/ and checksums.txt).',
        cause: e,
      });
    }
    const images = new BundleImages(new Layout(imagesReal), log);
    await images.fresh();
    return new SiteRegistry(images);
  }

  /** Picks up a newer index.json (a newer bundle unpacked in place). */
  fresh(): Promise<void> {
    return this.images.fresh();
  }

  private reposFor(name: string, ns: string | undefined): Repo[] {
    if (!isValidRepoName(name)) throw new HttpError(400, 'NAME_INVALID', 'invalid repository name', { name: clean(name, 300) });
    const repos = this.images.resolve(name, ns);
    if (!repos.length) throw new HttpError(404, 'NAME_UNKNOWN', 'repository name not known to registry', { name, ...(ns !== undefined ? { ns: clean(ns, 300) } : {}) });
    return repos;
  }

  /** The first repository whose images reach `digest` as a manifest (or, with `asBlob`, as any blob). */
  private async holder(repos: Repo[], digest: string, asBlob: boolean): Promise<RepoGraph | undefined> {
    for (const r of repos) {
      const g = await this.images.graph(r);
      if (g.manifests.has(digest) || (asBlob && g.blobs.has(digest))) return g;
    }
    return undefined;
  }

  private async manifest(c: Ctx, name: string, reference: string, ns: string | undefined): Promise<void> {
    const repos = this.reposFor(name, ns);
    let digest: string;
    let type: string | undefined;
    // An algorithm prefix (`sha256:`, `md5:`) makes a digest; anything else is judged as a tag.
    if (/^[a-z0-9]+(?:[+._-][a-z0-9]+)*:/.test(reference)) {
      const d = storeDigest(reference);
      if (!d) throw new HttpError(404, 'MANIFEST_UNKNOWN', 'manifest unknown', { name, digest: reference });
      digest = d;
      type = (await this.holder(repos, digest, false))?.manifests.get(digest);
    } else {
      // No manifest can have a tag outside the grammar: unknown, as the spec's codes have it.
      if (!isValidTag(reference)) throw new HttpError(404, 'MANIFEST_UNKNOWN', 'manifest unknown: not a valid tag', { name, tag: clean(reference, 200) });
      const repo = repos.find((r) => r.tags.has(reference));
      if (!repo) throw new HttpError(404, 'MANIFEST_UNKNOWN', 'manifest unknown', { name, tag: reference });
      digest = repo.tags.get(reference)!.digest;
      type = (await this.images.graph(repo)).manifests.get(digest);
    }
    if (!type) throw new HttpError(404, 'MANIFEST_UNKNOWN', 'manifest unknown', { name, reference });
    let body: Buffer;
    try {
      body = await this.images.layout.readBlob(digest, MAX_MANIFEST);
    } catch {
      throw new HttpError(404, 'MANIFEST_UNKNOWN', 'manifest unknown', { name, digest });
    }
    const etag = `"${digest}"`;
    if (notModified(c, etag)) return;
    sendBody(c, 200, body, { ...API_HEADER, 'Content-Type': type, 'Docker-Content-Digest': digest, ETag: etag });
  }

  private async blob(c: Ctx, name: string, digest: string, ns: string | undefined): Promise<void> {
    const repos = this.reposFor(name, ns);
    const unknown = () => new HttpError(404, 'BLOB_UNKNOWN', 'blob unknown to registry', { name, digest });
    if (!storeDigest(digest)) throw unknown();
    if (!(await this.holder(repos, digest, true))) throw unknown();
    // The digest is checked, so the path is inside blobs/; the realpath check stops symlinks out.
    const real = await realFileUnder(this.images.layout.dir, this.images.layout.blobPath(digest));
    if (!real) throw unknown();
    await sendFile(c, real, { ...API_HEADER, 'Content-Type': 'application/octet-stream', 'Docker-Content-Digest': digest }, `"${digest}"`, unknown);
  }

  /**
   * The referrers API: an image index of the manifests whose `subject` is `digest`, in every
   * repository the name resolves to, filtered by `artifactType` when asked. A repository that
   * exists always answers 200, an empty index when nothing refers to the digest.
   */
  private async referrers(c: Ctx, name: string, digest: string, q: URLSearchParams, ns: string | undefined): Promise<void> {
    const repos = this.reposFor(name, ns);
    const found = new Map<string, Descriptor>();
    if (storeDigest(digest)) {
      for (const r of repos) for (const d of (await this.images.graph(r)).referrers.get(digest) ?? []) if (!found.has(d.digest)) found.set(d.digest, d);
    }
    const types = q.getAll('artifactType');
    let manifests = [...found.values()].sort((a, b) => sortStrings(a.digest, b.digest));
    const headers: Record<string, string> = { ...API_HEADER, 'Content-Type': MediaType.ociIndex };
    if (types.length) {
      manifests = manifests.filter((d) => d.artifactType !== undefined && types.includes(d.artifactType));
      headers['OCI-Filters-Applied'] = 'artifactType';
    }
    sendBody(c, 200, JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests }), headers);
  }

  /** Answers a path under /v2/. */
  async serve(c: Ctx, p: string, q: URLSearchParams): Promise<void> {
    const ns = q.get('ns') ?? undefined;
    if (p === '/v2/' || p === '/v2') {
      c.route = 'base';
      sendBody(c, 200, '{}', { ...API_HEADER, 'Content-Type': 'application/json' });
      return;
    }
    const segs = p.slice(4).split('/');
    if (segs.some((s, i) => s === '.' || s === '..' || (s === '' && i < segs.length - 1))) {
      throw new HttpError(400, 'NAME_INVALID', 'invalid repository name', { path: clean(p, 300) });
    }
    if (p === '/v2/_catalog') {
      c.route = 'catalog';
      const { n, last } = pageParams(q);
      const { page, more } = paginate(this.images.catalog(ns), n, last);
      const headers: Record<string, string> = { ...API_HEADER, 'Content-Type': 'application/json' };
      if (more && n !== undefined && page.length) headers.Link = linkNext('/v2/_catalog', q, n, page[page.length - 1]!);
      sendBody(c, 200, JSON.stringify({ repositories: page }), headers);
      return;
    }
    let m = /^\/v2\/(.+)\/tags\/list$/.exec(p);
    if (m) {
      c.route = 'tags';
      const name = m[1]!;
      const tags = new Set(this.reposFor(name, ns).flatMap((r) => [...r.tags.keys()]));
      const { n, last } = pageParams(q);
      const { page, more } = paginate([...tags].sort(sortStrings), n, last);
      const headers: Record<string, string> = { ...API_HEADER, 'Content-Type': 'application/json' };
      if (more && n !== undefined && page.length) headers.Link = linkNext(`/v2/${name}/tags/list`, q, n, page[page.length - 1]!);
      sendBody(c, 200, JSON.stringify({ name, tags: page }), headers);
      return;
    }
    if (/^\/v2\/(.+)\/blobs\/uploads(\/|$)/.test(p)) {
      throw new HttpError(405, 'UNSUPPORTED', 'uploads are not supported: this registry is read-only', undefined, { Allow: 'GET, HEAD' });
    }
    m = /^\/v2\/(.+)\/referrers\/([^/]+)$/.exec(p);
    if (m) {
      c.route = 'referrers';
      await this.referrers(c, m[1]!, m[2]!, q, ns);
      return;
    }
    m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(p);
    if (m) {
      c.route = m[2] === 'manifests' ? 'manifest' : 'blob';
      if (m[2] === 'manifests') await this.manifest(c, m[1]!, m[3]!, ns);
      else await this.blob(c, m[1]!, m[3]!, ns);
      return;
    }
    throw new HttpError(404, 'NAME_UNKNOWN', 'no such endpoint', { path: clean(p, 300) });
  }
}

function pageParams(q: URLSearchParams): { n: number | undefined; last: string | undefined } {
  const nRaw = q.get('n');
  let n: number | undefined;
  if (nRaw !== null && nRaw !== '') {
    if (!/^\d{1,9}$/.test(nRaw)) throw new HttpError(400, 'UNSUPPORTED', 'invalid number of results requested', { n: clean(nRaw, 50) });
    n = Math.min(Number(nRaw), 10_000);
  }
  return { n, last: q.get('last') ?? undefined };
}

function linkNext(base: string, q: URLSearchParams, n: number, last: string): string {
  const next = new URLSearchParams();
  const ns = q.get('ns');
  if (ns !== null) next.set('ns', ns);
  next.set('n', String(n));
  next.set('last', last);
  return `<${base}?${next.toString()}>; rel="next"`;
}
