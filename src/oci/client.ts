import { Readable } from 'node:stream';
import { Codes, FerryError, IntegrityError, RegistryError, UsageError } from '../errors.js';
import { sha256 } from '../util/digest.js';
import { backoff, drain, header, httpSend, isRetryableStatus, isTlsToPlain, isTransient, readBody, type HttpResponse, type RetryPolicy } from '../util/http.js';
import { silentReporter, type Reporter } from '../util/progress.js';
import { authError, CredentialStore, RegistryAuth } from './auth.js';
import type { BlobWriter } from './layout.js';
import { MANIFEST_ACCEPT, MediaType, type Descriptor } from './media.js';
import { apiHost, isLoopbackHost } from './reference.js';

export interface Repo {
  registry: string;
  repository: string;
}

export interface ClientOptions {
  credentials?: CredentialStore;
  /** Hosts that may be reached over plain HTTP or unverified TLS (`--insecure-registry`). */
  insecure?: string[];
  /** `registry → URL`: where bytes for that registry come from; names stay upstream. */
  mirrors?: Record<string, string>;
  /** Extra CA certificates (PEM) to trust, for a site registry with a private CA. */
  ca?: string | Buffer;
  /** Attempts per request for transient failures (429, 5xx, cut connections). */
  retries?: number;
  /** First backoff delay; doubles each attempt, with jitter. */
  backoffMs?: number;
  maxBackoffMs?: number;
  reporter?: Reporter;
  /** Blobs up to this size go up in one PUT; larger ones in PATCH chunks. */
  monolithicMax?: number;
  chunkSize?: number;
  timeoutMs?: number;
  /** How long a request waits for the registry's first byte (its response headers); default 30 s. */
  firstByteMs?: number;
  /** After how long a request still unanswered is reported as a wait; default 5 s. */
  waitNoticeMs?: number;
  /** `--offline`: every request is refused, naming what the cache lacked. */
  offline?: boolean;
}

export interface FetchedManifest {
  bytes: Buffer;
  mediaType: string;
  digest: string;
}

interface Endpoint {
  origin: URL;
  /** Repository prefix from a mirror URL path (Harbor-style proxy projects). */
  prefix: string;
  /** The host whose credentials apply. */
  authHost: string;
  insecure: boolean;
  plainHttpAllowed: boolean;
}

interface RequestOptions {
  method: string;
  /** Path below /v2/ (already including the repository), or an absolute URL (upload locations). */
  path?: string;
  url?: URL;
  headers?: Record<string, string>;
  /** A factory, so a retried request can send its body again. */
  body?: () => Buffer | Readable;
  scope?: string;
  /** Statuses that the caller handles; anything else becomes an error. */
  ok: number[];
  what: string;
}

const USER_AGENT = 'ferry/0.1';
/** The distribution spec's limit for a manifest a registry must accept. */
const MAX_MANIFEST = 4 << 20;

/**
 * An OCI distribution client. It speaks both OCI and Docker v2 media types, authenticates with
 * bearer tokens (cached per scope) or basic auth, retries transient faults with backoff, resumes
 * cut blob downloads with Range, and never holds a blob in memory.
 */
export class RegistryClient {
  private readonly auth: RegistryAuth;
  private readonly insecure: Set<string>;
  private readonly mirrors: Map<string, URL>;
  private readonly retry: RetryPolicy;
  private readonly reporter: Reporter;
  private readonly monolithicMax: number;
  private readonly chunkSize: number;
  private readonly timeoutMs: number;
  private readonly firstByteMs: number;
  private readonly waitNoticeMs: number;
  private readonly ca: string | Buffer | undefined;
  private readonly schemes = new Map<string, 'https:' | 'http:'>();
  private readonly redirectsSaid = new Set<string>();
  private readonly offline: boolean;
  /** Hosts whose scheme one request is finding out, and when it knows. */
  private readonly probes = new Map<string, Promise<void>>();

