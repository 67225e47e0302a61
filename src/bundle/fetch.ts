import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Codes, FerryError, IntegrityError, RegistryError, UsageError } from '../errors.js';
import { backoff, DEFAULT_RETRY, drain, getWithRetries, header, isTransient, readBody, type HttpResponse, type RetryPolicy } from '../util/http.js';
import { sha256Hex } from '../util/digest.js';
import { exists, ioError, tempPathFor, withDirLock, writeFileAtomic } from '../util/fsx.js';
import { SingleFlight } from '../util/limit.js';
import { silentReporter, type Reporter } from '../util/progress.js';

/** A source that is a local path or file:// URL, else undefined. */
export function localPath(src: string, baseDir = process.cwd()): string | undefined {
  if (src.startsWith('file://')) return fileURLToPath(src);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(src)) return undefined;
  return path.resolve(baseDir, src);
}

/** `--binary-mirror PREFIX=URL`: a download whose URL starts with PREFIX is fetched from URL + the rest. */
export interface BinaryMirror {
  prefix: string;
  url: string;
}

export function parseBinaryMirror(flag: string): BinaryMirror {
  const bad = (why: string): never => {
    throw new UsageError(Codes.usage, `--binary-mirror "${flag}" ${why}`, {
      hint: 'Write --binary-mirror PREFIX=URL with two http(s) URLs, e.g. --binary-mirror https://dl.k8s.io=https://artifactory.corp/dl.k8s.io.',
    });
  };
  // URLs may hold "=" in a query, but a PREFIX never needs one: split at the first.
  const i = flag.indexOf('=');
  if (i <= 0 || i === flag.length - 1) bad('is not PREFIX=URL');
  const [prefix, url] = [flag.slice(0, i), flag.slice(i + 1)];
  for (const [what, v] of [['PREFIX', prefix], ['URL', url]] as const) {
    let u: URL | undefined;
    try {
      u = new URL(v);
    } catch {
      /* reported below */
    }
    if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:') || !u.host) bad(`has ${what} "${v}", which is not an http:// or https:// URL`);
  }
  return { prefix, url };
}

/**
 * The URL to fetch for `url`: the longest mirrored PREFIX it starts with, replaced. A PREFIX matches
 * only up to a path boundary, so https://dl.k8s.io does not capture https://dl.k8s.io.evil.example.
 */
export function mirrorUrl(url: string, mirrors: readonly BinaryMirror[] = []): string {
  let best: BinaryMirror | undefined;
  for (const m of mirrors) {
    if (!url.startsWith(m.prefix)) continue;
    const next = url.charAt(m.prefix.length);
    if (!(m.prefix.endsWith('/') || next === '' || next === '/' || next === '?' || next === '#')) continue;
    if (!best || m.prefix.length > best.prefix.length) best = m;
  }
  if (!best) return url;
  const rest = url.slice(best.prefix.length);
  return best.url.endsWith('/') && rest.startsWith('/') ? best.url + rest.slice(1) : best.url + rest;
}

export interface FetchOptions {
  reporter?: Reporter;
  /** Download mirrors; every HTTP(S) fetch (and redirect) goes through mirrorUrl. */
  mirrors?: readonly BinaryMirror[];
  retries?: number;
  backoffMs?: number;
  ca?: string | Buffer;
  /** Relative paths resolve against this (the spec's directory). */
  baseDir?: string;
  /** `--offline`: nothing is fetched; what the cache lacks is an error. */
  offline?: boolean;
}

export function offlineError(what: string): UsageError {
  return new UsageError(Codes.offlineNotCached, `--offline: the cache has no ${what}`, {
    hint: 'Run one build with access to the sources (directly or through --binary-mirror / --registry-mirror) on this cache first, or drop --offline.',
  });
}

/** Opens an HTTP(S) GET, following redirects (each through the mirrors); retries transient faults. */
async function open(upstream: URL, headers: Record<string, string>, o: FetchOptions): Promise<HttpResponse> {
  if (o.offline) throw offlineError(`copy of ${upstream.href}`);
  const via = (u: URL) => new URL(mirrorUrl(u.href, o.mirrors));
  try {
    return await getWithRetries(upstream, { headers: { 'user-agent': 'ferry/0.1', ...headers }, ca: o.ca, timeoutMs: 60_000, redirects: 10, via, retry: policyOf(o) });
  } catch (lastErr) {
    const url = via(upstream);
    const from = url.href === upstream.href ? '' : ` from the mirror ${url.href}`;
    throw new RegistryError(Codes.downloadFailed, `cannot download ${upstream.href}${from}: ${(lastErr as Error)?.message ?? lastErr}`, {
      hint: from
        ? 'Check that the mirror is reachable and holds this path (--binary-mirror PREFIX=URL). Finished downloads are kept.'
        : 'Check that the URL is reachable from here (proxy, firewall), or fetch through a mirror (--binary-mirror PREFIX=URL) or a local file. Finished downloads are kept.',
      cause: lastErr,
    });
  }
}

