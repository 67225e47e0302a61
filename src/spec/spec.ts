import path from 'node:path';
import type { ErrorObject, ValidateFunction } from 'ajv';
import { Codes, SpecError, UsageError } from '../errors.js';
import { formatPlatform, parsePlatform, type Platform } from '../oci/media.js';
import { displayName, formatReference, parseReference, type Reference } from '../oci/reference.js';
import { assertSupportedKubernetes } from './kubernetes.js';
import { describeSchemaProblems } from './schema-errors.js';
import { bundleSpecSchema, PATH_SEGMENT } from './schema.js';
import { specValidator } from './spec-validator.js';
import { loadYaml, parseYamlText, positionOf, type LoadedYaml } from './yamlpos.js';

export interface BinarySpec {
  name: string;
  version: string;
  url: string;
  checksumUrl?: string;
  checksumFile?: string;
  sha256?: Record<string, string>;
  extract?: boolean;
}

export interface ChartSpec {
  name: string;
  repo?: string;
  version?: string;
  path?: string;
}

export interface BundleSpec {
  apiVersion: 'ferry.dev/v1alpha1';
  kind: 'BundleSpec';
  metadata: { name: string; version: string; description?: string };
  spec: {
    platforms: string[];
    kubernetes?: { version: string; imageRepository?: string };
    images: (string | { ref: string; platforms?: string[] })[];
    binaries?: BinarySpec[];
    charts?: ChartSpec[];
    runtime?: { node?: Record<string, string> };
  };
}

/** One image of a spec, normalised: its full name and the platforms to carry. */
export interface SpecImage {
  /** What the spec says, as written. */
  input: string;
  ref: Reference;
  /** Normalised name, `registry/repo:tag` or `registry/repo@digest`. */
  name: string;
  platforms: Platform[];
  /** Where in the spec, for errors. */
  at: string;
}

export interface LoadedSpec {
  file: string;
  spec: BundleSpec;
  images: SpecImage[];
  /** Set by narrowPlatforms (`--platform`): this run carries only these platforms. */
  narrowed?: {
    platforms: string[];
    /** Images whose own platforms: share none with the narrowed set, left out of this run. */
    skipped: string[];
  };
}

let validator: ValidateFunction | undefined;
function validate(value: unknown): ErrorObject[] {
  validator ??= specValidator();
  return validator(value) ? [] : [...(validator.errors ?? [])];
}

/** One message per problem, each with file:line:col and the expected shape. */
function describe(y: LoadedYaml, errors: ErrorObject[]): string[] {
  return describeSchemaProblems(y, errors, bundleSpecSchema).map((p) => `${p.at}: ${p.text}`);
}

/** Expands {version}, {semver} (no leading v), {os} and {arch} in a binary's URL. */
export function expandTemplate(t: string, version: string, platform: string): string {
  const [os, arch] = platform.split('/') as [string, string];
  return t.replaceAll('{version}', version).replaceAll('{semver}', version.replace(/^v/, '')).replaceAll('{os}', os).replaceAll('{arch}', arch);
}

/** The file name a download keeps in the bundle (an archive to extract on the node): its URL's last segment. */
export const downloadFileName = (url: string): string => path.posix.basename(new URL(url, 'file:///').pathname);

/** Archives keep their download's file name in the bundle, so it must be a safe path segment for every platform. */
function fileNameProblems(y: LoadedYaml, spec: BundleSpec): string[] {
  const segment = new RegExp(PATH_SEGMENT);
  const out: string[] = [];
  (spec.spec.binaries ?? []).forEach((b, i) => {
    if (!b.extract) return;
    for (const platform of spec.spec.platforms) {
      let name: string;
      try {
        name = downloadFileName(expandTemplate(b.url, b.version, platform));
      } catch {
        name = '';
      }
      if (segment.test(name)) continue;
      out.push(`${positionOf(y, ['spec', 'binaries', i, 'url'])}: spec.binaries[${i}].url gives the file name "${name}" for ${platform}, which cannot name a file in the bundle (expected: a URL or path ending in a file name of letters, digits and . _ + ~ -)`);
      break;
    }
  });
  return out;
}