  constructor(opts: ClientOptions = {}) {
    this.offline = opts.offline === true;
    this.insecure = new Set(opts.insecure ?? []);
    this.mirrors = new Map();
    for (const [reg, url] of Object.entries(opts.mirrors ?? {})) {
      let u: URL;
      try {
        u = new URL(url);
      } catch {
        throw new UsageError(Codes.usage, `--registry-mirror ${reg}=${url}: "${url}" is not a URL`, {
          hint: 'Write --registry-mirror docker.io=https://mirror.example.',
        });
      }
      if (u.protocol !== 'https:' && u.protocol !== 'http:') {
        throw new UsageError(Codes.usage, `--registry-mirror ${reg}=${url}: only http and https mirrors are supported`);
      }
      this.mirrors.set(reg, u);
    }
    this.retry = { retries: Math.max(1, opts.retries ?? 5), backoffMs: opts.backoffMs ?? 250, maxBackoffMs: opts.maxBackoffMs ?? 8000 };
    this.reporter = opts.reporter ?? silentReporter;
    this.monolithicMax = opts.monolithicMax ?? 32 << 20;
    this.chunkSize = opts.chunkSize ?? 16 << 20;
    this.timeoutMs = opts.timeoutMs ?? 60_000;
    this.firstByteMs = opts.firstByteMs ?? 30_000;
    this.waitNoticeMs = opts.waitNoticeMs ?? 5_000;
    this.ca = opts.ca;
    this.auth = new RegistryAuth(opts.credentials ?? new CredentialStore(), { retry: this.retry, ca: this.ca, timeoutMs: this.timeoutMs, userAgent: USER_AGENT, insecure: this.insecure, log: (m) => this.reporter.verbose(m) });
  }

  private endpoint(registry: string): Endpoint {
    const m = this.mirrors.get(registry);
    if (m) {
      const host = m.host;
      const insecure = this.insecure.has(host) || this.insecure.has(m.hostname);
      if (m.protocol === 'http:' && !insecure && !isLoopbackHost(host)) {
        throw new RegistryError(Codes.regInsecure, `mirror ${m.href} for ${registry} uses plain HTTP`, {
          hint: `Plain HTTP is allowed only on loopback. Use https, or pass --insecure-registry ${host} if you accept that risk.`,
        });
      }
      return {
        origin: new URL(m.origin),
        prefix: m.pathname.replace(/^\/+|\/+$/g, ''),
        authHost: host,
        insecure,
        plainHttpAllowed: m.protocol === 'http:',
      };
    }
    const host = apiHost(registry);
    const insecure = this.insecure.has(registry) || this.insecure.has(host);
    const scheme = this.schemes.get(host) ?? 'https:';
    return {
      origin: new URL(`${scheme}//${host}`),
      prefix: '',
      authHost: registry,
      insecure,
      plainHttpAllowed: insecure || isLoopbackHost(host),
    };
  }

  private repoPath(ep: Endpoint, repository: string): string {
    return ep.prefix ? `${ep.prefix}/${repository}` : repository;
  }

  private netError(ep: Endpoint, e: unknown): FerryError {
    if (e instanceof FerryError) return e;
    const code = (e as NodeJS.ErrnoException | undefined)?.code;
    return new RegistryError(Codes.regUnreachable, `cannot reach ${ep.origin.host}: ${(e as Error)?.message ?? String(e)}${code ? ` (${code})` : ''}`, {
      hint:
        code === 'ENOTFOUND' || code === 'EAI_AGAIN'
          ? `The name does not resolve. Check DNS, or use --registry-mirror ${ep.authHost}=URL to fetch from a reachable mirror.`
          : 'Check that the registry is up and reachable from here (proxy, firewall), then re-run; finished blobs are kept.',
      cause: e,
    });
  }