const policyOf = (o: FetchOptions): RetryPolicy => ({ ...DEFAULT_RETRY, retries: o.retries ?? DEFAULT_RETRY.retries, backoffMs: o.backoffMs ?? DEFAULT_RETRY.backoffMs });

function notOk(src: string, status: number, o: FetchOptions): RegistryError {
  const m = mirrorUrl(src, o.mirrors);
  return new RegistryError(Codes.downloadFailed, `cannot download ${src}${m === src ? '' : ` from the mirror ${m}`}: the server answered ${status}`, {
    status,
    hint: m === src ? 'Check the URL and the version in the spec.' : 'Check the URL and the version in the spec, and that the mirror holds the same path as upstream.',
  });
}

/** Plain http:// is allowed for downloads because every one is checked against a sha256. */
function checkScheme(u: URL): void {
  if (u.protocol !== 'https:' && u.protocol !== 'http:') {
    throw new UsageError(Codes.sourceRead, `unsupported URL scheme in ${u.href}`, { hint: 'Use https://, http://, file:// or a plain path.' });
  }
}

/** Reads a small text document (a checksum file, a Helm index) from a URL or path. */
export async function fetchText(src: string, o: FetchOptions = {}, max = 32 << 20): Promise<string> {
  const local = localPath(src, o.baseDir);
  if (local) {
    try {
      const st = await fs.stat(local);
      if (st.size > max) throw new Error(`larger than ${max} bytes`);
      return await fs.readFile(local, 'utf8');
    } catch (e) {
      throw new UsageError(Codes.sourceRead, `cannot read ${local}: ${(e as Error).message}`, { hint: 'Check the path in the spec.', cause: e });
    }
  }
  const u = new URL(src);
  checkScheme(u);
  const res = await open(u, {}, o);
  if (res.status !== 200) {
    await drain(res);
    throw notOk(src, res.status, o);
  }
  return (await readBody(res, max)).toString('utf8');
}

/**
 * A small document (a checksum file) from the file cache, or fetched and kept there once `use`
 * accepts it, so a rebuild with a warm cache fetches nothing. Keyed by the upstream URL: a
 * checksum document names a versioned release, and what it says is checked again by the download
 * it pins. Local paths are read every time.
 */
export async function fetchTextCached<T>(src: string, cacheDir: string, use: (text: string) => T, o: FetchOptions = {}, max = 32 << 20): Promise<T> {
  if (localPath(src, o.baseDir)) return use(await fetchText(src, o, max));
  const file = path.join(cacheDir, 'documents', sha256Hex(Buffer.from(src)));
  const kept = await fs.readFile(file, 'utf8').catch(() => undefined);
  if (kept !== undefined) return use(kept);
  const text = await fetchText(src, o, max);
  const v = use(text);
  await fs.mkdir(path.dirname(file), { recursive: true });
  await writeFileAtomic(file, text);
  return v;
}

/**
 * A resolution (a version range to one release: npm's Node 24.x, a Helm repository's chart, an OCI
 * chart's tag) kept in the file cache. Online it is made again, so a rebuild picks up a new release;
 * with `--offline`, or when the source cannot be reached at all, the last one made here is used, and
 * a warning says from when. An answer from the source (a 404, a bad index) is never papered over.
 */
export async function resolveCached<T>(what: string, key: string, cacheDir: string, o: FetchOptions, resolve: () => Promise<T>): Promise<T> {
  const file = path.join(cacheDir, 'resolved', `${sha256Hex(Buffer.from(key))}.json`);
  const kept = async (): Promise<{ at: string; value: T } | undefined> => {
    const j = await fs.readFile(file, 'utf8').then((t) => JSON.parse(t) as { key?: string; at: string; value: T }, () => undefined);
    return j?.key === key ? j : undefined;
  };
  if (o.offline) {
    const k = await kept();
    if (!k) throw offlineError(`${what} resolved yet`);
    o.reporter?.verbose(`--offline: ${what} as resolved on ${k.at}`);
    return k.value;
  }
  let value: T;
  try {
    value = await resolve();
  } catch (e) {
    const k = unreachable(e) ? await kept() : undefined;
    if (!k) throw e;
    o.reporter?.warn(`${(e as Error).message.split('\n')[0]}: using ${what} as resolved on ${k.at} (--offline skips the attempt)`);
    return k.value;
  }
  await fs.mkdir(path.dirname(file), { recursive: true });
  await writeFileAtomic(file, JSON.stringify({ key, at: new Date().toISOString(), value }));
  return value;
}

/** No answer from the source at all (refused, no route, DNS, timeout), as against an answer. */
function unreachable(e: unknown): boolean {
  if (!(e instanceof RegistryError)) return false;
  return (e.code === Codes.downloadFailed && e.status === undefined) || e.code === Codes.regUnreachable;
}

/**
 * Fetches `src` into a content-addressed file cache (`<dir>/sha256/<hex>`), checking it against
 * `sha256` while bytes stream. A cut download resumes from its partial file; a mismatch leaves
 * nothing behind and names the URL and both hashes.
 */
const inflight = new SingleFlight<{ path: string; size: number }>();

