import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { Parser, type ReadEntry } from 'tar';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { Codes, FerryError, InternalError, UsageError } from '../errors.js';
import type { Layout } from '../oci/layout.js';
import { MediaType } from '../oci/media.js';
import { displayName, parseReference, repoName, type Reference } from '../oci/reference.js';
import { kubeadmImages } from '../spec/kubernetes.js';
import type { Reporter } from '../util/progress.js';

/**
 * Does a bundle hold every image kubeadm and its charts will ask for? A site has no registry to fall
 * back on, so a missing image is found here (at build, and again at install with the installed
 * kubeadm and helm) rather than as a pod stuck in ImagePullBackOff.
 */

/** One image someone asks for, and who: `kubeadm v1.37.2`, `chart flannel v0.28.10 (templates/daemonset.yaml)`. */
export interface ImageNeed {
  ref: string;
  by: string;
}

/** An image the bundle holds: its name, and the digest the lock pinned it to. */
export interface HeldImage {
  ref: string;
  digest?: string;
}

function parseOrUndefined(s: string): Reference | undefined {
  try {
    return parseReference(s);
  } catch {
    return undefined;
  }
}

/** The needs nothing held satisfies. Names are compared normalised (nginx is docker.io/library/nginx:latest). */
export function missingImages(needs: ImageNeed[], held: HeldImage[]): ImageNeed[] {
  const have = held.map((h) => ({ ref: parseOrUndefined(h.ref), digest: h.digest })).filter((h) => h.ref);
  const seen = new Set<string>();
  const out: ImageNeed[] = [];
  for (const n of needs) {
    const want = parseOrUndefined(n.ref);
    const key = `${n.ref}\0${n.by}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const ok =
      !!want &&
      have.some((h) => repoName(h.ref!) === repoName(want) && (want.digest ? h.ref!.digest === want.digest || h.digest === want.digest : h.ref!.tag === want.tag));
    if (!ok) out.push({ ref: want ? displayName(want) : n.ref, by: n.by });
  }
  return out;
}

export function imagesMissingError(missing: ImageNeed[], lacks: string, hint: string): FerryError {
  return new UsageError(Codes.bundleImageMissing, `${missing.length} image${missing.length > 1 ? 's' : ''} would be missing on the site:\n  ${missing.map((m) => `${m.by} asks for ${m.ref}, which ${lacks}`).join('\n  ')}`, {
    hint,
    details: { missing },
  });
}

/** Every `image:` of every container (init and ephemeral ones too) in Kubernetes objects. */
export function imagesInObjects(objects: unknown, by: string): ImageNeed[] {
  const out: ImageNeed[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) return v.forEach(walk);
    if (!v || typeof v !== 'object') return;
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      if ((k === 'containers' || k === 'initContainers' || k === 'ephemeralContainers') && Array.isArray(x)) {
        for (const c of x) if (typeof (c as { image?: unknown })?.image === 'string') out.push({ ref: (c as { image: string }).image, by });
      }
      walk(x);
    }
  };
  walk(objects);
  return out;
}

/** The images of `helm template` output, each with the template it came from (helm's `# Source:`). */
export function imagesInManifests(rendered: string, chartLabel: string): ImageNeed[] {
  const out: ImageNeed[] = [];
  for (const chunk of rendered.split(/^---\s*$/m)) {
    const source = /^# Source: [^/\n]+\/(.+)$/m.exec(chunk)?.[1]?.trim();
    out.push(...imagesInObjects(parseAllDocuments(chunk).map((d) => d.toJS() as unknown), source ? `${chartLabel} (${source})` : chartLabel));
  }
  return out;
}

/**
 * Without helm: the images values.yaml names, the common shapes only ({registry, repository, tag},
 * `image: name:tag`, a map of images), skipping blocks with `enabled: false`. Partial by nature;
 * the caller warns.
 */
export function imagesInValues(valuesYaml: string, chartLabel: string, appVersion?: string): ImageNeed[] {
  const out: ImageNeed[] = [];
  const add = (ref: string, at: string) => {
    if (parseOrUndefined(ref) && /[:@]/.test(ref.split('/').pop()!)) out.push({ ref, by: `${chartLabel} (values.yaml ${at})` });
  };
  const walk = (v: unknown, at: string[], inImages: boolean): void => {
    if (Array.isArray(v)) return v.forEach((x, i) => walk(x, [...at, String(i)], inImages));
    if (typeof v === 'string') {
      const key = at[at.length - 1] ?? '';
      if (inImages || /image$/i.test(key)) add(v, at.join('.'));
      return;
    }
    if (!v || typeof v !== 'object') return;
    const o = v as Record<string, unknown>;
    // A switched-off part (flannel's netpol: {enabled: false, image: …}) renders nothing.
    if (o.enabled === false) return;
    if (typeof o.repository === 'string' && o.repository) {
      const tag = typeof o.tag === 'string' || typeof o.tag === 'number' ? String(o.tag) : appVersion;
      const digest = typeof o.digest === 'string' && o.digest ? `@${o.digest}` : '';
      const registry = typeof o.registry === 'string' && o.registry ? `${o.registry}/` : '';
      if (tag || digest) add(`${registry}${o.repository}${tag ? `:${tag}` : ''}${digest}`, at.join('.'));
      return;
    }
    for (const [k, x] of Object.entries(o)) walk(x, [...at, k], inImages || /^images$/i.test(k));
  };
  walk(parseYaml(valuesYaml) as unknown, [], false);
  return out;
}

/** Reads `<chart>/values.yaml` and Chart.yaml's appVersion out of a chart .tgz. */
async function readValues(tgz: string): Promise<{ values?: string; appVersion?: string }> {
  const files: Record<string, string> = {};
  await new Promise<void>((resolve, reject) => {
    const p = new Parser({
      onReadEntry: (e: ReadEntry) => {
        const parts = e.path.split('/');
        if (parts.length === 2 && (parts[1] === 'values.yaml' || parts[1] === 'Chart.yaml') && e.size < 4 << 20) {
          const chunks: Buffer[] = [];
          e.on('data', (c: Buffer) => chunks.push(c));
          e.on('end', () => (files[parts[1]!] ??= Buffer.concat(chunks).toString('utf8')));
        } else e.resume();
      },
    });
    p.on('error', reject);
    p.on('end', () => resolve());
    createReadStream(tgz).on('error', reject).pipe(p);
  });
  const chart = files['Chart.yaml'] ? (parseYaml(files['Chart.yaml']) as { appVersion?: unknown }) : {};
  return { values: files['values.yaml'], ...(chart?.appVersion ? { appVersion: String(chart.appVersion) } : {}) };
}

/** Runs a program and returns its stdout; rejects with its stderr on failure. */
function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
    c.stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve(out) : reject(Object.assign(new Error(err.trim().split('\n').slice(-2).join(' / ') || `exit ${code}`), { exitCode: code }))));
  });
}

