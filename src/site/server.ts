import { promises as fs } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import net from 'node:net';
import path from 'node:path';
import { Codes, HostError, UsageError } from '../errors.js';
import { ConnectionGate, connectionsFor, openFileLimit } from './connections.js';
import { FileRepo } from './files.js';
import { Metrics, type MetricsSnapshot } from './metrics.js';
import { SiteRegistry } from './registry.js';
import { bufferBytes, clean, HttpError, sendBody, sendError, type Ctx } from './respond.js';

/*
 * The site service: the OCI distribution pull API served straight from an unpacked bundle's
 * images/ layout, plus the binary repository under /files/. Read-only by design: new content
 * arrives as a newer signed bundle. This file listens, routes and shuts down; the routes answer.
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
  /** Open connections this process keeps; by default what its open-file limit supports. */
  maxConnections?: number;
  /** At the cap, a response whose connection has not drained for this long may make room. */
  stalledMs?: number;
}

export interface ServeOptions {
  bundleDir: string;
  /** host:port, [v6]:port or :port; port 0 picks a free one. */
  listen: string;
  tls?: { cert: string; key: string };
  log?: (line: string) => void;
  limits?: ServeLimits;
  /** What /metrics serves; by default this process's counters. A worker asks the primary for the whole service's. */
  metricsText?: () => Promise<string>;
}

export interface SiteServer {
  url: string;
  address: { host: string; port: number };
  /** The connection cap in force. */
  maxConnections: number;
  /** Prometheus text exposition of the counters /metrics serves. */
  metrics(): string;
  /** This process's counters, for the primary to add up. */
  snapshot(): MetricsSnapshot;
  /** Stops accepting, lets in-flight requests finish, and cuts them after the shutdown timeout. */
  close(timeoutMs?: number): Promise<void>;
}

const DEFAULT_LIMITS: Omit<Required<ServeLimits>, 'maxConnections'> = {
  maxHeaderSize: 16 * 1024,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  idleTimeoutMs: 120_000,
  keepAliveTimeoutMs: 5_000,
  shutdownTimeoutMs: 10_000,
  stalledMs: 10_000,
};
/** A refused client that never reads its status line does not keep its socket past this. */
const REFUSAL_LINGER_MS = 1000;

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

const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

interface Site {
  registry: SiteRegistry;
  files: FileRepo;
  metrics: Metrics;
  metricsText: () => Promise<string>;
  gate: ConnectionGate;
}

export async function startServer(opts: ServeOptions): Promise<SiteServer> {
  const fdLimit = await openFileLimit();
  const limits: Required<ServeLimits> = { ...DEFAULT_LIMITS, maxConnections: connectionsFor(fdLimit), ...(opts.limits ?? {}) };
  limits.requestTimeoutMs = Math.max(limits.requestTimeoutMs, limits.headersTimeoutMs);
  const log = opts.log ?? (() => {});
  if (fdLimit !== undefined && limits.maxConnections > connectionsFor(fdLimit)) {
    log(`connections: a cap of ${limits.maxConnections} needs up to ${limits.maxConnections * 2} open files, but the open-file limit is ${fdLimit} (enough for ${connectionsFor(fdLimit)}); raise LimitNOFILE (ulimit -n) or lower --max-connections`);
  }
  const bundleDir = path.resolve(opts.bundleDir);
  const { host, port } = parseListen(opts.listen);
  const metrics = new Metrics();
  metrics.sample = () => {
    const b = bufferBytes();
    metrics.bufferBytes = b.held;
    metrics.bufferBytesPeak = b.peak;
  };
  const site: Site = {
    registry: await SiteRegistry.open(bundleDir, log),
    files: FileRepo.forBundle(bundleDir),
    metrics,
    metricsText: opts.metricsText ?? (async () => metrics.render()),
    gate: new ConnectionGate(limits.maxConnections, limits.stalledMs, metrics, log),
  };
  const tlsOpts = opts.tls ? await readTls(opts.tls) : undefined;
  let closing = false;
  const server = createServer(tlsOpts, limits, (req, res) => answer(site, req, res, () => closing, log));
  server.on('connection', (socket: net.Socket) => site.gate.admit(socket));
  if (tlsOpts) server.on('secureConnection', (socket: tls.TLSSocket) => site.gate.secured(socket));
  refuseBadClients(server, site.metrics, log);
  await listen(server, host, port, opts.listen);
  server.on('error', (e) => log(`server error: ${clean((e as Error).message)}`));

  const addr = server.address() as net.AddressInfo;
  const urlHost = addr.address === '0.0.0.0' ? '127.0.0.1' : addr.address === '::' ? '[::1]' : net.isIPv6(addr.address) ? `[${addr.address}]` : addr.address;
  let closed: Promise<void> | undefined;
  return {
    url: `${tlsOpts ? 'https' : 'http'}://${urlHost}:${addr.port}`,
    address: { host: addr.address, port: addr.port },
    maxConnections: limits.maxConnections,
    metrics: () => site.metrics.render(),
    snapshot: () => site.metrics.snapshot(),
    close(timeoutMs = limits.shutdownTimeoutMs) {
      closing = true;
      closed ??= shutdown(server, site.gate, timeoutMs, () => log(`shutdown: cutting ${site.metrics.inFlight} request(s) still running after ${timeoutMs} ms`));
      return closed;
    },
  };
}

