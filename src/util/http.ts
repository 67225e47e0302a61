import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { createRequire } from 'node:module';
import type { LookupFunction } from 'node:net';
import { Readable } from 'node:stream';
import { sleep } from './limit.js';

// Required, not imported: an ESM import of node:http reads every export, and on Node 22+ one of
// them loads Node's bundled undici, ~40 ms of every start (~20 ms of extra work on Node 20).
const requireBuiltin = createRequire(import.meta.url);
const http = requireBuiltin('node:http') as typeof import('node:http');
const https = requireBuiltin('node:https') as typeof import('node:https');

/*
 * The one HTTP client transport: single exchanges over node:http(s) with keep-alive agents, and a
 * retrying GET on top. The OCI client adds auth and its own request loop; downloads use the GET.
 */

export interface HttpRequest {
  method: string;
  url: URL;
  headers?: Record<string, string>;
  body?: Buffer | Readable;
  /** Skip certificate checks (only for --insecure-registry). */
  insecureTls?: boolean;
  ca?: string | Buffer;
  /** Idle socket timeout; a stalled transfer fails and is retried. */
  timeoutMs?: number;
  /** How long to wait for the response headers once the request is sent, apart from the transfer's idle timeout. */
  firstByteMs?: number;
  /** Called once if the response headers have not come `afterMs` after the request was sent. */
  waiting?: { afterMs: number; notice: () => void };
  /** Resolves the host name instead of the system resolver (a site's own DNS servers). */
  lookup?: LookupFunction;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: IncomingMessage;
}

const agents = {
  http: new http.Agent({ keepAlive: true, maxSockets: 32 }),
  https: new https.Agent({ keepAlive: true, maxSockets: 32 }),
  httpsInsecure: new https.Agent({ keepAlive: true, maxSockets: 32, rejectUnauthorized: false }),
};

/** One HTTP exchange over node:http(s): no redirects, no buffering; the caller owns the body. */
export function httpSend(req: HttpRequest): Promise<HttpResponse> {
  if (process.env.FERRY_HTTP_DEBUG) process.stderr.write(`http: ${req.method} ${req.url.href}\n`);
  return new Promise((resolve, reject) => {
    const isHttps = req.url.protocol === 'https:';
    const lib = isHttps ? https : http;
    const agent = !isHttps ? agents.http : req.ca ? undefined : req.insecureTls ? agents.httpsInsecure : agents.https;
    const r = lib.request(
      req.url,
      {
        method: req.method,
        headers: req.headers,
        agent,
        ...(isHttps && req.ca ? { ca: req.ca, rejectUnauthorized: !req.insecureTls } : {}),
        ...(req.lookup ? { lookup: req.lookup } : {}),
      },
      (res) => {
        clearTimers();
        res.setTimeout(req.timeoutMs ?? 60_000, () => res.destroy(Object.assign(new Error('idle timeout while reading the response'), { code: 'ETIMEDOUT' })));
        if (process.env.FERRY_HTTP_DEBUG) process.stderr.write(`http: <- ${res.statusCode} ${req.method} ${req.url.pathname}\n`);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res });
      },
    );
    r.setTimeout(req.timeoutMs ?? 60_000, () => r.destroy(Object.assign(new Error('request timed out'), { code: 'ETIMEDOUT' })));
    // A server that takes the connection and never answers: bounded on its own, not by the
    // transfer's timeout, from when the request (and any body it uploads) is sent.
    let firstByte: NodeJS.Timeout | undefined;
    let notice: NodeJS.Timeout | undefined;
    let answered = false;
    const clearTimers = () => {
      answered = true;
      clearTimeout(firstByte);
      clearTimeout(notice);
    };
    r.on('finish', () => {
      if (answered) return;
      if (req.firstByteMs) firstByte = setTimeout(() => r.destroy(Object.assign(new Error(`no answer within ${Math.round(req.firstByteMs! / 100) / 10} s (the connection is open, the server sends nothing)`), { code: 'ETIMEDOUT' })), req.firstByteMs);
      if (req.waiting) notice = setTimeout(req.waiting.notice, req.waiting.afterMs);
    });
    r.on('error', (e) => {
      clearTimers();
      reject(e);
    });
    if (!req.body) r.end();
    else if (Buffer.isBuffer(req.body)) r.end(req.body);
    else {
      req.body.on('error', (e) => r.destroy(e));
      req.body.pipe(r);
    }
  });
}

