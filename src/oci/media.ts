import { Codes, RegistryError } from '../errors.js';

/** Media types ferry reads and writes. */
export const MediaType = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  helmConfig: 'application/vnd.cncf.helm.config.v1+json',
  helmChart: 'application/vnd.cncf.helm.chart.content.v1.tar+gzip',
} as const;

const INDEX_TYPES: readonly string[] = [MediaType.ociIndex, MediaType.dockerList];
const MANIFEST_TYPES: readonly string[] = [MediaType.ociManifest, MediaType.dockerManifest];
/** What we send in Accept for manifests: every type we can parse. */
export const MANIFEST_ACCEPT = [...INDEX_TYPES, ...MANIFEST_TYPES].join(', ');

export function isIndexType(mt: string | undefined): boolean {
  return !!mt && INDEX_TYPES.includes(mt);
}
export function isManifestType(mt: string | undefined): boolean {
  return !!mt && MANIFEST_TYPES.includes(mt);
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  'os.version'?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
  artifactType?: string;
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export type ParsedManifest = { kind: 'index'; index: ImageIndex } | { kind: 'manifest'; manifest: ImageManifest };

/** Parses a manifest or index we hold in memory, and says which it is. */
export function parseManifest(bytes: Buffer, mediaType: string, what: string): ParsedManifest {
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new RegistryError(Codes.regProtocol, `${what} is not valid JSON`, { cause: e });
  }
  const mt = (j.mediaType as string | undefined) ?? mediaType;
  if (isIndexType(mt) || (Array.isArray(j.manifests) && !j.config)) return { kind: 'index', index: j as unknown as ImageIndex };
  if (isManifestType(mt) || (j.config && Array.isArray(j.layers))) {
    if (j.schemaVersion !== 2) throw new RegistryError(Codes.mediaType, `${what} is schema version ${String(j.schemaVersion)}`, { hint: 'Only schema 2 (OCI and Docker v2) manifests are supported.' });
    return { kind: 'manifest', manifest: j as unknown as ImageManifest };
  }
  throw new RegistryError(Codes.mediaType, `${what} has unsupported media type "${mt}"`, {
    hint: 'ferry copies OCI and Docker v2 schema 2 images and indexes; Docker schema 1 images must be rebuilt.',
  });
}

export function parsePlatform(s: string): Platform {
  const [os, architecture, variant] = s.split('/');
  const p: Platform = { os: os ?? '', architecture: architecture ?? '' };
  if (variant) p.variant = variant;
  return p;
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** arm64 without a variant matches arm64/v8, the way containerd treats them. */
export function platformMatches(want: Platform, have: Platform | undefined): boolean {
  if (!have) return false;
  if (want.os !== have.os || want.architecture !== have.architecture) return false;
  if (!want.variant) return true;
  const hv = have.variant ?? (have.architecture === 'arm64' ? 'v8' : undefined);
  return want.variant === hv;
}
