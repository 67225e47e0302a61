import http, { type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';

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
      },
      (res) => {
        res.setTimeout(req.timeoutMs ?? 60_000, () => res.destroy(Object.assign(new Error('idle timeout while reading the response'), { code: 'ETIMEDOUT' })));
        if (process.env.FERRY_HTTP_DEBUG) process.stderr.write(`http: <- ${res.statusCode} ${req.method} ${req.url.pathname}\n`);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res });
      },
    );
    r.setTimeout(req.timeoutMs ?? 60_000, () => r.destroy(Object.assign(new Error('request timed out'), { code: 'ETIMEDOUT' })));
    r.on('error', reject);
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
