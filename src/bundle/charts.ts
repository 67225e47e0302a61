import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { createGzip } from 'node:zlib';
import semver from 'semver';
import { Parser, type ReadEntry } from 'tar';
import { parse as parseYaml } from 'yaml';
import { Codes, FerryError, UsageError } from '../errors.js';
import type { RegistryClient } from '../oci/client.js';
import { Puller } from '../oci/copy.js';
import type { Layout } from '../oci/layout.js';
import { MediaType, type Descriptor } from '../oci/media.js';
import { parseReference } from '../oci/reference.js';
import type { ChartSpec } from '../spec/spec.js';
import { tempPathFor } from '../util/fsx.js';
import { fetchText, fetchToCache, localPath, resolveCached, type FetchOptions } from './fetch.js';
import { END_OF_ARCHIVE, dirHeader, fileHeader, padding } from './tarwriter.js';

/** Charts without an upstream OCI name are stored under this pseudo-registry: charts/<name>:<version>. */
const LOCAL_CHART_REGISTRY = 'charts.ferry.local';

export interface PackedChart {
  name: string;
  version: string;
  /** Full name in the store, e.g. charts.ferry.local/charts/cert-manager:1.16.1 */
  ref: string;
  digest: string;
  source: string;
}

interface ChartMeta {
  apiVersion?: string;
  name?: string;
  version?: string;
  [k: string]: unknown;
}

const chartErr = (msg: string, hint: string, cause?: unknown) => new UsageError(Codes.chartInvalid, msg, { hint, cause });

/** Reads Chart.yaml out of a chart .tgz without unpacking it. */
async function readChartMeta(tgz: string): Promise<ChartMeta> {
  let meta: string | undefined;
  await new Promise<void>((resolve, reject) => {
    const p = new Parser({
      onReadEntry: (e: ReadEntry) => {
        const parts = e.path.split('/');
        if (parts.length === 2 && parts[1] === 'Chart.yaml' && meta === undefined && e.size < 1 << 20) {
          const chunks: Buffer[] = [];
          e.on('data', (c: Buffer) => chunks.push(c));
          e.on('end', () => (meta = Buffer.concat(chunks).toString('utf8')));
        } else e.resume();
      },
    });
    p.on('error', reject);
    p.on('end', () => resolve());
    createReadStream(tgz).on('error', reject).pipe(p);
  }).catch((e: unknown) => {
    throw chartErr(`${tgz} is not a chart archive: ${(e as Error).message}`, 'A chart is a .tgz with <name>/Chart.yaml inside.', e);
  });
  if (!meta) throw chartErr(`${tgz} has no <name>/Chart.yaml`, 'A chart is a .tgz with <name>/Chart.yaml inside.');
  const m = parseYaml(meta) as ChartMeta;
  if (!m?.name || !m.version) throw chartErr(`${tgz}: Chart.yaml has no name or version`, 'Fix Chart.yaml.');
  return m;
}

/** Stores a chart .tgz in the store as an OCI artifact with Helm's media types, and names it. */
async function storeChart(store: Layout, tgz: string, tgzSha: string, tgzSize: number, name: string): Promise<Descriptor> {
  const meta = await readChartMeta(tgz);
  const layer: Descriptor = { mediaType: MediaType.helmChart, digest: `sha256:${tgzSha}`, size: tgzSize };
  if (!(await store.hasBlob(layer.digest, layer.size))) {
    const w = store.writer(layer);
    try {
      for await (const c of createReadStream(tgz)) await w.write(c as Buffer);
      await w.commit();
    } catch (e) {
      await w.abort();
      throw e;
    }
  }
  const cfgBytes = Buffer.from(JSON.stringify(meta));
  const cfg = await store.putBytes(cfgBytes);
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.helmConfig, digest: cfg.digest, size: cfg.size },
    layers: [layer],
    annotations: { 'org.opencontainers.image.title': String(meta.name), 'org.opencontainers.image.version': String(meta.version) },
  };
  const mb = Buffer.from(JSON.stringify(manifest));
  const md = await store.putBytes(mb);
  const desc: Descriptor = { mediaType: MediaType.ociManifest, digest: md.digest, size: md.size, artifactType: MediaType.helmConfig };
  await store.addRefs([{ name, descriptor: desc }]);
  return desc;
}

const IGNORED = new Set(['.git', '.svn', '.hg', '.DS_Store']);

