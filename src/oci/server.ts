import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import net from 'node:net';
import path from 'node:path';
import { pipeline } from 'node:stream';
import { Codes, FerryError, StoreError, UsageError } from '../errors.js';
import { hashFile, sha256 } from '../util/digest.js';
import { REF_NAME, Layout } from './layout.js';
import { isIndexType, isManifestType, MediaType, type Descriptor } from './media.js';
import { DOCKER_HUB, parseReference } from './reference.js';

/*
 * The site service: the OCI distribution pull API served straight from an unpacked bundle's
 * images/ layout, plus the binary repository under /files/. Read-only by design: new content
 * arrives as a newer signed bundle.
 */

export interface ServeLimits {
  /** Largest request line plus headers, in bytes (node's maxHeaderSize). */
  maxHeaderSize?: number;
  /** A client must finish sending its headers within this time. */
  headersTimeoutMs?: number;
  /** A client must finish sending its whole request within this time. */
  requestTimeoutMs?: number;
  /** A connection with no traffic either way is closed after this time. */
  idleTimeoutMs?: number;
  keepAliveTimeoutMs?: number;
  /** How long close() lets in-flight requests run before cutting them. */
  shutdownTimeoutMs?: number;
}

export interface ServeOptions {
  bundleDir: string;
  /** host:port, [v6]:port or :port; port 0 picks a free one. */
  listen: string;
  tls?: { cert: string; key: string };
  log?: (line: string) => void;
  limits?: ServeLimits;
}

export interface SiteServer {
  url: string;
  address: { host: string; port: number };
  /** Prometheus text exposition of the counters /metrics serves. */
  metrics(): string;
  /** Stops accepting, lets in-flight requests finish, and cuts them after the shutdown timeout. */
  close(timeoutMs?: number): Promise<void>;
}

const DEFAULT_LIMITS: Required<ServeLimits> = {
  maxHeaderSize: 16 * 1024,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  idleTimeoutMs: 120_000,
  keepAliveTimeoutMs: 5_000,
  shutdownTimeoutMs: 10_000,
};

// ---------------------------------------------------------------------------------------------
// Grammar checks (exported for unit tests)

const NAME_COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
const CHECKSUM_LINE = /^([a-f0-9]{64}) [ *](.+)$/;

/** The distribution spec's repository name grammar, at most 255 characters. */
export function isValidRepoName(name: string): boolean {
  return name.length > 0 && name.length <= 255 && name.split('/').every((c) => NAME_COMPONENT.test(c));
}
export const isValidTag = (t: string): boolean => TAG.test(t);
export const isValidDigest = (d: string): boolean => DIGEST.test(d);

export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(listen.trim());
  const port = m ? Number(m[3]) : NaN;
  const host = m ? (m[1] ?? (m[2] || '0.0.0.0')) : '';
  if (!m || port > 65535 || (m[1] !== undefined && net.isIPv6(host) === false)) {
    throw new UsageError(Codes.serveListen, `cannot listen on "${listen}": expected HOST:PORT`, {
      hint: 'Write --listen 0.0.0.0:5443, 10.0.0.5:5443, [::]:5443 or :5443 (port 0 picks a free port).',
    });
  }
  return { host, port };
}

export type RangeResult = { kind: 'full' } | { kind: 'partial'; start: number; end: number } | { kind: 'unsatisfiable' };

/**
 * One `bytes=` range is honoured. Other units and multi-range requests are ignored (RFC 9110 lets a
 * server do so, and it spares us multipart bodies and their amplification). A single byte range
 * that is malformed or lies outside the content is refused with 416.
 */
export function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return { kind: 'full' };
  const m = /^\s*bytes\s*=\s*(.*)$/i.exec(header);
  if (!m) return { kind: 'full' };
  const spec = m[1]!.trim();
  if (spec.includes(',')) return { kind: 'full' };
  const r = /^(\d*)-(\d*)$/.exec(spec);
  if (!r || (r[1] === '' && r[2] === '')) return { kind: 'unsatisfiable' };
  // Numbers are compared as exact integers: a 30-digit position is just "past the end".
  const num = (s: string) => (s.length > 15 ? Number.MAX_SAFE_INTEGER : Number(s));
  if (r[1] === '') {
    const n = num(r[2]!);
    if (n === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'partial', start: Math.max(0, size - n), end: size - 1 };
  }
  const start = num(r[1]!);
  const last = r[2] === '' ? undefined : num(r[2]!);
  if (start >= size || (last !== undefined && last < start)) return { kind: 'unsatisfiable' };
  return { kind: 'partial', start, end: last === undefined ? size - 1 : Math.min(last, size - 1) };
}