/** The helm to render charts with at build time: FERRY_HELM, else `helm` on PATH, else none. */
export async function findHelm(env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  const cand = env.FERRY_HELM || 'helm';
  try {
    await run(cand, ['version', '--short']);
    return cand;
  } catch (e) {
    if (env.FERRY_HELM) {
      throw new UsageError(Codes.usage, `FERRY_HELM=${env.FERRY_HELM} does not run: ${(e as Error).message}`, { hint: 'Point FERRY_HELM at a helm binary, or unset it to use helm from PATH.' });
    }
    return undefined;
  }
}

/** The chart .tgz of a chart stored in a layout (every kind of chart is, by the time the build checks). */
export async function chartArchive(store: Layout, ref: string): Promise<string> {
  const d = await store.resolve(ref);
  const man = d ? (JSON.parse((await store.readBlob(d.digest)).toString('utf8')) as { layers?: { mediaType: string; digest: string }[] }) : undefined;
  const layer = man?.layers?.find((l) => l.mediaType === MediaType.helmChart);
  if (!layer) throw new InternalError(Codes.internal, `${ref} is not a Helm chart in the store`);
  return store.blobPath(layer.digest);
}

export interface BuildImageCheck {
  kubernetes?: { version: string; imageRepository?: string };
  charts: { name: string; version: string; tgz: string }[];
  held: HeldImage[];
  helm?: string;
  reporter?: Pick<Reporter, 'warn'>;
}

/**
 * The build-side check: kubeadm's images from ferry's table for the spec's release, and every image
 * each chart renders with its default values (helm template; values.yaml when there is no helm).
 */
export async function checkBundleImages(c: BuildImageCheck): Promise<ImageNeed[]> {
  const needs: ImageNeed[] = [];
  if (c.kubernetes) {
    for (const ref of kubeadmImages(c.kubernetes.version, c.kubernetes.imageRepository)) needs.push({ ref, by: `kubeadm ${c.kubernetes.version}` });
  }
  const partial: string[] = [];
  for (const ch of c.charts) {
    const label = `chart ${ch.name} ${ch.version}`;
    if (c.helm) {
      try {
        needs.push(...imagesInManifests(await run(c.helm, ['template', ch.name, ch.tgz]), label));
        continue;
      } catch (e) {
        partial.push(`${ch.name} (helm template failed: ${(e as Error).message})`);
      }
    } else partial.push(ch.name);
    const { values, appVersion } = await readValues(ch.tgz);
    if (values) needs.push(...imagesInValues(values, label, appVersion));
  }
  if (partial.length) {
    c.reporter?.warn(`the image check read only values.yaml of chart${partial.length > 1 ? 's' : ''} ${partial.join(', ')}${c.helm ? '' : ': no helm found (set FERRY_HELM or put helm on PATH to render the charts)'}`);
  }
  const missing = missingImages(needs, c.held);
  if (missing.length) {
    throw imagesMissingError(missing, 'the spec does not bundle', 'Add each image to spec.images and run `ferry lock` again (or change the chart values or the Kubernetes release that asks for it).');
  }
  return needs;
}