/**
 * Answers one request, counts it and logs it, whatever becomes of it. A pipelined request waits
 * until the ones before it are answered: one connection holds at most one open file and one stream.
 */
function answer(site: Site, req: http.IncomingMessage, res: http.ServerResponse, closing: () => boolean, log: (l: string) => void): void {
  const { metrics } = site;
  const started = process.hrtime.bigint();
  // Read the peer now: once the socket closes, remoteAddress is gone.
  const peer = req.socket.remoteAddress ?? '-';
  const c: Ctx = { req, res, route: 'other', sent: 0, head: req.method === 'HEAD', closing };
  metrics.inFlight++;
  const release = site.gate.request(req.socket);
  let answering = false;
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    release();
    metrics.inFlight--;
    // A request still waiting when its connection closed was never answered: nothing to count.
    if (!answering) return;
    const status = res.statusCode;
    metrics.count(c.route, req.method ?? '', status, c.sent);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    log(
      `${clean(peer, 64)} "${clean(req.method ?? '-', 20)} ${clean(req.url ?? '')} HTTP/${req.httpVersion}" ${status} ${c.sent} ${ms.toFixed(1)}ms${res.writableFinished ? '' : ' aborted'} "${clean(String(req.headers['user-agent'] ?? '-'), 200)}"`,
    );
  };
  res.once('close', end);
  req.on('error', () => {});
  res.on('error', () => {});
  if (res.socket) run();
  else {
    res.once('socket', run);
    // A connection that closes with requests still waiting never gives them a response to close.
    req.once('close', () => {
      if (!answering) end();
    });
  }

  function run(): void {
    answering = true;
    if (!req.socket.destroyed) respond().catch(() => res.destroy());
  }
  async function respond(): Promise<void> {
    try {
      await site.registry.fresh();
      await route(site, c);
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
  }
}