  /** Sends one request with auth, retries and the http fallback; returns a response whose status is in `ok`. */
  private async request(registry: string, o: RequestOptions): Promise<HttpResponse> {
    if (this.offline) {
      throw new UsageError(Codes.offlineNotCached, `--offline: the cache has no copy of ${registry}/${o.path ?? o.url?.pathname ?? ''}`, {
        hint: 'Run one build or pull with access to the registry (or a --registry-mirror) on this cache first, or drop --offline.',
      });
    }
    let authRetried = false;
    let lastErr: unknown;
    for (let attempt = 0; attempt < this.retry.retries; attempt++) {
      const ep = this.endpoint(registry);
      const url = o.url ?? new URL(`/v2/${o.path ?? ''}`, ep.origin);
      const headers: Record<string, string> = { 'user-agent': USER_AGENT, ...o.headers };
      if (o.scope !== undefined) {
        let auth: string | undefined;
        try {
          auth = await this.auth.header(ep.authHost, o.scope, ep.insecure, ep.origin.host);
        } catch (e) {
          throw this.netError(ep, e); // a token endpoint that cannot be reached
        }
        if (auth) headers.authorization = auth;
      }
      // Where plain HTTP is allowed, one request finds out whether the host speaks TLS; the
      // others wait for its answer instead of each trying TLS against a plain-HTTP registry.
      const probe = url.protocol === 'https:' && ep.plainHttpAllowed && !this.mirrors.has(registry) && !this.schemes.has(url.host);
      if (probe && this.probes.has(url.host)) {
        await this.probes.get(url.host);
        attempt--;
        continue;
      }
      let probed = () => {};
      if (probe) this.probes.set(url.host, new Promise<void>((r) => (probed = r)));
      let res: HttpResponse;
      try {
        // No silent waits: a registry that holds the connection open without answering is named, on a terminal and in plain logs alike.
        const tries = `attempt ${attempt + 1} of ${this.retry.retries}`;
        const waiting = { afterMs: this.waitNoticeMs, notice: () => this.reporter.info(`${o.what}: waiting for ${url.host} to answer (${this.waitNoticeMs / 1000} s so far; gives up at ${this.firstByteMs / 1000} s, ${tries})`) };
        res = await httpSend({ method: o.method, url, headers, body: o.body?.(), insecureTls: ep.insecure, ca: this.ca, timeoutMs: this.timeoutMs, firstByteMs: this.firstByteMs, waiting });
        if (probe) this.schemes.set(url.host, 'https:');
      } catch (e) {
        if (url.protocol === 'https:' && ep.plainHttpAllowed && !this.mirrors.has(registry) && isTlsToPlain(e)) {
          // Loopback and --insecure-registry hosts may speak plain HTTP; remember and retry at once.
          this.schemes.set(url.host, 'http:');
          attempt--;
          continue;
        }
        lastErr = e;
        if (isTransient(e) && attempt + 1 < this.retry.retries) {
          this.reporter.info(`${o.what}: ${url.host}: ${(e as Error).message}; retry ${attempt + 2} of ${this.retry.retries}`);
          await backoff(this.retry, attempt);
          continue;
        }
        throw this.netError(ep, e);
      } finally {
        if (probe) {
          this.probes.delete(url.host);
          probed();
        }
      }
      if (res.status === 401 && !authRetried) {
        authRetried = true;
        const challenge = header(res.headers, 'www-authenticate') ?? '';
        await drain(res);
        o = { ...o, scope: await this.auth.challenged(ep.authHost, challenge, o.scope, o.what) };
        attempt--;
        continue;
      }
      if (res.status === 401 || res.status === 403) {
        const body = (await readBody(res, 64 << 10).catch(() => Buffer.alloc(0))).toString('utf8');
        const hadCreds = !!(await this.auth.creds.get(ep.authHost));
        throw authError(ep.authHost, res.status, `${o.what}${errorDetail(body)}`, hadCreds);
      }
      if (isRetryableStatus(res.status) && !o.ok.includes(res.status)) {
        await drain(res);
        lastErr = new RegistryError(Codes.regHttp, `${o.what}: ${ep.origin.host} answered ${res.status}`, { status: res.status });
        if (attempt + 1 < this.retry.retries) {
          this.reporter.info(`${o.what}: ${ep.origin.host} answered ${res.status}; retry ${attempt + 2} of ${this.retry.retries}`);
          await backoff(this.retry, attempt, header(res.headers, 'retry-after'));
          continue;
        }
        break;
      }
      if (!o.ok.includes(res.status)) {
        const body = (await readBody(res, 64 << 10).catch(() => Buffer.alloc(0))).toString('utf8');
        const notFound = res.status === 404;
        throw new RegistryError(notFound ? Codes.regNotFound : Codes.regHttp, `${o.what}: ${ep.origin.host} answered ${res.status}${errorDetail(body)}`, {
          status: res.status,
          hint: notFound
            ? 'Check the name and tag, and that the registry holds it. For a moved tag, re-run `ferry lock`.'
            : 'The registry refused the request; see its message above.',
        });
      }
      return res;
    }
    const ep = this.endpoint(registry);
    if (lastErr instanceof FerryError) {
      throw new RegistryError(lastErr.code, `${lastErr.message} after ${this.retry.retries} attempts`, {
        status: (lastErr as RegistryError).status,
        hint: 'The registry keeps failing. Try again later; blobs already fetched are kept, so a re-run resumes.',
      });
    }
    throw this.netError(ep, lastErr);
  }

