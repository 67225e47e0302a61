import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { initPki } from '../../src/sign/pki.js';
import { FERRY, ferry } from '../helpers/cli.js';
import { tmpdir, waitFor } from '../helpers/peers.js';
import { buildSiteBundle, metric, raw, request, type SiteBundle } from '../helpers/site.js';

/*
 * Starving `ferry serve` the way an attacker on the site network would: real sockets against the
 * real CLI, in a child whose open-file limit is lowered with prlimit, and client counts well above
 * what that limit allows. The defaults are the ones under test: a 10 s header timeout, the cap the
 * open-file limit gives (256 descriptors: 96 connections), a response stalled 10 s may make room.
 */

const FD_LIMIT = 256;
const HEADER_TIMEOUT_MS = 10_000;
const STALLED_MS = 10_000;

let work: string;
let b: SiteBundle;
let pki: { cert: string; key: string; caCert: string };
let ca: Buffer;
const children: ChildProcess[] = [];
const clients: net.Socket[] = [];

interface Served {
  pid: number;
  url: string;
  port: number;
  logs: string[];
}

/**
 * `ferry serve` under `prlimit --nofile=<limit>`; prlimit execs node, so the child's pid is the server's.
 * One process (--workers 1): the cap and the memory under test are each process's.
 */
async function serve(limit: number, opts: { tls?: boolean; args?: string[] } = {}): Promise<Served> {
  const tlsArgs = opts.tls ? ['--tls-cert', pki.cert, '--tls-key', pki.key] : [];
  const args = ['serve', '--bundle', b.dir, '--listen', '127.0.0.1:0', '--workers', '1', ...tlsArgs, ...(opts.args ?? [])];
  const child = spawn('prlimit', [`--nofile=${limit}`, process.execPath, FERRY, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  const logs: string[] = [];
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stderr! }).on('line', (l) => {
      logs.push(l);
      const m = / on (https?:\/\/[^ ]+) \(listening/.exec(l);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`ferry serve exited with ${code}:\n${logs.join('\n')}`)));
  });
  return { pid: child.pid!, url, port: Number(new URL(url).port), logs };
}

const openFiles = async (pid: number) => (await fs.readdir(`/proc/${pid}/fd`)).length;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const CHUNK = 64 << 10;
const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/**
 * Clients that connect and then neither finish a request nor close: `allowHalfOpen` keeps their side
 * open after the server's FIN. `partial` sends a request line and a header, never the blank line.
 */
/** Resolves with how many connected (and, for TLS, finished the handshake). */
function holdOpen(port: number, n: number, kind: 'silent' | 'partial' | 'tls-silent', caPem?: Buffer): Promise<number> {
  const connected: Promise<boolean>[] = [];
  for (let i = 0; i < n; i++) {
    connected.push(
      new Promise<boolean>((resolve) => {
        const s =
          kind === 'tls-silent'
            ? tls.connect({ socket: net.connect({ host: '127.0.0.1', port, allowHalfOpen: true }), servername: 'registry.site.test', ca: caPem }, () => resolve(true))
            : net.connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => {
                if (kind === 'partial') s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
                resolve(true);
              });
        s.on('error', () => resolve(false));
        s.on('data', () => {});
        clients.push(s);
      }),
    );
  }
  return Promise.all(connected).then((ok) => ok.filter(Boolean).length);
}

/** A normal client: GET with a fresh connection, retried while the server refuses; resolves with the status and when. */
async function served(url: string, within: number, headers: Record<string, string> = {}): Promise<{ status: number; ms: number }> {
  const t0 = Date.now();
  let last: unknown;
  while (Date.now() - t0 < within) {
    try {
      const r = await request(url, { headers, ...(url.startsWith('https:') ? { ca } : {}) });
      return { status: r.status, ms: Date.now() - t0 };
    } catch (e) {
      last = e;
      await sleep(100);
    }
  }
  throw new Error(`not served within ${within} ms: ${(last as Error)?.message}`);
}