export async function loadSpec(file: string): Promise<LoadedSpec> {
  return checkSpec(await loadYaml(file, 'spec'));
}

export function parseSpecText(text: string, file = 'spec.yaml'): LoadedSpec {
  return checkSpec(parseYamlText(text, file, 'spec'));
}

function checkSpec(y: LoadedYaml): LoadedSpec {
  const problems = describe(y, validate(y.value));
  if (problems.length) throw specInvalid(y.file, problems);
  const spec = y.value as BundleSpec;
  problems.push(...fileNameProblems(y, spec));
  if (spec.spec.kubernetes) assertSupportedKubernetes(spec.spec.kubernetes.version, `${positionOf(y, ['spec', 'kubernetes', 'version'])}: spec.kubernetes.version`, `Set spec.kubernetes.version in ${y.file}`);
  const images: SpecImage[] = [];
  const seen = new Map<string, string>();
  spec.spec.images.forEach((entry, i) => {
    const input = typeof entry === 'string' ? entry : entry.ref;
    const at = positionOf(y, typeof entry === 'string' ? ['spec', 'images', i] : ['spec', 'images', i, 'ref']);
    let ref: Reference;
    try {
      ref = parseReference(input);
    } catch (e) {
      problems.push(`${at}: spec.images[${i}] ${(e as Error).message} (expected: an image reference like registry.k8s.io/pause:3.10)`);
      return;
    }
    const plats = (typeof entry === 'string' ? undefined : entry.platforms) ?? spec.spec.platforms;
    const name = displayName(ref);
    const prev = seen.get(name);
    if (prev) {
      problems.push(`${at}: spec.images[${i}] "${input}" is the same image as ${prev}; list it once`);
      return;
    }
    seen.set(name, at);
    images.push({ input, ref, name: ref.tag && ref.digest ? formatReference(ref) : name, platforms: plats.map(parsePlatform), at });
  });
  if (problems.length) throw specInvalid(y.file, problems);
  images.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { file: y.file, spec, images };
}

function specInvalid(file: string, problems: string[]): SpecError {
  return new SpecError(Codes.specInvalid, `${file} is not a valid bundle spec:\n  ${problems.join('\n  ')}`, {
    hint: 'Fix each field above. The shape is in bundle-spec/bundle-spec.schema.json (add it to your editor for completion).',
    details: { problems },
  });
}

/**
 * `--platform`: narrows the spec to a subset of spec.platforms for one run (a site that is only
 * amd64 does not carry arm64). Per-image platforms are intersected with the subset; an image left
 * with none is skipped. The lock may hold more platforms than a narrowed run wants (see lock.ts).
 */
export function narrowPlatforms(s: LoadedSpec, wanted: string[] | undefined): LoadedSpec {
  if (!wanted?.length) return s;
  const all = s.spec.spec.platforms.map((p) => formatPlatform(parsePlatform(p)));
  const want = new Set(wanted.map((w) => w.trim()).filter(Boolean));
  const unknown = [...want].filter((w) => !all.includes(w));
  if (unknown.length) {
    throw new UsageError(Codes.usage, `--platform ${unknown.join(', ')} ${unknown.length > 1 ? 'are' : 'is'} not in the platforms of ${s.file}: ${all.join(', ')}`, {
      hint: `Choose from ${all.join(', ')}, or add the platform to spec.platforms in ${s.file}.`,
    });
  }
  const platforms = all.filter((p) => want.has(p));
  const images: SpecImage[] = [];
  const skipped: string[] = [];
  for (const img of s.images) {
    const ps = img.platforms.filter((p) => want.has(formatPlatform(p)));
    if (ps.length) images.push({ ...img, platforms: ps });
    else skipped.push(img.name);
  }
  return { ...s, spec: { ...s.spec, spec: { ...s.spec.spec, platforms } }, images, narrowed: { platforms, skipped } };
}