  private pullScope(repo: string): string {
    return `repository:${repo}:pull`;
  }

  private manifestRequest(repo: Repo, method: 'GET' | 'HEAD', reference: string, what: string): Promise<HttpResponse> {
    const rp = this.repoPath(this.endpoint(repo.registry), repo.repository);
    return this.request(repo.registry, { method, path: `${rp}/manifests/${reference}`, headers: { accept: MANIFEST_ACCEPT }, scope: this.pullScope(rp), ok: [200], what });
  }

  /** GETs a manifest or index, checking its digest when asked for one by digest. */
  async getManifest(repo: Repo, reference: string): Promise<FetchedManifest> {
    const what = `manifest ${repo.registry}/${repo.repository}${reference.includes(':') ? '@' : ':'}${reference}`;
    const res = await this.manifestRequest(repo, 'GET', reference, what);
    const bytes = await this.readSmall(repo.registry, res, MAX_MANIFEST, () =>
      new RegistryError(Codes.manifestTooLarge, `${what} is larger than ${MAX_MANIFEST >> 20} MiB, the most ferry reads for a manifest`, {
        hint: 'Registries may refuse manifests over 4 MiB, and real ones are a few kB: this registry serves something that is not an image manifest.',
      }),
    );
    const digest = sha256(bytes);
    if (reference.startsWith('sha256:') && digest !== reference) {
      throw new IntegrityError(Codes.digestMismatch, `${what}: content hashes to ${digest}`, {
        hint: 'The registry served a different manifest than the digest names. Nothing was stored.',
      });
    }
    let mediaType = contentType(res);
    try {
      const j = JSON.parse(bytes.toString('utf8')) as { mediaType?: string };
      if (j.mediaType) mediaType = j.mediaType;
      else if (!mediaType || mediaType === 'application/json') {
        mediaType = 'manifests' in (j as object) ? MediaType.ociIndex : MediaType.ociManifest;
      }
    } catch (e) {
      throw new RegistryError(Codes.regProtocol, `${what} is not JSON`, { cause: e });
    }
    return { bytes, mediaType, digest };
  }