/** Checks the request target and method, then hands the path to the route that answers it. */
async function route(site: Site, c: Ctx): Promise<void> {
  const raw = c.req.url ?? '';
  // Only origin-form targets: absolute-form would let a client name another host.
  if (!raw.startsWith('/')) throw new HttpError(400, 'NAME_INVALID', 'request target must be a path');
  const qi = raw.indexOf('?');
  const rawPath = qi >= 0 ? raw.slice(0, qi) : raw;
  const q = new URLSearchParams(qi >= 0 ? raw.slice(qi + 1) : '');
  let p: string;
  try {
    p = decodeURIComponent(rawPath);
  } catch {
    throw new HttpError(400, 'NAME_INVALID', 'malformed percent-encoding in the path');
  }
  if (p.includes('\0') || p.includes('\\')) throw new HttpError(400, 'NAME_INVALID', 'invalid characters in the path');
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
  if (isV2) return site.registry.serve(c, p, q);
  if (isFiles) return site.files.serve(c, p);
  if (p === '/healthz') {
    c.route = 'healthz';
    sendBody(c, 200, 'ok\n', { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store' });
    return;
  }
  if (p === '/metrics') {
    c.route = 'metrics';
    sendBody(c, 200, await site.metricsText(), { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8', 'Cache-Control': 'no-store' });
    return;
  }
  throw new HttpError(404, 'NAME_UNKNOWN', 'not found');
}

async function readTls(t: { cert: string; key: string }): Promise<{ cert: Buffer; key: Buffer }> {
  try {
    return { cert: await fs.readFile(t.cert), key: await fs.readFile(t.key) };
  } catch (e) {
    throw new UsageError(Codes.pkiInvalid, `cannot read the TLS certificate or key: ${(e as Error).message}`, {
      hint: 'Check --tls-cert and --tls-key; `ferry pki init` writes registry.crt and registry.key.',
      cause: e,
    });
  }
}

function createServer(tlsOpts: { cert: Buffer; key: Buffer } | undefined, limits: Required<ServeLimits>, onRequest: http.RequestListener): http.Server | https.Server {
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
  return server;
}

/** Malformed requests, oversized headers and slow clients get a bare status line and are counted. */
function refuseBadClients(server: http.Server | https.Server, metrics: Metrics, log: (l: string) => void): void {
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
    // end() alone half-closes: a client that never closes its side would keep the descriptor.
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`, () => socket.destroy());
    setTimeout(() => socket.destroy(), REFUSAL_LINGER_MS).unref();
  });
  server.on('tlsClientError', () => metrics.clientError('tls'));
}

function listen(server: net.Server, host: string, port: number, listenFlag: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onErr = (e: NodeJS.ErrnoException) => {
      const message = `cannot listen on ${listenFlag}: ${e.message}`;
      const opts = {
        hint:
          e.code === 'EADDRINUSE'
            ? 'Another process holds that port: stop it or pick another --listen port.'
            : e.code === 'EACCES'
              ? 'Ports below 1024 need CAP_NET_BIND_SERVICE; use a higher port or grant the capability.'
              : 'Check that the address belongs to this host.',
        cause: e,
      };
      // A taken, privileged or foreign address is the operator's --listen to fix; anything else is this host's.
      reject(e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL' ? new UsageError(Codes.serveListen, message, opts) : new HostError(Codes.serveSocket, message, opts));
    };
    server.once('error', onErr);
    server.listen({ host, port }, () => {
      server.off('error', onErr);
      resolve();
    });
  });
}

/** Stopping, a connection that has sent no request yet may send one for this long. */
const FRESH_GRACE_MS = 1000;

/**
 * Stops accepting, lets in-flight requests finish, and cuts what still runs after `timeoutMs`.
 * Not http's close(): since node 19 it also closes every connection without a request in flight,
 * one just accepted too, whose request is then lost; a worker stops while connections reach it.
 */
function shutdown(server: http.Server | https.Server, gate: ConnectionGate, timeoutMs: number, onCut: () => void): Promise<void> {
  return new Promise<void>((resolve) => {
    const since = Date.now();
    let timer: NodeJS.Timeout | undefined;
    net.Server.prototype.close.call(server, () => {
      if (timer) clearTimeout(timer);
      // What http's close would also do: stop its timeout checks (they ran on while connections drained).
      const checks = Object.getOwnPropertySymbols(server).find((k) => k.description === 'http.server.connectionsCheckingInterval');
      if (checks) clearInterval((server as unknown as Record<symbol, NodeJS.Timeout>)[checks]);
      resolve();
    });
    // Keep-alive connections become idle as their last response ends; close them as they do.
    const sweep = () => gate.closeIdle(Date.now() - since >= FRESH_GRACE_MS);
    sweep();
    const sweeper = setInterval(sweep, 100);
    sweeper.unref();
    server.once('close', () => clearInterval(sweeper));
    timer = setTimeout(() => {
      onCut();
      gate.closeAll();
      server.closeAllConnections();
    }, timeoutMs);
    timer.unref();
  });
}