/** .helmignore, the common subset: `name`, `dir/`, `*.ext` and `#` comments. */
async function helmIgnore(dir: string): Promise<(rel: string, isDir: boolean) => boolean> {
  let pats: string[] = [];
  try {
    pats = (await fs.readFile(path.join(dir, '.helmignore'), 'utf8')).split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  } catch {
    /* none */
  }
  const res = pats.map((p) => {
    const dirOnly = p.endsWith('/');
    const body = p.replace(/\/$/, '');
    const re = new RegExp(`^${body.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')}$`);
    return { re, dirOnly, anchored: body.includes('/') };
  });
  return (rel, isDir) =>
    res.some((r) => (!r.dirOnly || isDir) && (r.re.test(rel) || (!r.anchored && r.re.test(path.posix.basename(rel)))));
}

/**
 * Packages a chart directory the same way every time: entries sorted, zero mtimes and owners, fixed
 * modes, under `<name>/`. `helm package` stamps times, so two of its packages never match.
 */
export async function packageChartDir(dir: string, outFile: string): Promise<{ sha256: string; size: number; meta: ChartMeta }> {
  let meta: ChartMeta;
  try {
    meta = parseYaml(await fs.readFile(path.join(dir, 'Chart.yaml'), 'utf8')) as ChartMeta;
  } catch (e) {
    throw chartErr(`${dir} has no readable Chart.yaml: ${(e as Error).message}`, 'Point path: at a Helm chart directory.', e);
  }
  if (!meta?.name || !meta.version) throw chartErr(`${dir}/Chart.yaml has no name or version`, 'Fix Chart.yaml.');
  const ignored = await helmIgnore(dir);
  const files: { rel: string; abs: string; size: number; dir: boolean; mode: number }[] = [];
  const walk = async (rel: string) => {
    const entries = (await fs.readdir(path.join(dir, rel), { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (IGNORED.has(e.name) || ignored(r, e.isDirectory())) continue;
      const abs = path.join(dir, r);
      if (e.isDirectory()) {
        files.push({ rel: r, abs, size: 0, dir: true, mode: 0o755 });
        await walk(r);
      } else if (e.isFile()) {
        const st = await fs.stat(abs);
        files.push({ rel: r, abs, size: st.size, dir: false, mode: st.mode & 0o111 ? 0o755 : 0o644 });
      }
    }
  };
  await walk('');
  const tmp = tempPathFor(outFile);
  const gz = createGzip({ level: 9 });
  const out = await fs.open(tmp, 'w');
  const hash = createHash('sha256');
  let size = 0;
  const drained = (async () => {
    for await (const c of gz) {
      hash.update(c as Buffer);
      size += (c as Buffer).length;
      await out.write(c as Buffer);
    }
  })();
  const put = async (b: Buffer) => {
    if (!gz.write(b)) await new Promise((r) => gz.once('drain', r));
  };
  try {
    for (const f of files) {
      const p = `${meta.name}/${f.rel}`;
      if (f.dir) {
        await put(dirHeader(p));
        continue;
      }
      await put(fileHeader(p, f.size, f.mode));
      for await (const c of createReadStream(f.abs)) await put(c as Buffer);
      await put(padding(f.size));
    }
    await put(END_OF_ARCHIVE);
    gz.end();
    await drained;
    await out.close();
    await fs.rename(tmp, outFile);
  } catch (e) {
    await out.close().catch(() => {});
    await fs.rm(tmp, { force: true });
    throw e;
  }
  return { sha256: hash.digest('hex'), size, meta };
}

interface RepoIndex {
  entries?: Record<string, { version: string; urls?: string[]; digest?: string }[]>;
}

/** Resolves, fetches and stores every chart of a spec. */
export async function fetchCharts(
  charts: ChartSpec[],
  ctx: { store: Layout; client: RegistryClient; fileCache: string; specDir: string; fetch: FetchOptions },
): Promise<PackedChart[]> {
  const out: PackedChart[] = [];
  for (const c of charts) {
    if (c.path) {
      const dir = path.resolve(ctx.specDir, c.path);
      const staging = path.join(ctx.fileCache, 'charts');
      await fs.mkdir(staging, { recursive: true });
      const tmpOut = path.join(staging, `${c.name}.tgz`);
      const pkg = await packageChartDir(dir, tmpOut);
      if (c.version && !semver.satisfies(String(pkg.meta.version), c.version)) {
        throw chartErr(`chart ${c.name} at ${c.path} is version ${pkg.meta.version}, the spec wants ${c.version}`, 'Update the spec or Chart.yaml.');
      }
      const cached = await fetchToCache(tmpOut, pkg.sha256, ctx.fileCache, ctx.fetch);
      await fs.rm(tmpOut, { force: true });
      const ref = `${LOCAL_CHART_REGISTRY}/charts/${pkg.meta.name}:${pkg.meta.version}`;
      const d = await storeChart(ctx.store, cached.path, pkg.sha256, pkg.size, ref);
      out.push({ name: String(pkg.meta.name), version: String(pkg.meta.version), ref, digest: d.digest, source: c.path });
    } else if (c.name.startsWith('oci://')) {
      if (!c.version) throw chartErr(`chart ${c.name} has no version`, 'OCI charts need an exact version: version: 1.2.3.');
      const ref = parseReference(`${c.name.slice('oci://'.length)}:${c.version.replace(/\+/g, '_')}`);
      const repo = { registry: ref.registry, repository: ref.repository };
      const head = await resolveCached(`chart ${c.name}:${ref.tag}`, `oci-chart|${c.name}|${ref.tag}`, ctx.fileCache, ctx.fetch, async () => ({ digest: (await ctx.client.headManifest(repo, ref.tag!)).digest }));
      const name = `${ref.registry}/${ref.repository}:${ref.tag}`;
      await new Puller({ client: ctx.client, store: ctx.store }).pull(repo, head.digest, [name]);
      out.push({ name: path.posix.basename(ref.repository), version: c.version, ref: name, digest: head.digest, source: c.name });
    } else if (c.repo) {
      const base = c.repo.endsWith('/') ? c.repo : `${c.repo}/`;
      const local = localPath(base, ctx.specDir);
      const indexUrl = local ? path.join(local, 'index.yaml') : new URL('index.yaml', base).href;
      const resolveEntry = async (): Promise<{ version: string; url: string; digest: string }> => {
        let idx: RepoIndex;
        try {
          idx = parseYaml(await fetchText(indexUrl, ctx.fetch)) as RepoIndex;
        } catch (e) {
          if (e instanceof FerryError) throw e;
          throw chartErr(`${indexUrl} is not a Helm repository index`, 'Check repo: in the spec.', e);
        }
        const versions = idx?.entries?.[c.name] ?? [];
        if (!versions.length) throw new UsageError(Codes.chartNotFound, `chart ${c.name} is not in ${indexUrl}`, { hint: 'Check the chart name and repo in the spec.' });
        const best = semver.maxSatisfying(versions.map((v) => v.version).filter((v) => semver.valid(v)), c.version ?? '*');
        const entry = versions.find((v) => v.version === best);
        if (!entry) {
          throw new UsageError(Codes.chartNotFound, `no version of ${c.name} in ${indexUrl} satisfies ${c.version}`, {
            hint: `Available: ${versions.slice(0, 10).map((v) => v.version).join(', ')}.`,
          });
        }
        if (!entry.digest || !/^[a-f0-9]{64}$/.test(entry.digest)) {
          throw new UsageError(Codes.checksumMissing, `${indexUrl} lists ${c.name} ${entry.version} without a sha256 digest`, { hint: 'ferry packs only checked charts; use a repository whose index carries digests, or vendor the chart under charts/.' });
        }
        const u = entry.urls?.[0];
        if (!u) throw chartErr(`${indexUrl} lists ${c.name} ${entry.version} without a URL`, 'The repository index is incomplete.');
        return { version: entry.version, url: u, digest: entry.digest };
      };
      // A local repository is read every time; a remote one's answer is kept for --offline.
      const entry = local ? await resolveEntry() : await resolveCached(`chart ${c.name} ${c.version ?? '*'} from ${indexUrl}`, `helm|${indexUrl}|${c.name}|${c.version ?? '*'}`, ctx.fileCache, ctx.fetch, resolveEntry);
      const u = entry.url;
      const src = local && !/^[a-z]+:\/\//.test(u) ? path.join(local, u) : new URL(u, base).href;
      const got = await fetchToCache(src, entry.digest, ctx.fileCache, ctx.fetch);
      const ref = `${LOCAL_CHART_REGISTRY}/charts/${c.name}:${entry.version}`;
      const d = await storeChart(ctx.store, got.path, entry.digest, got.size, ref);
      out.push({ name: c.name, version: entry.version, ref, digest: d.digest, source: base });
    } else {
      throw chartErr(`chart ${c.name} has no repo, path or oci:// name`, 'Write {name, repo, version}, {name: oci://…, version} or {name, path}.');
    }
  }
  return out;
}
