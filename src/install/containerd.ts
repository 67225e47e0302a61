import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Codes, StoreError, UsageError } from '../errors.js';
import { Layout, REF_NAME } from '../oci/layout.js';
import { MediaType } from '../oci/media.js';
import { normalizeRegistry, parseReference } from '../oci/reference.js';
import { writeFileAtomic } from '../util/fsx.js';
import { SITE_CA } from './paths.js';

/*
 * containerd's registry configuration for a site: one certs.d/<upstream>/hosts.toml per registry
 * the bundle names, each pointing at the site service on the servers, in order, with the site CA.
 * `server` is the first mirror, never the upstream, so a miss fails here instead of reaching out.
 */

export interface ContainerdConfigOptions {
  /** The unpacked bundle whose images' registries get a hosts.toml each (or `registries`). */
  bundleDir?: string;
  /** The bundle's registries, already read (registriesInIndex). */
  registries?: string[];
  /** Site service URLs in the order nodes should try them, e.g. https://registry.site.example:5443 */
  mirrors: string[];
  /** The site CA as nodes see it, e.g. /etc/ferry/pki/ca.crt */
  caFile: string;
  outDir: string;
  /** config_path written in the snippets (default: <outDir>/certs.d, absolute). */
  configPath?: string;
  /** Registries to configure besides those the bundle names. */
  extraRegistries?: string[];
}

export interface ContainerdConfigResult {
  registries: string[];
  hostsFiles: string[];
  /** containerd 1.6/1.7 (config version 2) and 2.x (config version 3) snippets. */
  snippets: { v2: string; v3: string };
  configPath: string;
}

/** A TOML basic string. */
export const tomlString = (s: string) => `"${s.replace(/[\\"]/g, (c) => `\\${c}`).replace(/[\x00-\x1f\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)}"`;

export function normaliseMirror(u: string): string {
  let url: URL;
  try {
    url = new URL(u);
  } catch {
    throw new UsageError(Codes.mirrorInvalid, `mirror "${u}" is not a URL`, { hint: 'Write mirrors as https://registry.<domain>:<port>, e.g. https://registry.site.example:5443.' });
  }
  const bad = (why: string): never => {
    throw new UsageError(Codes.mirrorInvalid, `mirror "${u}" ${why}`, { hint: 'Write mirrors as https://registry.<domain>:<port>, e.g. https://registry.site.example:5443.' });
  };
  if (url.protocol !== 'https:' && url.protocol !== 'http:') bad('must be http:// or https://');
  if (url.username || url.password) bad('must not carry credentials (the site service needs none)');
  if (url.search || url.hash) bad('must not have a query or fragment');
  // containerd adds /v2 only to a bare host; the site service serves at the root.
  if (url.pathname !== '/' && url.pathname !== '') bad('must not have a path: the site service answers at /v2/');
  return `${url.protocol}//${url.host}`;
}

/** Registry host names the bundle's images come from, sorted. */
export async function bundleRegistries(bundleDir: string): Promise<string[]> {
  const layout = new Layout(path.join(path.resolve(bundleDir), 'images'));
  let idx;
  try {
    idx = await layout.readIndex();
  } catch (e) {
    throw new StoreError(Codes.serveBundle, `${bundleDir} is not an unpacked bundle: ${(e as Error).message}`, {
      hint: 'Point --bundle at the directory that holds images/index.json.',
      cause: e,
    });
  }
  return registriesOf(idx.manifests);
}

/** Registry host names an unpacked bundle's images/index.json names, sorted. */
export function registriesInIndex(indexJson: string): string[] {
  return registriesOf((JSON.parse(indexJson) as { manifests?: { annotations?: Record<string, string>; artifactType?: string }[] }).manifests ?? []);
}