  /**
   * The manifests whose `subject` is `digest` (signatures, SBOMs, attestations), as the registry's
   * referrers API lists them, pages followed. A registry without the API answers 404 there: then
   * the referrers tag schema (`sha256-<hex>`, an index that clients which push referrers keep up to
   * date) stands in, and a registry with neither has no referrers. `how` says which answered.
   */
  async referrers(repo: Repo, digest: string, artifactType?: string): Promise<{ manifests: Descriptor[]; how: 'api' | 'tag' | 'none' }> {
    const ep = this.endpoint(repo.registry);
    const rp = this.repoPath(ep, repo.repository);
    const what = `referrers of ${repo.registry}/${repo.repository}@${digest}`;
    const parseIndex = (bytes: Buffer, from: string): Descriptor[] => {
      let j: unknown;
      try {
        j = JSON.parse(bytes.toString('utf8'));
      } catch (e) {
        throw new RegistryError(Codes.regProtocol, `${from} is not JSON`, { cause: e });
      }
      const ms = (j as { manifests?: unknown } | null)?.manifests;
      if (!Array.isArray(ms)) throw new RegistryError(Codes.regProtocol, `${from} is not an image index`);
      return ms.filter((d): d is Descriptor => !!d && typeof d === 'object' && typeof (d as Descriptor).digest === 'string' && typeof (d as Descriptor).mediaType === 'string' && typeof (d as Descriptor).size === 'number');
    };
    const tooBig = () => new RegistryError(Codes.manifestTooLarge, `${what}: the answer is larger than ${MAX_MANIFEST >> 20} MiB`);
    const out: Descriptor[] = [];
    const q = artifactType ? `?artifactType=${encodeURIComponent(artifactType)}` : '';
    let url: URL | undefined;
    let filtered = true;
    for (let page = 0; page < 100; page++) {
      const res = await this.request(repo.registry, {
        method: 'GET',
        ...(url ? { url } : { path: `${rp}/referrers/${digest}${q}` }),
        headers: { accept: MediaType.ociIndex },
        scope: this.pullScope(rp),
        ok: page === 0 ? [200, 404, 405] : [200],
        what,
      });
      if (res.status !== 200) {
        await drain(res);
        return this.referrersByTag(repo, rp, digest, artifactType, parseIndex);
      }
      if (page === 0) filtered = !!artifactType && (header(res.headers, 'oci-filters-applied') ?? '').split(',').some((f) => f.trim() === 'artifactType');
      out.push(...parseIndex(await this.readSmall(repo.registry, res, MAX_MANIFEST, tooBig), what));
      const next = /<([^>]+)>\s*;\s*rel="?next"?/.exec(header(res.headers, 'link') ?? '');
      if (!next) break;
      const base = url ?? new URL(`/v2/${rp}/referrers/${digest}`, ep.origin);
      url = new URL(next[1]!, base);
      // The request carries this registry's credentials: a next page elsewhere is not followed.
      if (url.origin !== base.origin) throw new RegistryError(Codes.regProtocol, `${what}: the next page is on another host (${url.origin})`);
    }
    // A registry that did not apply the filter leaves it to the client, as the spec says.
    return { manifests: filtered || !artifactType ? out : out.filter((d) => d.artifactType === artifactType), how: 'api' };
  }

  private async referrersByTag(repo: Repo, rp: string, digest: string, artifactType: string | undefined, parseIndex: (b: Buffer, from: string) => Descriptor[]): Promise<{ manifests: Descriptor[]; how: 'tag' | 'none' }> {
    const [alg, hex] = digest.split(':');
    const tag = `${alg}-${hex}`.slice(0, 128);
    const what = `referrers tag ${repo.registry}/${repo.repository}:${tag}`;
    const res = await this.request(repo.registry, { method: 'GET', path: `${rp}/manifests/${tag}`, headers: { accept: MANIFEST_ACCEPT }, scope: this.pullScope(rp), ok: [200, 404], what });
    if (res.status === 404) {
      await drain(res);
      return { manifests: [], how: 'none' };
    }
    const all = parseIndex(await this.readSmall(repo.registry, res, MAX_MANIFEST, () => new RegistryError(Codes.manifestTooLarge, `${what} is larger than ${MAX_MANIFEST >> 20} MiB`)), what);
    return { manifests: artifactType ? all.filter((d) => d.artifactType === artifactType) : all, how: 'tag' };
  }

  /** Reads a small body whole: over `max` is `tooBig()`, a cut connection a remote failure, never a bug. */
  private async readSmall(registry: string, res: HttpResponse, max: number, tooBig: () => FerryError): Promise<Buffer> {
    const len = Number(header(res.headers, 'content-length'));
    if (Number.isFinite(len) && len > max) {
      res.body.destroy();
      throw tooBig();
    }
    try {
      return await readBody(res, max);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ETOOBIG') throw tooBig();
      throw this.netError(this.endpoint(registry), e);
    }
  }