export async function fetchToCache(src: string, expected: string, cacheDir: string, o: FetchOptions = {}): Promise<{ path: string; size: number }> {
  // A file is renamed to its digest only once checked, so one there is done: no lock to take (a
  // warm build has hundreds of files). The build hashes it again as it writes it into a bundle.
  const m = /^(?:(sha256|sha512):)?([a-f0-9]+)$/.exec(expected);
  if (m) {
    const final = path.join(cacheDir, m[1] ?? 'sha256', m[2]!);
    const st = await fs.stat(final).catch(() => undefined);
    if (st?.isFile()) return { path: final, size: st.size };
  }
  // Two entries with the same content (one binary for two platforms) share one download; another
  // ferry process on the same cache waits on the lock.
  const key = `${cacheDir}|${expected}`;
  return inflight.run(key, () =>
    withDirLock(path.join(cacheDir, 'locks', `${expected.replace(':', '-')}.lock`), () => fetchToCacheOnce(src, expected, cacheDir, o), 10 * 60_000),
  );
}

async function fetchToCacheOnce(src: string, expected: string, cacheDir: string, o: FetchOptions): Promise<{ path: string; size: number }> {
  const [alg, want] = expected.includes(':') ? (expected.split(':') as ['sha256' | 'sha512', string]) : (['sha256', expected] as const);
  if ((alg !== 'sha256' && alg !== 'sha512') || !/^[a-f0-9]+$/.test(want)) throw new UsageError(Codes.checksumMissing, `"${expected}" is not a sha256 or sha512 digest`);
  const final = path.join(cacheDir, alg, want);
  try {
    const st = await fs.stat(final);
    return { path: final, size: st.size };
  } catch {
    /* not cached yet */
  }
  await fs.mkdir(path.dirname(final), { recursive: true });
  const partialDir = path.join(cacheDir, 'partial');
  await fs.mkdir(partialDir, { recursive: true });
  const partial = path.join(partialDir, `${alg}-${want}.partial`);
  const reporter = o.reporter ?? silentReporter;
  let hash = createHash(alg);
  let have = 0;
  // Re-hash what an earlier run left, then ask only for the rest.
  if (await exists(partial)) {
    for await (const c of createReadStream(partial)) {
      hash.update(c as Buffer);
      have += (c as Buffer).length;
    }
  }
  const local = localPath(src, o.baseDir);
  const fh = await fs.open(partial, 'a');
  try {
    if (local) {
      try {
        await fs.access(local);
      } catch (e) {
        throw new UsageError(Codes.sourceRead, `cannot read ${local}: ${(e as Error).message}`, { hint: 'Check the path in the spec; relative paths are read from the directory that holds bundle-spec/.', cause: e });
      }
      let i = 0;
      for await (const c of createReadStream(local, { start: have })) {
        hash.update(c as Buffer);
        await fh.write(c as Buffer);
        i += (c as Buffer).length;
      }
      have += i;
    } else {
      const u = new URL(src);
      checkScheme(u);
      let stalls = 0;
      for (;;) {
        const res = await open(u, have > 0 ? { range: `bytes=${have}-` } : {}, o);
        if (res.status === 416 && have > 0) {
          await drain(res);
          break; // we already have it all
        }
        if (res.status !== 200 && res.status !== 206) {
          await drain(res);
          throw notOk(src, res.status, o);
        }
        if (res.status === 200 && have > 0) {
          // No Range support: start over.
          await fh.truncate(0);
          hash = createHash(alg);
          have = 0;
        }
        const len = Number(header(res.headers, 'content-length'));
        if (Number.isFinite(len)) reporter.blobStart(len);
        const before = have;
        try {
          for await (const c of res.body) {
            hash.update(c as Buffer);
            await fh.write(c as Buffer);
            have += (c as Buffer).length;
            reporter.bytes((c as Buffer).length);
          }
          if (!res.body.complete) throw Object.assign(new Error('connection closed mid-download'), { code: 'ECONNRESET' });
          reporter.blobDone();
          break;
        } catch (e) {
          if (!isTransient(e)) throw e;
          stalls = have > before ? 0 : stalls + 1;
          if (stalls >= policyOf(o).retries) throw new RegistryError(Codes.downloadFailed, `download of ${src} keeps failing: ${(e as Error).message}`, { cause: e, hint: 'Re-run later; the partial download is kept and resumes.' });
          await backoff(policyOf(o), stalls);
        }
      }
    }
  } catch (e) {
    await fh.close();
    if (e instanceof FerryError) throw e;
    throw ioError(`cannot fetch ${src}`, e);
  }
  await fh.close();
  const actual = hash.digest('hex');
  if (actual !== want) {
    await fs.rm(partial, { force: true });
    throw new IntegrityError(Codes.checksumMismatch, `checksum mismatch for ${src}: expected ${alg} ${want}, got ${actual}`, {
      hint: 'The download is not what the checksum promises. Nothing was kept. Check the URL, the version and the pinned sha256 in the spec.',
      details: { url: src, expected: want, actual },
    });
  }
  const tmp = tempPathFor(final);
  await fs.rename(partial, tmp);
  await fs.rename(tmp, final);
  return { path: final, size: have };
}