function registriesOf(manifests: { annotations?: Record<string, string>; artifactType?: string }[]): string[] {
  const out = new Set<string>();
  for (const d of manifests) {
    const name = d.annotations?.[REF_NAME];
    // containerd never pulls Helm charts, so a registry that only holds charts needs no hosts.toml.
    if (!name || d.artifactType === MediaType.helmConfig) continue;
    try {
      out.add(parseReference(name, { defaultTag: false }).registry);
    } catch {
      /* not a full reference: nothing to configure */
    }
  }
  return [...out].sort();
}

export function renderHostsToml(upstream: string, mirrors: string[], caFile: string): string {
  const lines = [
    `# ${upstream}: written by ferry. Pulls go to the site service only; there is no fallback upstream.`,
    `server = ${tomlString(mirrors[0]!)}`,
    'capabilities = ["pull", "resolve"]',
    `ca = ${tomlString(caFile)}`,
  ];
  for (const m of mirrors) {
    lines.push('', `[host.${tomlString(m)}]`, '  capabilities = ["pull", "resolve"]', `  ca = ${tomlString(caFile)}`);
  }
  return `${lines.join('\n')}\n`;
}

export function renderConfigSnippets(configPath: string): { v2: string; v3: string } {
  return {
    v2: `# containerd 1.6 / 1.7 (config version 2): merge into /etc/containerd/config.toml, or list this file in imports.\nversion = 2\n\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = ${tomlString(configPath)}\n`,
    v3: `# containerd 2.x (config version 3): merge into /etc/containerd/config.toml, or list this file in imports.\nversion = 3\n\n[plugins."io.containerd.cri.v1.images".registry]\n  config_path = ${tomlString(configPath)}\n`,
  };
}

/** Guards the directory name: registry names come from the bundle, which is data, not code. */
function checkRegistryDir(r: string): string {
  const ok = /^[A-Za-z0-9.-]+(?::\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::\d{1,5})?$/.test(r) && !r.split(/[:]/)[0]!.split('.').some((l) => l === '' || l === '..');
  if (!ok) throw new UsageError(Codes.mirrorInvalid, `"${r}" is not a registry host name`, { hint: 'Registries are host names with an optional port, e.g. registry.k8s.io or 10.0.0.5:5000.' });
  return r;
}

export async function writeContainerdConfig(o: ContainerdConfigOptions): Promise<ContainerdConfigResult> {
  if (!o.mirrors.length) {
    throw new UsageError(Codes.mirrorInvalid, 'no mirror given', { hint: 'Pass --mirror https://registry.<domain>:<port> once per server, in the order nodes should try them.' });
  }
  const mirrors = [...new Set(o.mirrors.map(normaliseMirror))];
  if (!o.caFile || !path.isAbsolute(o.caFile)) {
    throw new UsageError(Codes.usage, `the CA file must be an absolute path, not "${o.caFile}"`, { hint: `containerd reads it on every node: give the path it has there, e.g. --ca ${SITE_CA}.` });
  }
  const registries = [...new Set([...(o.registries ?? (await bundleRegistries(o.bundleDir ?? '.'))), ...(o.extraRegistries ?? [])].map(normalizeRegistry))].sort().map(checkRegistryDir);
  const outDir = path.resolve(o.outDir);
  const certsDir = path.join(outDir, 'certs.d');
  const hostsFiles: string[] = [];
  for (const r of registries) {
    const file = path.join(certsDir, r, 'hosts.toml');
    await writeFileAtomic(file, renderHostsToml(r, mirrors, o.caFile));
    hostsFiles.push(file);
  }
  const configPath = o.configPath ?? certsDir;
  const text = renderConfigSnippets(configPath);
  const snippets = { v2: path.join(outDir, 'containerd-v2-registry.toml'), v3: path.join(outDir, 'containerd-v3-registry.toml') };
  await fs.mkdir(outDir, { recursive: true });
  await writeFileAtomic(snippets.v2, text.v2);
  await writeFileAtomic(snippets.v3, text.v3);
  return { registries, hostsFiles, snippets, configPath };
}