  /** HEADs a manifest: its digest, size and type without the body. Falls back to GET when the registry hides the digest. */
  async headManifest(repo: Repo, reference: string): Promise<{ digest: string; size: number; mediaType: string }> {
    const res = await this.manifestRequest(repo, 'HEAD', reference, `manifest ${repo.registry}/${repo.repository}:${reference}`);
    await drain(res);
    const digest = header(res.headers, 'docker-content-digest');
    const size = Number(header(res.headers, 'content-length'));
    const mediaType = contentType(res);
    if (!digest || !Number.isFinite(size) || !mediaType) {
      const m = await this.getManifest(repo, reference);
      return { digest: m.digest, size: m.bytes.length, mediaType: m.mediaType };
    }
    return { digest, size, mediaType };
  }

  /**
   * Streams a blob into a store writer, checking size and digest as bytes flow. A cut connection
   * resumes with a Range request from the bytes already written.
   */
  async fetchBlob(repo: Repo, writer: BlobWriter, signal?: AbortSignal): Promise<void> {
    const desc = writer.expected;
    const what = `blob ${desc.digest.slice(0, 19)} of ${repo.registry}/${repo.repository}`;
    let lastErr: unknown;
    let stalls = 0;
    // A resumed writer may hold the whole blob already: only the check is left.
    if (writer.offset > 0 && writer.offset === desc.size) {
      await writer.commit();
      return;
    }
    if (writer.offset > 0) this.reporter.verbose(`${what}: resuming at ${writer.offset}/${desc.size} bytes, from an earlier run`);
    while (stalls < this.retry.retries) {
      const before = writer.offset;
      try {
        signal?.throwIfAborted();
        await this.fetchBlobOnce(repo, writer, what, signal);
        await writer.commit();
        return;
      } catch (e) {
        // Bytes that check out so far are kept for the next run, unless they are what failed.
        if (e instanceof IntegrityError || signal?.aborted) {
          await writer.abort(!(e instanceof IntegrityError));
          throw e;
        }
        lastErr = e;
        if (!(isTransient(e) || (e instanceof RegistryError && (e.status ?? 0) >= 500))) {
          await writer.abort(true);
          throw e;
        }
        // Progress resets the budget: a flaky link that keeps delivering bytes finishes the blob.
        stalls = writer.offset > before ? 0 : stalls + 1;
        this.reporter.verbose(`${what}: cut at ${writer.offset}/${desc.size} bytes (${(e as Error).message}); resuming`);
        await backoff(this.retry, stalls);
      }
    }
    await writer.abort(true);
    throw this.netError(this.endpoint(repo.registry), lastErr);
  }