/**
 * Checks a percent-decoded path below a served root before it touches the filesystem: no NUL, no
 * backslash, not absolute, no empty, `.` or `..` segment. Returns the segments.
 */
export function checkRelPath(rel: string): string[] | undefined {
  if (!rel || rel.includes('\0') || rel.includes('\\') || rel.startsWith('/')) return undefined;
  const segs = rel.split('/');
  if (segs.some((s) => s === '' || s === '.' || s === '..')) return undefined;
  return segs;
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
}

const MAX_MANIFEST = 4 << 20;
const MAX_GRAPH_NODES = 100_000;
const FRESHNESS_MS = 1000;

const normRegistry = (r: string) => (r === 'index.docker.io' || r === 'registry-1.docker.io' ? DOCKER_HUB : r);
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
      const registry = normRegistry(ref.registry);
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
    for (const [p, byReg] of this.repos) if (ns === undefined || byReg.has(normRegistry(ns))) out.push(p);
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
    const reg = ns === undefined ? undefined : normRegistry(ns);
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
    const queue: Descriptor[] = [...repo.roots];
    while (queue.length) {
      const d = queue.shift()!;
      if (manifests.has(d.digest) || !isValidDigest(d.digest)) continue;
      if (manifests.size >= MAX_GRAPH_NODES) break;
      // A platform-filtered image keeps its upstream index but not every child: skip what is absent.
      if (!(await this.layout.hasBlob(d.digest))) continue;
      let doc: { mediaType?: string; manifests?: Descriptor[]; config?: Descriptor; layers?: Descriptor[] };
      try {
        doc = JSON.parse((await this.layout.readBlob(d.digest, MAX_MANIFEST)).toString('utf8')) as typeof doc;
      } catch (e) {
        this.log(`${repo.registry}/${repo.path}: cannot read manifest ${d.digest}: ${(e as Error).message}`);
        continue;
      }
      if (typeof doc !== 'object' || doc === null) continue;
      manifests.set(d.digest, manifestType(d.mediaType, doc));
      if (Array.isArray(doc.manifests)) for (const c of doc.manifests) if (c && typeof c.digest === 'string') queue.push(c);
      for (const b of [doc.config, ...(Array.isArray(doc.layers) ? doc.layers : [])]) {
        if (b && typeof b.digest === 'string' && isValidDigest(b.digest)) blobs.add(b.digest);
      }
    }
    return { manifests, blobs };
  }
}

/** The type a manifest is served with: what its parent says, else what it says, else its shape. */
function manifestType(fromDescriptor: string | undefined, doc: { mediaType?: string; manifests?: unknown }): string {
  if (isIndexType(fromDescriptor) || isManifestType(fromDescriptor)) return fromDescriptor!;
  if (typeof doc.mediaType === 'string' && doc.mediaType) return doc.mediaType;
  return Array.isArray(doc.manifests) ? MediaType.ociIndex : MediaType.ociManifest;
}

// ---------------------------------------------------------------------------------------------
// Metrics

type Route = 'base' | 'manifest' | 'blob' | 'tags' | 'catalog' | 'files' | 'files_index' | 'healthz' | 'metrics' | 'other';
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

class Metrics {
  readonly requests = new Map<string, number>();
  readonly bytes = new Map<string, number>();
  readonly clientErrors = new Map<string, number>();
  inFlight = 0;

  count(route: Route, method: string, status: number, bytes: number): void {
    const m = METHODS.has(method) ? method : 'other';
    const k = `route="${route}",method="${m}",status="${status}"`;
    this.requests.set(k, (this.requests.get(k) ?? 0) + 1);
    this.bytes.set(route, (this.bytes.get(route) ?? 0) + bytes);
  }

  clientError(reason: string): void {
    this.clientErrors.set(reason, (this.clientErrors.get(reason) ?? 0) + 1);
  }