beforeAll(async () => {
  work = await tmpdir('ferry-serve-starve-');
  b = await buildSiteBundle(work, { bigBytes: 64 << 20 });
  pki = await initPki({ domain: 'site.test', ips: ['127.0.0.1'], outDir: path.join(work, 'pki') });
  ca = await fs.readFile(pki.caCert);
});
afterEach(async () => {
  for (const s of clients.splice(0)) s.destroy();
  for (const c of children.splice(0)) {
    if (c.exitCode === null && c.signalCode === null) {
      const gone = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await gone;
    }
  }
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

describe('ferry serve under a lowered open-file limit', () => {
  it(`keeps serving while 400 clients per port that never finish a request hold connections, and cuts each at the header timeout`, async () => {
    const [plain, secure] = await Promise.all([serve(FD_LIMIT), serve(FD_LIMIT, { tls: true })]);
    const base = { plain: await openFiles(plain.pid), secure: await openFiles(secure.pid) };
    // Silent TCP, a request line without its end, silent before a TLS handshake, silent after one.
    const held = await Promise.all([
      holdOpen(plain.port, 200, 'silent'),
      holdOpen(plain.port, 200, 'partial'),
      holdOpen(secure.port, 200, 'silent'),
      holdOpen(secure.port, 200, 'tls-silent', ca),
    ]);
    // A normal client asks while those are held (the episode at the cap is on) and is let in: a held
    // one makes room, nobody is refused. However long a loaded machine then takes to answer.
    const atCap = (s: Served) => s.logs.some((l) => /^connections: at the cap of 96/.test(l)) && !s.logs.some((l) => /^connections: below the cap/.test(l));
    for (const s of [plain, secure]) {
      expect(atCap(s), s.url).toBe(true);
      expect((await served(`${s.url}/healthz`, 60_000)).status, s.url).toBe(200);
      expect((await served(`${s.url}/v2/fx/big/blobs/${b.big!.layer.digest}`, 60_000, { Range: 'bytes=0-1023' })).status, s.url).toBe(206);
      const m = (await request(`${s.url}/metrics`, s === secure ? { ca } : {})).text;
      expect(metric(m, 'ferry_serve_connections_dropped_total', { reason: 'refused' }), s.url).toBe(0);
    }
    expect(held).toEqual([200, 200, 200, 200]);
    for (const s of [plain, secure]) {
      const m = (await request(`${s.url}/metrics`, s === secure ? { ca } : {})).text;
      expect(metric(m, 'ferry_serve_connections_max')).toBe(96);
      expect(metric(m, 'ferry_serve_connections')).toBeLessThanOrEqual(96);
      expect(metric(m, 'ferry_serve_connections_dropped_total', { reason: 'idle' })).toBeGreaterThanOrEqual(400 - 96);
    }
    // Past the header (or TLS handshake) timeout, the server holds none of them, although no client
    // ever closed its side: a 408 alone would leave each socket half-open.
    await waitFor(async () => (await openFiles(plain.pid)) <= base.plain + 2 && (await openFiles(secure.pid)) <= base.secure + 2, 'the servers to close every held connection', HEADER_TIMEOUT_MS + 60_000);
    for (const s of [plain, secure]) {
      // One line says the cap was reached and one that it is over: not a line per connection.
      await waitFor(async () => s.logs.some((l) => /^connections: below the cap of 96 again/.test(l)), 'the end of the episode');
      expect(s.logs.filter((l) => /^connections: at the cap of 96 open connections/.test(l))).toHaveLength(1);
      expect(s.logs.filter((l) => /^connections: below the cap/.test(l))).toHaveLength(1);
    }
  });

  it('holds at most two chunks per capped connection while 600 clients request a 64 MB blob and never read, serves a normal client meanwhile, and gives every buffer back once they go', async () => {
    const s = await serve(FD_LIMIT);
    const blob = `/v2/fx/big/blobs/${b.big!.layer.digest}`;
    const gauges = async () => {
      const m = (await request(`${s.url}/metrics`)).text;
      return { held: metric(m, 'ferry_serve_buffer_bytes'), peak: metric(m, 'ferry_serve_buffer_bytes_peak') };
    };
    // Warm up the repository graph and the blob route.
    expect((await served(`${s.url}${blob}`, 5000, { Range: 'bytes=0-1023' })).status).toBe(206);
    const fds = await openFiles(s.pid);
    for (let i = 0; i < 600; i++) {
      const c = net.connect({ host: '127.0.0.1', port: s.port }, () => {
        c.write(`GET ${blob} HTTP/1.1\r\nHost: x\r\n\r\n`);
        c.pause();
      });
      c.on('error', () => {});
      clients.push(c);
      if (i % 50 === 49) await sleep(50);
    }
    // The flood is on once responses that do not drain hold buffers.
    await waitFor(async () => (await gauges()).held >= 16 * 2 * CHUNK, 'the flood to hold buffers', 60_000);
    // Every slot holds a response that does not drain: a new client waits until one has stalled
    // long enough to make room.
    const normal = await served(`${s.url}${blob}`, STALLED_MS + 60_000, { Range: 'bytes=0-1023' });
    expect(normal.status).toBe(206);
    // The bound, counted where buffers are taken and given back (no sampling, no collector): two
    // 64 KiB chunks for each of the 96 connections the cap allows, with room for the few that are
    // being replaced at that moment and the normal client; 600 connections would hold 75 MB.
    // (The RSS this costs, and how soon V8 returns its heap, is bench/serve-flood.ts's to measure.)
    const during = await gauges();
    expect(during.peak).toBeLessThanOrEqual((96 + 8) * 2 * CHUNK);
    for (const c of clients.splice(0)) c.destroy();
    await waitFor(async () => (await openFiles(s.pid)) <= fds + 2, 'the server to close the flood', 60_000);
    // Every buffer is given back as its connection closes, whenever the collector runs.
    await waitFor(async () => (await gauges()).held === 0, 'every response buffer to be given back', 60_000);
    // Reused chunks never mix two responses: a whole download still has its digest.
    const whole = await request(`${s.url}${blob}`);
    expect(sha256(whole.body)).toBe(b.big!.layer.digest);
  }, 240_000);

  it('answers pipelined requests one at a time, one open file per connection, and cuts a connection that queues more than 64', async () => {
    const s = await serve(FD_LIMIT);
    const base = await openFiles(s.pid);
    const blob = `/v2/fx/big/blobs/${b.big!.layer.digest}`;
    const pipelined = (n: number) => {
      const c = net.connect({ host: '127.0.0.1', port: s.port }, () => {
        c.write(`GET ${blob} HTTP/1.1\r\nHost: x\r\n\r\n`.repeat(n));
        c.pause();
      });
      c.on('error', () => {});
      clients.push(c);
      return c;
    };
    const kept = [pipelined(60), pipelined(60), pipelined(60)];
    pipelined(1000);
    let most = base;
    const t0 = Date.now();
    while (Date.now() - t0 < 2000) {
      most = Math.max(most, await openFiles(s.pid));
      await sleep(20);
    }
    // A socket and a file for each kept connection, at most: no file per waiting request.
    expect(most).toBeLessThanOrEqual(base + 2 * kept.length + 2);
    expect(s.logs.filter((l) => /refused: more than 64 pipelined requests waiting/.test(l))).toHaveLength(1);
    // A client that reads gets every one of 60 pipelined answers, in order.
    const reply = await raw(s.port, `GET ${blob} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n`.repeat(59) + `GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, { timeoutMs: 10_000 });
    expect(reply.text.match(/HTTP\/1\.1 206 /g)).toHaveLength(59);
    expect(reply.text.trimEnd().endsWith('ok')).toBe(true);
  });

  it('takes the cap from --max-connections, says when the open-file limit cannot carry it, and refuses a cap below 1', async () => {
    const small = await serve(FD_LIMIT, { args: ['--max-connections', '4'] });
    expect(small.logs.find((l) => l.startsWith('ferry serve: '))).toMatch(/at most 4 connections\)$/);
    await holdOpen(small.port, 10, 'silent');
    expect((await served(`${small.url}/healthz`, 3000)).status).toBe(200);
    expect(metric((await request(`${small.url}/metrics`)).text, 'ferry_serve_connections')).toBeLessThanOrEqual(4);
    const big = await serve(FD_LIMIT, { args: ['--max-connections', '500'] });
    expect(big.logs.some((l) => /^connections: a cap of 500 needs up to 1000 open files, but the open-file limit is 256 \(enough for 96\)/.test(l))).toBe(true);
    const bad = await ferry(['serve', '--bundle', b.dir, '--listen', '127.0.0.1:0', '--max-connections', '0']);
    expect([bad.code, bad.stderr]).toEqual([2, expect.stringContaining('--max-connections must be an integer ≥ 1')]);
  });
});