  private async fetchBlobOnce(repo: Repo, writer: BlobWriter, what: string, signal?: AbortSignal): Promise<void> {
    const ep = this.endpoint(repo.registry);
    const rp = this.repoPath(ep, repo.repository);
    const offset = writer.offset;
    const rangeHeaders: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
    let res = await this.request(repo.registry, {
      method: 'GET',
      path: `${rp}/blobs/${writer.expected.digest}`,
      headers: rangeHeaders,
      scope: this.pullScope(rp),
      ok: [200, 206, 301, 302, 303, 307, 308],
      what,
    });
    for (let hops = 0; res.status >= 300 && res.status < 400; hops++) {
      const loc = header(res.headers, 'location');
      await drain(res);
      if (!loc || hops >= 5) throw new RegistryError(Codes.regProtocol, `${what}: bad redirect`);
      const next = new URL(loc, ep.origin);
      // Storage backends get no registry credentials: a presigned URL carries its own.
      if (next.host !== ep.origin.host && !this.redirectsSaid.has(next.host)) {
        this.redirectsSaid.add(next.host);
        this.reporter.verbose(`auth: blobs of ${repo.registry} redirect to ${next.host}; no credentials go there`);
      }
      res = await httpSend({ method: 'GET', url: next, headers: { 'user-agent': USER_AGENT, ...rangeHeaders }, insecureTls: ep.insecure, ca: this.ca, timeoutMs: this.timeoutMs, firstByteMs: this.firstByteMs });
      if (res.status >= 400) {
        await drain(res);
        throw new RegistryError(res.status >= 500 ? Codes.regHttp : Codes.regNotFound, `${what}: storage at ${next.host} answered ${res.status}`, { status: res.status });
      }
    }
    const body = res.body;
    const onAbort = () => body.destroy(new Error('cancelled: another transfer failed'));
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await this.copyBody(res, writer, what, offset);
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  private async copyBody(res: HttpResponse, writer: BlobWriter, what: string, offset: number): Promise<void> {
    let skip = 0;
    if (offset > 0) {
      if (res.status === 206) {
        const cr = /bytes (\d+)-/.exec(header(res.headers, 'content-range') ?? '');
        if (!cr || Number(cr[1]) !== offset) {
          await drain(res);
          throw new RegistryError(Codes.regProtocol, `${what}: the server resumed at the wrong offset`);
        }
      } else {
        skip = offset; // the server ignored Range: discard what we already have
      }
    }
    // 'data' events, not an async iterator: a promise per 64 KiB chunk cost as much as the hashing.
    // The socket pauses only while the writer has a MiB ready and the last one is still writing.
    const body = res.body;
    await new Promise<void>((resolve, reject) => {
      let settled = false;
      const fail = (e: unknown) => {
        if (settled) return;
        settled = true;
        body.off('data', onData);
        body.destroy();
        reject(e);
      };
      const onData = (chunk: Buffer) => {
        let c = chunk;
        if (skip > 0) {
          if (c.length <= skip) {
            skip -= c.length;
            return;
          }
          c = c.subarray(skip);
          skip = 0;
        }
        let wait: Promise<void> | undefined;
        try {
          wait = writer.push(c);
        } catch (e) {
          return fail(e);
        }
        this.reporter.bytes(c.length);
        if (wait) {
          body.pause();
          wait.then(() => settled || body.resume(), fail);
        }
      };
      body.on('data', onData);
      body.once('error', fail);
      body.once('end', () => {
        if (!body.complete) return fail(Object.assign(new Error('connection closed mid-blob'), { code: 'ECONNRESET' }));
        settled = true;
        resolve();
      });
      body.once('close', () => fail(Object.assign(new Error('connection closed mid-blob'), { code: 'ECONNRESET' })));
    });
  }

  /** Reads a small blob (an image config) whole, checking its digest. */
  async getBlobBytes(repo: Repo, digest: string, max = 1 << 20): Promise<Buffer> {
    const ep = this.endpoint(repo.registry);
    const rp = this.repoPath(ep, repo.repository);
    const what = `blob ${digest.slice(0, 19)} of ${repo.registry}/${repo.repository}`;
    let res = await this.request(repo.registry, { method: 'GET', path: `${rp}/blobs/${digest}`, scope: this.pullScope(rp), ok: [200, 307, 302, 303, 308, 301], what });
    for (let hops = 0; res.status >= 300 && res.status < 400 && hops < 5; hops++) {
      const loc = header(res.headers, 'location');
      await drain(res);
      if (!loc) throw new RegistryError(Codes.regProtocol, `${what}: bad redirect`);
      res = await httpSend({ method: 'GET', url: new URL(loc, ep.origin), headers: { 'user-agent': USER_AGENT }, insecureTls: ep.insecure, ca: this.ca, timeoutMs: this.timeoutMs, firstByteMs: this.firstByteMs });
    }
    if (res.status !== 200) {
      await drain(res);
      throw new RegistryError(Codes.regHttp, `${what}: answered ${res.status}`, { status: res.status });
    }
    const bytes = await this.readSmall(repo.registry, res, max, () => new RegistryError(Codes.regProtocol, `${what} is larger than the ${max} bytes ferry reads for an image config`));
    if (sha256(bytes) !== digest) {
      throw new IntegrityError(Codes.digestMismatch, `${what}: content hashes to ${sha256(bytes)}`, { hint: 'The registry served corrupt content.' });
    }
    return bytes;
  }

  // ---- push ----

  async blobExists(repo: Repo, digest: string): Promise<boolean> {
    const ep = this.endpoint(repo.registry);
    const rp = this.repoPath(ep, repo.repository);
    const res = await this.request(repo.registry, {
      method: 'HEAD',
      path: `${rp}/blobs/${digest}`,
      scope: `repository:${rp}:pull,push`,
      ok: [200, 404],
      what: `blob ${digest.slice(0, 19)} in ${repo.repository}`,
    });
    await drain(res);
    return res.status === 200;
  }

  /**
   * Uploads a blob. It first tries a cross-repo mount from `mountFrom` (no bytes move), then a
   * monolithic PUT for small blobs or PATCH chunks for large ones. `open(start)` streams the blob
   * from a byte offset, so a retry sends it again from disk.
   */
  async pushBlob(repo: Repo, size: number, digest: string, open: (start: number, end: number) => Readable, mountFrom?: string): Promise<'exists' | 'mounted' | 'uploaded'> {
    const ep = this.endpoint(repo.registry);
    const rp = this.repoPath(ep, repo.repository);
    const scope = mountFrom ? `repository:${rp}:pull,push repository:${this.repoPath(ep, mountFrom)}:pull` : `repository:${rp}:pull,push`;
    if (await this.blobExists(repo, digest)) return 'exists';
    const what = `upload of ${digest.slice(0, 19)} to ${repo.registry}/${repo.repository}`;
    const q = mountFrom ? `?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(this.repoPath(ep, mountFrom))}` : '';
    const start = await this.request(repo.registry, { method: 'POST', path: `${rp}/blobs/uploads/${q}`, headers: { 'content-length': '0' }, scope, ok: [201, 202], what });
    await drain(start);
    if (start.status === 201) return 'mounted';
    let loc = this.location(ep, start, what);
    if (size <= this.monolithicMax) {
      loc.searchParams.set('digest', digest);
      const res = await this.request(repo.registry, {
        method: 'PUT',
        url: loc,
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
        body: () => (size === 0 ? Buffer.alloc(0) : open(0, size - 1)),
        scope,
        ok: [201],
        what,
      });
      await drain(res);
      this.reporter.bytes(size);
      return 'uploaded';
    }
    for (let off = 0; off < size; off += this.chunkSize) {
      const end = Math.min(size, off + this.chunkSize) - 1;
      const res = await this.request(repo.registry, {
        method: 'PATCH',
        url: loc,
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(end - off + 1), 'content-range': `${off}-${end}` },
        body: () => open(off, end),
        scope,
        ok: [202],
        what,
      });
      await drain(res);
      loc = this.location(ep, res, what);
      this.reporter.bytes(end - off + 1);
    }
    loc.searchParams.set('digest', digest);
    const fin = await this.request(repo.registry, { method: 'PUT', url: loc, headers: { 'content-length': '0' }, scope, ok: [201], what });
    await drain(fin);
    return 'uploaded';
  }

