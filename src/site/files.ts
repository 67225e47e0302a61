import { promises as fs } from 'node:fs';
import path from 'node:path';
import { CHECKSUMS_TXT, FILES, parseBinaryPath, VERSIONS_JSON } from '../bundle/format.js';
import { hashFile, sha256 } from '../util/digest.js';
import { clean, HttpError, notModified, realFileUnder, sendBody, sendFile, setCommon, type Ctx } from './respond.js';

/*
 * The binary repository under /files/: the bundle's files/ tree served as it is, its checksums
 * (relative to files/, so `sha256sum -c` works in a mirror), and a browsable page.
 */

// What the site service knows of the bundle's files/ layout comes from the format (bundle/format.ts).
const filesDirOf = (bundleDir: string) => path.join(bundleDir, FILES);
const checksumsFileOf = (bundleDir: string) => path.join(bundleDir, CHECKSUMS_TXT);
/** What a bundle path such as `files/kubeadm/v1.31.2/linux-amd64/kubeadm` is below files/, if it is there. */
const belowFiles = (bundlePath: string): string | undefined => (bundlePath.startsWith(FILES) ? bundlePath.slice(FILES.length) : undefined);

/** What `<name>/<version>/linux-<arch>/<file>` below files/ says of itself; other paths name only their top directory. */
export function describeFilesPath(segs: string[]): { name: string; version: string; arch: string } {
  const c = parseBinaryPath(`${FILES}${segs.join('/')}`);
  return c ? { name: c.name, version: c.version, arch: c.arch } : { name: segs.length > 1 ? segs[0]! : '', version: '', arch: '' };
}

const CHECKSUM_LINE = /^([a-f0-9]{64}) [ *](.+)$/;
const sortStrings = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

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

interface FileEntry {
  rel: string;
  size: number;
  sha256: string;
  name: string;
  version: string;
  arch: string;
}

export class FileRepo {
  private rootReal: string | undefined;
  private hashes = new Map<string, string>();

  private constructor(
    readonly root: string,
    private readonly checksumsFile: string,
  ) {}

  static forBundle(bundleDir: string): FileRepo {
    return new FileRepo(filesDirOf(bundleDir), checksumsFileOf(bundleDir));
  }

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
    // Beside the real files/: a bundle's view in the site store links files/ to the store's
    // union, whose checksums.txt lists every bundle's files.
    const root = await this.realRoot();
    try {
      text = await fs.readFile(root ? path.join(path.dirname(root), path.basename(this.checksumsFile)) : this.checksumsFile, 'utf8');
    } catch {
      /* a bundle without checksums.txt serves an empty list */
    }
    const out: string[] = [];
    for (const line of text.split('\n')) {
      const m = CHECKSUM_LINE.exec(line);
      if (!m) continue;
      const rel = belowFiles(m[2]!);
      if (rel !== undefined && checkRelPath(rel)) out.push(`${m[1]}  ${rel}`);
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
        out.push({ rel: relPath, size: st.size, sha256: hex, ...describeFilesPath(r) });
      }
    };
    await walk(root, []);
    return out;
  }

  /** Answers a path under /files/. */
  async serve(c: Ctx, p: string): Promise<void> {
    const notFound = () => new HttpError(404, 'NAME_UNKNOWN', 'no such file', { path: clean(p, 300) });
    if (p === '/files') {
      setCommon(c);
      c.res.writeHead(301, { Location: '/files/', 'Content-Length': 0 });
      c.res.end();
      return;
    }
    if (p === '/files/' || p === '/files/index.html') {
      c.route = 'files_index';
      sendBody(c, 200, renderFilesPage(await this.list()), { 'Content-Type': 'text/html; charset=utf-8', 'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'" });
      return;
    }
    if (p === '/files/checksums.txt') {
      const text = await this.checksums();
      const etag = `"${sha256(text)}"`;
      if (notModified(c, etag)) return;
      sendBody(c, 200, text, { 'Content-Type': 'text/plain; charset=utf-8', ETag: etag });
      return;
    }
    const rel = p.slice('/files/'.length);
    if (!checkRelPath(rel)) throw new HttpError(400, 'NAME_INVALID', 'invalid file path', { path: clean(p, 300) });
    const real = await this.locate(rel);
    if (!real) throw notFound();
    const st = await fs.stat(real);
    const type = rel.endsWith('.json') ? 'application/json' : rel.endsWith('.txt') ? 'text/plain; charset=utf-8' : 'application/octet-stream';
    await sendFile(c, real, { 'Content-Type': type }, `W/"${st.size}-${Math.floor(st.mtimeMs)}"`, notFound);
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
<p><a href="/${VERSIONS_JSON}">${path.basename(VERSIONS_JSON)}</a> · <a href="/files/checksums.txt">checksums.txt</a> (<code>sha256sum -c checksums.txt</code>)</p>
<table>
<thead><tr><th>path</th><th>name</th><th>version</th><th>arch</th><th>bytes</th><th>sha256</th></tr></thead>
<tbody>
${rows}
</tbody></table>
</body></html>
`;
}