  render(): string {
    const lines = [
      '# HELP ferry_serve_requests_total HTTP requests answered, by route, method and status.',
      '# TYPE ferry_serve_requests_total counter',
      ...[...this.requests].sort().map(([k, v]) => `ferry_serve_requests_total{${k}} ${v}`),
      '# HELP ferry_serve_sent_bytes_total Response body bytes sent, by route.',
      '# TYPE ferry_serve_sent_bytes_total counter',
      ...[...this.bytes].sort().map(([k, v]) => `ferry_serve_sent_bytes_total{route="${k}"} ${v}`),
      '# HELP ferry_serve_requests_in_flight Requests being answered now.',
      '# TYPE ferry_serve_requests_in_flight gauge',
      `ferry_serve_requests_in_flight ${this.inFlight}`,
      '# HELP ferry_serve_client_errors_total Connections refused for malformed requests, oversized headers or timeouts.',
      '# TYPE ferry_serve_client_errors_total counter',
      ...[...this.clientErrors].sort().map(([k, v]) => `ferry_serve_client_errors_total{reason="${k}"} ${v}`),
    ];
    return `${lines.join('\n')}\n`;
  }
}

// ---------------------------------------------------------------------------------------------
// The binary repository under /files/

interface FileEntry {
  rel: string;
  size: number;
  sha256: string;
  name: string;
  version: string;
  arch: string;
}

class FileRepo {
  private rootReal: string | undefined;
  private hashes = new Map<string, string>();

  constructor(
    readonly root: string,
    private readonly checksumsFile: string,
  ) {}

  private async realRoot(): Promise<string | undefined> {
    if (this.rootReal) return this.rootReal;
    try {
      this.rootReal = await fs.realpath(this.root);
    } catch {
      return undefined;
    }
    return this.rootReal;
  }

  /** The real path of a regular file under files/, or undefined: symlinks may not lead outside. */
  async locate(rel: string): Promise<string | undefined> {
    const segs = checkRelPath(rel);
    const root = await this.realRoot();
    if (!segs || !root) return undefined;
    return realFileUnder(root, path.join(root, ...segs));
  }

  /** The bundle's checksums.txt lines for files/, relative to files/ so `sha256sum -c` works in a mirror. */
  async checksums(): Promise<string> {
    let text = '';
    try {
      text = await fs.readFile(this.checksumsFile, 'utf8');
    } catch {
      /* a bundle without checksums.txt serves an empty list */
    }
    const out: string[] = [];
    for (const line of text.split('\n')) {
      const m = CHECKSUM_LINE.exec(line);
      if (m && m[2]!.startsWith('files/') && checkRelPath(m[2]!.slice(6))) out.push(`${m[1]}  ${m[2]!.slice(6)}`);
    }
    return out.length ? `${out.join('\n')}\n` : '';
  }