/** Reads a small body whole, refusing more than `max` bytes (manifests, tokens, errors). */
export async function readBody(res: HttpResponse, max = 4 << 20): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res.body) {
    n += (c as Buffer).length;
    if (n > max) {
      res.body.destroy();
      throw Object.assign(new Error(`response body is larger than ${max} bytes`), { code: 'ETOOBIG' });
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Consumes an unwanted body, so the keep-alive socket goes back to the pool. */
export function drain(res: HttpResponse): Promise<void> {
  return new Promise((resolve) => {
    if (res.body.readableEnded || res.body.destroyed) return resolve();
    res.body.on('end', resolve).on('error', () => resolve()).on('close', resolve);
    res.body.resume();
  });
}

export function header(h: IncomingHttpHeaders, name: string): string | undefined {
  const v = h[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/** Errors worth a retry: the connection failed or was cut, not that the server said no. */
export function isTransient(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return (
    !!code &&
    ['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'EAI_AGAIN', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_SOCKET', 'ERR_STREAM_PREMATURE_CLOSE'].includes(code)
  ) || /aborted|socket hang up|premature close/i.test((e as Error | undefined)?.message ?? '');
}

/** The server speaks plain HTTP where we tried TLS. */
export function isTlsToPlain(e: unknown): boolean {
  const msg = (e as Error | undefined)?.message ?? '';
  const code = (e as NodeJS.ErrnoException | undefined)?.code ?? '';
  return code === 'EPROTO' || code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version number|packet length too long|http request/i.test(msg);
}

export interface RetryPolicy {
  /** Attempts in all, at least 1. */
  retries: number;
  /** First backoff delay; doubles each attempt, with jitter. */
  backoffMs: number;
  maxBackoffMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { retries: 5, backoffMs: 250, maxBackoffMs: 8000 };

/** A status worth asking again for: the server is overloaded or failing, not refusing. */
export const isRetryableStatus = (status: number): boolean => status === 429 || status >= 500;

/** Waits before attempt `attempt + 1`; a Retry-After in seconds stretches the wait, up to 30 s. */
export async function backoff(policy: RetryPolicy, attempt: number, retryAfter?: string): Promise<void> {
  let ms = Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** attempt);
  const ra = retryAfter ? Number(retryAfter) : NaN;
  if (Number.isFinite(ra) && ra >= 0) ms = Math.min(Math.max(ms, ra * 1000), 30_000);
  await sleep(ms / 2 + Math.random() * (ms / 2));
}

/** The last retryable status of a GET whose attempts ran out. */
export class RetryableStatusError extends Error {
  readonly code = 'ETRANSIENT';
  constructor(
    readonly status: number,
    readonly url: URL,
  ) {
    super(`${url.host} answered ${status}`);
  }
}

export interface GetOptions extends Omit<HttpRequest, 'method' | 'url' | 'body'> {
  retry?: Partial<RetryPolicy>;
  /** Redirects to follow per attempt (0: hand 3xx back to the caller). */
  redirects?: number;
  /** Rewrites every URL asked for, the first and each redirect's (download mirrors). */
  via?: (u: URL) => URL;
}

/**
 * A GET that retries cut connections and retryable statuses with backoff, following redirects.
 * It returns the first other answer, whatever its status; when attempts run out, or a failure is
 * not transient, it throws that failure as is (a RetryableStatusError for a status).
 */
export async function getWithRetries(url: URL, o: GetOptions = {}): Promise<HttpResponse> {
  const policy = { ...DEFAULT_RETRY, ...o.retry };
  const { retry: _r, redirects = 0, via = (u: URL) => u, ...req } = o;
  const first = via(url);
  let lastErr: unknown;
  for (let attempt = 0; attempt < Math.max(1, policy.retries); attempt++) {
    let u = first;
    let retryAfter: string | undefined;
    try {
      for (let hops = 0; ; hops++) {
        const res = await httpSend({ ...req, method: 'GET', url: u });
        const loc = header(res.headers, 'location');
        if (res.status >= 300 && res.status < 400 && loc && hops < redirects) {
          await drain(res);
          u = via(new URL(loc, u));
          continue;
        }
        if (isRetryableStatus(res.status)) {
          await drain(res);
          retryAfter = header(res.headers, 'retry-after');
          throw new RetryableStatusError(res.status, u);
        }
        return res;
      }
    } catch (e) {
      lastErr = e;
      if (!(e instanceof RetryableStatusError || isTransient(e)) || attempt + 1 >= policy.retries) break;
      await backoff(policy, attempt, retryAfter);
    }
  }
  throw lastErr;
}
