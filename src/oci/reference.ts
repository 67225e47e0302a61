import { Codes, UsageError } from '../errors.js';

/** docker.io is stored under this name; the API lives on a different host. */
export const DOCKER_HUB = 'docker.io';
export const DOCKER_HUB_API = 'registry-1.docker.io';

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$|^sha512:[a-f0-9]{128}$/;
const DOMAIN = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$/;

/** Docker Hub's other names, as users and configs write them, become `docker.io`. */
export function normalizeRegistry(host: string): string {
  return host === 'index.docker.io' || host === DOCKER_HUB_API ? DOCKER_HUB : host;
}

export interface Reference {
  /** Registry host as users write it, normalised (`docker.io`, `registry.k8s.io`, `127.0.0.1:5000`). */
  registry: string;
  /** Repository path (`library/nginx`, `team/app`). */
  repository: string;
  tag?: string;
  digest?: string;
}

export function isDigest(s: string): boolean {
  return DIGEST.test(s);
}

/** One component of a repository path: lowercase letters and digits, with `.`, `_`, `__` or dashes between. */
export const isPathComponent = (s: string): boolean => COMPONENT.test(s);
export const isTag = (s: string): boolean => TAG.test(s);

export function assertDigest(s: string, what = 'digest'): string {
  if (!DIGEST.test(s)) {
    throw new UsageError(Codes.digestInvalid, `invalid ${what} "${s}"`, {
      hint: 'A digest is "sha256:" followed by 64 lowercase hex characters.',
    });
  }
  return s;
}

/**
 * Parses an image reference the way docker and containerd do: `nginx` is
 * `docker.io/library/nginx:latest`, `index.docker.io` is `docker.io`, and the first component is a
 * registry only if it has a dot, a colon or is `localhost`.
 */
export function parseReference(input: string, opts: { defaultTag?: boolean } = {}): Reference {
  const bad = (why: string): never => {
    throw new UsageError(Codes.refInvalid, `invalid image reference "${input}": ${why}`, {
      hint: 'Write references like registry.k8s.io/pause:3.10, docker.io/library/haproxy:2.9 or name@sha256:<64 hex>.',
    });
  };
  const s = input.trim();
  if (!s) bad('it is empty');
  if (s.length > 4096) bad('it is too long');
  let rest = s;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) bad(`"${digest}" is not a valid digest`);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) bad(`"${tag}" is not a valid tag`);
  }
  const parts = rest.split('/');
  let registry = DOCKER_HUB;
  const first = parts[0] ?? '';
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('['))) {
    registry = parts.shift()!;
    if (!DOMAIN.test(registry)) bad(`"${registry}" is not a valid registry host`);
  }
  registry = normalizeRegistry(registry);
  if (parts.length === 0 || (parts.length === 1 && parts[0] === '')) bad('it has no repository');
  for (const p of parts) {
    if (!COMPONENT.test(p)) bad(`"${p}" is not a valid path component (lowercase letters, digits, and . _ - between them)`);
  }
  if (registry === DOCKER_HUB && parts.length === 1) parts.unshift('library');
  const repository = parts.join('/');
  if (registry.length + 1 + repository.length > 255) bad('the name is longer than 255 characters');
  if (!tag && !digest && opts.defaultTag !== false) tag = 'latest';
  const ref: Reference = { registry, repository };
  if (tag) ref.tag = tag;
  if (digest) ref.digest = digest;
  return ref;
}

/** `registry/repository` */
export function repoName(ref: Reference): string {
  return `${ref.registry}/${ref.repository}`;
}

/** The full canonical form: `registry/repo:tag@digest` (either part may be absent). */
export function formatReference(ref: Reference): string {
  return `${repoName(ref)}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}

/** The tag form when there is a tag, otherwise the digest form: what users expect to see in an index. */
export function displayName(ref: Reference): string {
  return ref.tag ? `${repoName(ref)}:${ref.tag}` : formatReference(ref);
}

/** The host that serves the registry API for a reference's registry. */
export function apiHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API : registry;
}

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/**
 * The registry reference.ts reads `host` as when it starts `host/path` (index.docker.io is
 * docker.io), or undefined when it reads no registry there or `path` is no repository: its
 * grammar, not a copy of it, decides. Two components in `path` keep docker.io's library/ rule out.
 */
export function registryOf(host: string, path = 'x/x'): string | undefined {
  try {
    const ref = parseReference(`${host}/${path}`);
    return ref.repository === path ? ref.registry : undefined;
  } catch {
    return undefined;
  }
}