  async list(): Promise<FileEntry[]> {
    const root = await this.realRoot();
    if (!root) return [];
    const known = new Map<string, string>();
    for (const line of (await this.checksums()).split('\n')) {
      const m = CHECKSUM_LINE.exec(line);
      if (m) known.set(m[2]!, m[1]!);
    }
    const out: FileEntry[] = [];
    const walk = async (dir: string, rel: string[]): Promise<void> => {
      let entries;
      try {
        entries = await fs.readdir(dir, { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries.sort((a, b) => sortStrings(a.name, b.name))) {
        const full = path.join(dir, e.name);
        const r = [...rel, e.name];
        if (e.isDirectory()) {
          if (r.length < 16) await walk(full, r);
          continue;
        }
        const real = await realFileUnder(root, full);
        if (!real) continue;
        const st = await fs.stat(real);
        const relPath = r.join('/');
        let hex = known.get(relPath);
        if (!hex) {
          // Not in checksums.txt: hash once and keep it while the file is unchanged.
          const key = `${relPath}\0${st.size}\0${st.mtimeMs}`;
          hex = this.hashes.get(key);
          if (!hex) {
            hex = (await hashFile(real)).digest.slice('sha256:'.length);
            this.hashes.set(key, hex);
          }
        }
        const platform = r.length === 4 && r[2]!.startsWith('linux-');
        out.push({ rel: relPath, size: st.size, sha256: hex, name: platform ? r[0]! : r.length > 1 ? r[0]! : '', version: platform ? r[1]! : '', arch: platform ? r[2]!.slice(6) : '' });
      }
    };
    await walk(root, []);
    return out;
  }
}

async function realFileUnder(rootReal: string, candidate: string): Promise<string | undefined> {
  try {
    const real = await fs.realpath(candidate);
    if (real !== rootReal && !real.startsWith(rootReal + path.sep)) return undefined;
    return (await fs.stat(real)).isFile() ? real : undefined;
  } catch {
    return undefined;
  }
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const hrefFor = (rel: string) => `/files/${rel.split('/').map(encodeURIComponent).join('/')}`;

function renderFilesPage(files: FileEntry[]): string {
  const rows = files
    .map(
      (f) =>
        `<tr><td><a href="${escapeHtml(hrefFor(f.rel))}">${escapeHtml(f.rel)}</a></td><td>${escapeHtml(f.name)}</td><td>${escapeHtml(f.version)}</td><td>${escapeHtml(f.arch)}</td><td class="n">${f.size}</td><td><code>${escapeHtml(f.sha256)}</code></td></tr>`,
    )
    .join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ferry files</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}td.n{text-align:right}code{font-size:.85em}</style>
</head><body>
<h1>ferry files</h1>
<p><a href="/files/versions.json">versions.json</a> · <a href="/files/checksums.txt">checksums.txt</a> (<code>sha256sum -c checksums.txt</code>)</p>
<table>
<thead><tr><th>path</th><th>name</th><th>version</th><th>arch</th><th>bytes</th><th>sha256</th></tr></thead>
<tbody>
${rows}
</tbody></table>
</body></html>
`;
}

// ---------------------------------------------------------------------------------------------
// HTTP

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly detail?: unknown,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const API_HEADER = { 'Docker-Distribution-API-Version': 'registry/2.0' };
const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** Log-safe: no control characters, bounded length. */
const clean = (s: string, max = 512) => {
  const t = s.replace(/[\x00-\x1f\x7f"\\]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return t.length > max ? `${t.slice(0, max)}…` : t;
};

interface Ctx {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  route: Route;
  sent: number;
  head: boolean;
}

export async function startServer(opts: ServeOptions): Promise<SiteServer> {
  const limits = { ...DEFAULT_LIMITS, ...(opts.limits ?? {}) };
  limits.requestTimeoutMs = Math.max(limits.requestTimeoutMs, limits.headersTimeoutMs);
  const log = opts.log ?? (() => {});
  const bundleDir = path.resolve(opts.bundleDir);
  const imagesDir = path.join(bundleDir, 'images');
  const { host, port } = parseListen(opts.listen);

  let imagesReal: string;
  try {
    imagesReal = await fs.realpath(imagesDir);
    await fs.access(path.join(imagesReal, 'index.json'));
  } catch (e) {
    throw new StoreError(Codes.serveBundle, `${bundleDir} is not an unpacked bundle: ${imagesDir}/index.json is missing`, {
      hint: 'Point --bundle at the directory `ferry bundle verify` unpacked (it holds images/, files/ and checksums.txt).',
      cause: e,
    });
  }
  const layout = new Layout(imagesReal);
  const images = new BundleImages(layout, log);
  await images.fresh();
  const files = new FileRepo(path.join(bundleDir, 'files'), path.join(bundleDir, 'checksums.txt'));
  const metrics = new Metrics();
  let closing = false;

  let tlsOpts: { cert: Buffer; key: Buffer } | undefined;
  if (opts.tls) {
    try {
      tlsOpts = { cert: await fs.readFile(opts.tls.cert), key: await fs.readFile(opts.tls.key) };
    } catch (e) {
      throw new UsageError(Codes.pkiInvalid, `cannot read the TLS certificate or key: ${(e as Error).message}`, {
        hint: 'Check --tls-cert and --tls-key; `ferry pki init` writes registry.crt and registry.key.',
        cause: e,
      });
    }
  }

  // ---- responses

  const setCommon = (c: Ctx) => {
    c.res.setHeader('X-Content-Type-Options', 'nosniff');
    if (closing) c.res.setHeader('Connection', 'close');
  };

  const sendBody = (c: Ctx, status: number, body: Buffer | string, headers: Record<string, string | number>) => {
    const buf = typeof body === 'string' ? Buffer.from(body) : body;
    setCommon(c);
    c.res.writeHead(status, { 'Content-Length': buf.length, ...headers });
    if (c.head) c.res.end();
    else {
      c.sent += buf.length;
      c.res.end(buf);
    }
  };

  const sendError = (c: Ctx, err: HttpError) => {
    const body = JSON.stringify({ errors: [{ code: err.code, message: err.message, ...(err.detail !== undefined ? { detail: err.detail } : {}) }] });
    const api = c.route === 'files' || c.route === 'files_index' ? {} : API_HEADER;
    sendBody(c, err.status, body, { 'Content-Type': 'application/json', ...api, ...err.headers });
  };

  const notModified = (c: Ctx, etag: string): boolean => {
    const inm = c.req.headers['if-none-match'];
    if (!inm || !inm.split(',').some((t) => t.trim() === etag || t.trim() === '*')) return false;
    setCommon(c);
    c.res.writeHead(304, { ETag: etag });
    c.res.end();
    return true;
  };

  /** Streams a file (or a range of it) from an open handle; never holds it in memory. */
  const sendFile = async (c: Ctx, file: string, headers: Record<string, string>, etag: string, onMissing: () => HttpError) => {
    let fh: FileHandle;
    try {
      fh = await fs.open(file, 'r');
    } catch {
      throw onMissing();
    }
    let handedOff = false;
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw onMissing();
      if (notModified(c, etag)) return;
      const range = parseRange(c.req.headers.range, st.size);
      if (range.kind === 'unsatisfiable') {
        throw new HttpError(416, 'RANGE_INVALID', 'the requested range cannot be satisfied', { size: st.size, range: clean(c.req.headers.range ?? '', 100) }, { 'Content-Range': `bytes */${st.size}` });
      }
      const start = range.kind === 'partial' ? range.start : 0;
      const end = range.kind === 'partial' ? range.end : st.size - 1;
      const len = st.size === 0 ? 0 : end - start + 1;
      setCommon(c);
      c.res.writeHead(range.kind === 'partial' ? 206 : 200, {
        ...headers,
        ETag: etag,
        'Accept-Ranges': 'bytes',
        'Content-Length': len,
        ...(range.kind === 'partial' ? { 'Content-Range': `bytes ${start}-${end}/${st.size}` } : {}),
      });
      if (c.head || len === 0) {
        c.res.end();
        return;
      }
      const stream = fh.createReadStream({ start, end, highWaterMark: 256 << 10, autoClose: true });
      handedOff = true;
      stream.on('data', (chunk: string | Buffer) => {
        c.sent += chunk.length;
      });
      await new Promise<void>((resolve) => {
        // A client that goes away mid-transfer is normal: pipeline destroys the file stream.
        pipeline(stream, c.res, () => resolve());
      });
    } finally {
      if (!handedOff) await fh.close().catch(() => {});
    }
  };

  // ---- /v2/

  const reposFor = (name: string, ns: string | undefined): Repo[] => {
    if (!isValidRepoName(name)) throw new HttpError(400, 'NAME_INVALID', 'invalid repository name', { name: clean(name, 300) });
    const repos = images.resolve(name, ns);
    if (!repos.length) throw new HttpError(404, 'NAME_UNKNOWN', 'repository name not known to registry', { name, ...(ns !== undefined ? { ns: clean(ns, 300) } : {}) });
    return repos;
  };

  /** The first repository whose images reach `digest` as a manifest (or, with `asBlob`, as any blob). */
  const holder = async (repos: Repo[], digest: string, asBlob: boolean): Promise<RepoGraph | undefined> => {
    for (const r of repos) {
      const g = await images.graph(r);
      if (g.manifests.has(digest) || (asBlob && g.blobs.has(digest))) return g;
    }
    return undefined;
  };

  const manifest = async (c: Ctx, name: string, reference: string, ns: string | undefined) => {
    const repos = reposFor(name, ns);
    let digest: string;
    let type: string | undefined;
    // An algorithm prefix (`sha256:`, `md5:`) makes a digest; anything else is judged as a tag.
    if (/^[a-z0-9]+(?:[+._-][a-z0-9]+)*:/.test(reference)) {
      if (!isValidDigest(reference)) throw new HttpError(400, 'DIGEST_INVALID', 'provided digest did not match uploaded content', { digest: clean(reference, 200) });
      digest = reference;
      type = (await holder(repos, digest, false))?.manifests.get(digest);
    } else {
      if (!isValidTag(reference)) throw new HttpError(400, 'TAG_INVALID', 'manifest tag did not match URI', { tag: clean(reference, 200) });
      const repo = repos.find((r) => r.tags.has(reference));
      if (!repo) throw new HttpError(404, 'MANIFEST_UNKNOWN', 'manifest unknown', { name, tag: reference });
      digest = repo.tags.get(reference)!.digest;
      type = (await images.graph(repo)).manifests.get(digest);
    }
    if (!type) throw new HttpError(404, 'MANIFEST_UNKNOWN', 'manifest unknown', { name, reference });
    let body: Buffer;
    try {
      body = await layout.readBlob(digest, MAX_MANIFEST);
    } catch {
      throw new HttpError(404, 'MANIFEST_UNKNOWN', 'manifest unknown', { name, digest });
    }
    const etag = `"${digest}"`;
    if (notModified(c, etag)) return;
    sendBody(c, 200, body, { ...API_HEADER, 'Content-Type': type, 'Docker-Content-Digest': digest, ETag: etag });
  };

  const blob = async (c: Ctx, name: string, digest: string, ns: string | undefined) => {
    const repos = reposFor(name, ns);
    if (!isValidDigest(digest)) throw new HttpError(400, 'DIGEST_INVALID', 'provided digest did not match uploaded content', { digest: clean(digest, 200) });
    const unknown = () => new HttpError(404, 'BLOB_UNKNOWN', 'blob unknown to registry', { name, digest });
    if (!(await holder(repos, digest, true))) throw unknown();
    // The digest is checked, so the path is inside blobs/; the realpath check stops symlinks out.
    const real = await realFileUnder(imagesReal, layout.blobPath(digest));
    if (!real) throw unknown();
    await sendFile(c, real, { ...API_HEADER, 'Content-Type': 'application/octet-stream', 'Docker-Content-Digest': digest }, `"${digest}"`, unknown);
  };

  const pageParams = (q: URLSearchParams): { n: number | undefined; last: string | undefined } => {
    const nRaw = q.get('n');
    let n: number | undefined;
    if (nRaw !== null && nRaw !== '') {
      if (!/^\d{1,9}$/.test(nRaw)) throw new HttpError(400, 'PAGINATION_NUMBER_INVALID', 'invalid number of results requested', { n: clean(nRaw, 50) });
      n = Math.min(Number(nRaw), 10_000);
    }
    return { n, last: q.get('last') ?? undefined };
  };

  const linkNext = (base: string, q: URLSearchParams, n: number, last: string) => {
    const next = new URLSearchParams();
    const ns = q.get('ns');
    if (ns !== null) next.set('ns', ns);
    next.set('n', String(n));
    next.set('last', last);
    return `<${base}?${next.toString()}>; rel="next"`;
  };

  const v2 = async (c: Ctx, p: string, q: URLSearchParams) => {
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
      const { page, more } = paginate(images.catalog(ns), n, last);
      const headers: Record<string, string> = { ...API_HEADER, 'Content-Type': 'application/json' };
      if (more && n !== undefined && page.length) headers.Link = linkNext('/v2/_catalog', q, n, page[page.length - 1]!);
      sendBody(c, 200, JSON.stringify({ repositories: page }), headers);
      return;
    }
    let m = /^\/v2\/(.+)\/tags\/list$/.exec(p);
    if (m) {
      c.route = 'tags';
      const name = m[1]!;
      const tags = new Set(reposFor(name, ns).flatMap((r) => [...r.tags.keys()]));
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
    m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(p);
    if (m) {
      c.route = m[2] === 'manifests' ? 'manifest' : 'blob';
      if (m[2] === 'manifests') await manifest(c, m[1]!, m[3]!, ns);
      else await blob(c, m[1]!, m[3]!, ns);
      return;
    }
    throw new HttpError(404, 'NAME_UNKNOWN', 'no such endpoint', { path: clean(p, 300) });
  };

  // ---- /files/

  const filesRoute = async (c: Ctx, p: string) => {
    const notFound = () => new HttpError(404, 'NOT_FOUND', 'no such file', { path: clean(p, 300) });
    if (p === '/files') {
      setCommon(c);
      c.res.writeHead(301, { Location: '/files/', 'Content-Length': 0 });
      c.res.end();
      return;
    }
    if (p === '/files/' || p === '/files/index.html') {
      c.route = 'files_index';
      sendBody(c, 200, renderFilesPage(await files.list()), { 'Content-Type': 'text/html; charset=utf-8', 'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'" });
      return;
    }
    if (p === '/files/checksums.txt') {
      const text = await files.checksums();
      const etag = `"${sha256(text)}"`;
      if (notModified(c, etag)) return;
      sendBody(c, 200, text, { 'Content-Type': 'text/plain; charset=utf-8', ETag: etag });
      return;
    }
    const rel = p.slice('/files/'.length);
    if (!checkRelPath(rel)) throw new HttpError(400, 'PATH_INVALID', 'invalid file path', { path: clean(p, 300) });
    const real = await files.locate(rel);
    if (!real) throw notFound();
    const st = await fs.stat(real);
    const type = rel.endsWith('.json') ? 'application/json' : rel.endsWith('.txt') ? 'text/plain; charset=utf-8' : 'application/octet-stream';
    await sendFile(c, real, { 'Content-Type': type }, `W/"${st.size}-${Math.floor(st.mtimeMs)}"`, notFound);
  };

  // ---- dispatch

  const handle = async (c: Ctx) => {
    const raw = c.req.url ?? '';
    // Only origin-form targets: absolute-form would let a client name another host.
    if (!raw.startsWith('/')) throw new HttpError(400, 'PATH_INVALID', 'request target must be a path');
    const qi = raw.indexOf('?');
    const rawPath = qi >= 0 ? raw.slice(0, qi) : raw;
    const q = new URLSearchParams(qi >= 0 ? raw.slice(qi + 1) : '');
    let p: string;
    try {
      p = decodeURIComponent(rawPath);
    } catch {
      throw new HttpError(400, 'PATH_INVALID', 'malformed percent-encoding in the path');
    }
    if (p.includes('\0') || p.includes('\\')) throw new HttpError(400, 'PATH_INVALID', 'invalid characters in the path');
    const method = c.req.method ?? 'GET';
    const isV2 = p === '/v2' || p.startsWith('/v2/');
    const isFiles = p === '/files' || p.startsWith('/files/');
    if (isV2) c.route = 'base';
    else if (isFiles) c.route = 'files';
    if (method !== 'GET' && method !== 'HEAD') {
      c.res.setHeader('Connection', 'close');
      const why = WRITE_METHODS.has(method) ? 'this registry is read-only; new content arrives as a newer signed bundle' : 'only GET and HEAD are served';
      throw new HttpError(405, 'UNSUPPORTED', `${clean(method, 20)} is not supported: ${why}`, undefined, { Allow: 'GET, HEAD' });
    }
    if (isV2) return v2(c, p, q);
    if (isFiles) return filesRoute(c, p);
    if (p === '/healthz') {
      c.route = 'healthz';
      sendBody(c, 200, 'ok\n', { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store' });
      return;
    }
    if (p === '/metrics') {
      c.route = 'metrics';
      sendBody(c, 200, metrics.render(), { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8', 'Cache-Control': 'no-store' });
      return;
    }
    throw new HttpError(404, 'NOT_FOUND', 'not found');
  };

  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const started = process.hrtime.bigint();
    // Read the peer now: once the socket closes, remoteAddress is gone.
    const peer = req.socket.remoteAddress ?? '-';
    const c: Ctx = { req, res, route: 'other', sent: 0, head: req.method === 'HEAD' };
    metrics.inFlight++;
    res.once('close', () => {
      metrics.inFlight--;
      const status = res.statusCode;
      metrics.count(c.route, req.method ?? '', status, c.sent);
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      log(
        `${clean(peer, 64)} "${clean(req.method ?? '-', 20)} ${clean(req.url ?? '')} HTTP/${req.httpVersion}" ${status} ${c.sent} ${ms.toFixed(1)}ms${res.writableFinished ? '' : ' aborted'} "${clean(String(req.headers['user-agent'] ?? '-'), 200)}"`,
      );
    });
    req.on('error', () => {});
    res.on('error', () => {});
    (async () => {
      try {
        await images.fresh();
        await handle(c);
      } catch (e) {
        if (res.headersSent) {
          res.destroy();
          return;
        }
        if (e instanceof HttpError) sendError(c, e);
        else {
          log(`internal error on ${clean(req.url ?? '')}: ${clean((e as Error)?.message ?? String(e))}`);
          sendError(c, new HttpError(500, 'UNKNOWN', 'internal error'));
        }
      }
    })().catch(() => res.destroy());
  };

  const common = {
    maxHeaderSize: limits.maxHeaderSize,
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(limits.headersTimeoutMs / 4))),
  };
  let server: http.Server | https.Server;
  try {
    server = tlsOpts
      ? https.createServer(
          {
            ...common,
            ...tlsOpts,
            minVersion: 'TLSv1.2',
            handshakeTimeout: Math.min(10_000, limits.requestTimeoutMs),
            // AES-128-GCM first: as strong as any site needs and cheaper per byte than AES-256,
            // which matters because every blob byte is encrypted on one thread.
            ciphers: `TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:${tls.DEFAULT_CIPHERS}`,
            honorCipherOrder: true,
          },
          onRequest,
        )
      : http.createServer(common, onRequest);
  } catch (e) {
    throw new UsageError(Codes.pkiInvalid, `cannot use the TLS certificate and key: ${(e as Error).message}`, {
      hint: 'Give the PEM certificate and the key that belongs to it, e.g. registry.crt and registry.key from `ferry pki init`.',
      cause: e,
    });
  }
  server.headersTimeout = limits.headersTimeoutMs;
  server.requestTimeout = limits.requestTimeoutMs;
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  server.setTimeout(limits.idleTimeoutMs);

  server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
    const code = err.code ?? '';
    const reason = code === 'HPE_HEADER_OVERFLOW' ? 'header_overflow' : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'timeout' : code === 'ECONNRESET' ? 'reset' : 'malformed';
    metrics.clientError(reason);
    if (reason !== 'reset') log(`${clean(socket.remoteAddress ?? '-', 64)} refused: ${reason} (${clean(code || err.message, 80)})`);
    if (code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const status = reason === 'header_overflow' ? '431 Request Header Fields Too Large' : reason === 'timeout' ? '408 Request Timeout' : '400 Bad Request';
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  });
  server.on('tlsClientError', () => metrics.clientError('tls'));

  await new Promise<void>((resolve, reject) => {
    const onErr = (e: NodeJS.ErrnoException) => {
      reject(
        new FerryError(Codes.serveListen, `cannot listen on ${opts.listen}: ${e.message}`, {
          exit: e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL' ? 'usage' : 'io',
          hint:
            e.code === 'EADDRINUSE'
              ? 'Another process holds that port: stop it or pick another --listen port.'
              : e.code === 'EACCES'
                ? 'Ports below 1024 need CAP_NET_BIND_SERVICE; use a higher port or grant the capability.'
                : 'Check that the address belongs to this host.',
          cause: e,
        }),
      );
    };
    server.once('error', onErr);
    server.listen({ host, port }, () => {
      server.off('error', onErr);
      resolve();
    });
  });
  server.on('error', (e) => log(`server error: ${clean((e as Error).message)}`));

  const addr = server.address() as net.AddressInfo;
  const urlHost = addr.address === '0.0.0.0' ? '127.0.0.1' : addr.address === '::' ? '[::1]' : net.isIPv6(addr.address) ? `[${addr.address}]` : addr.address;
  let closed: Promise<void> | undefined;

  return {
    url: `${tlsOpts ? 'https' : 'http'}://${urlHost}:${addr.port}`,
    address: { host: addr.address, port: addr.port },
    metrics: () => metrics.render(),
    close(timeoutMs = limits.shutdownTimeoutMs) {
      closed ??= new Promise<void>((resolve) => {
        closing = true;
        let timer: NodeJS.Timeout | undefined;
        server.close(() => {
          if (timer) clearTimeout(timer);
          resolve();
        });
        server.closeIdleConnections();
        // Keep-alive connections become idle as their last response ends; close them as they do.
        const sweep = setInterval(() => server.closeIdleConnections(), 100);
        sweep.unref();
        server.once('close', () => clearInterval(sweep));
        timer = setTimeout(() => {
          log(`shutdown: cutting ${metrics.inFlight} request(s) still running after ${timeoutMs} ms`);
          server.closeAllConnections();
        }, timeoutMs);
        timer.unref();
      });
      return closed;
    },
  };
}