  private location(ep: Endpoint, res: HttpResponse, what: string): URL {
    const loc = header(res.headers, 'location');
    if (!loc) throw new RegistryError(Codes.regProtocol, `${what}: the registry gave no upload location`);
    return new URL(loc, ep.origin);
  }

  async putManifest(repo: Repo, reference: string, bytes: Buffer, mediaType: string): Promise<string> {
    const ep = this.endpoint(repo.registry);
    const rp = this.repoPath(ep, repo.repository);
    const res = await this.request(repo.registry, {
      method: 'PUT',
      path: `${rp}/manifests/${reference}`,
      headers: { 'content-type': mediaType, 'content-length': String(bytes.length) },
      body: () => bytes,
      scope: `repository:${rp}:pull,push`,
      ok: [201, 200],
      what: `manifest ${repo.registry}/${repo.repository}:${reference}`,
    });
    await drain(res);
    return header(res.headers, 'docker-content-digest') ?? sha256(bytes);
  }
}

/** The media type a response names, without parameters. */
const contentType = (res: HttpResponse) => (header(res.headers, 'content-type') ?? '').split(';')[0]!.trim();

/** Pulls the first message out of a distribution-spec error body. */
function errorDetail(body: string): string {
  try {
    const j = JSON.parse(body) as { errors?: { code?: string; message?: string }[] };
    const e = j.errors?.[0];
    if (e) return ` (${e.code ?? 'ERROR'}: ${e.message ?? ''})`;
  } catch {
    /* not JSON */
  }
  const t = body.trim().slice(0, 200);
  return t ? ` (${t})` : '';
}
