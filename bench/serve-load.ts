/**
 * Helpers for bench/serve: the HTTPS pull load (N curl clients on keep-alive connections walking
 * manifests and blobs), a node HTTPS GET for checks, a per-process RSS sampler, and CPU times from
 * /proc.
 */
import { createHash } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, promises as fs } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { createInterface } from 'node:readline';

export interface BlobTarget {
  repo: string;
  digest: string;
  size: number;
}

export interface ManifestTarget {
  repo: string;
  tag: string;
  digest: string;
  size: number;
  mediaType: string;
}

/**
 * TLS 1.3 suites in the order Go clients (containerd, the kubelet's image pulls) offer them on
 * AES-NI hardware. curl's default order puts AES-256 first, and a server that follows the client's
 * order (node) would then pay for AES-256 while Go servers pick AES-128 themselves.
 */
export const TLS13_SUITES = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';

export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

interface Got {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  bytes: number;
  digest?: string;
}

/** One GET (for readiness and the identity check) over a keep-alive agent; the body is counted and optionally hashed. */
export function get(agent: https.Agent, base: string, urlPath: string, o: { hash?: boolean; accept?: string } = {}): Promise<Got> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = https.request({ host: u.hostname, port: u.port, path: urlPath, method: 'GET', agent, headers: { 'user-agent': 'ferry-bench-serve', ...(o.accept ? { accept: o.accept } : {}) } }, (res) => {
      const h = o.hash ? createHash('sha256') : undefined;
      let bytes = 0;
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        h?.update(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, bytes, ...(h ? { digest: `sha256:${h.digest('hex')}` } : {}) }));
      res.on('error', reject);
      res.on('aborted', () => reject(new Error(`GET ${urlPath}: response aborted after ${bytes} bytes`)));
    });
    req.on('error', reject);
    req.end();
  });
}

export const newAgent = (ca: Buffer, sockets: number) => new https.Agent({ keepAlive: true, maxSockets: sockets, ca });

export interface LoadOptions {
  /** https://127.0.0.1:PORT */
  base: string;
  /** PEM file of the CA that signed both servers' certificate */
  caFile: string;
  /** Where the per-client curl config files go. */
  dir: string;
  clients: number;
  /** Full passes (every manifest, then every blob) each client makes. */
  passes: number;
  /** Clients still running after this many seconds are stopped; only finished transfers count. */
  maxSecs: number;
  manifests: ManifestTarget[];
  blobs: BlobTarget[];
  /** Told of each curl process, so the caller can stop it on an interrupt. */
  onSpawn?: (p: ChildProcess) => void;
}

export interface LoadResult {
  /** body bytes of finished transfers */
  bytes: number;
  secs: number;
  blobGets: number;
  manifestGets: number;
  /** per-blob milliseconds, request sent → last byte */
  latencyMs: number[];
  /** per-blob milliseconds, request sent → first byte of the response */
  ttfbMs: number[];
  /** transfers whose sha256 was checked (client 0 hashes everything it receives) */
  hashed: number;
  /** full passes completed by all clients together */
  passesDone: number;
  capped: boolean;
  /** TLS connections the clients opened (1 each when keep-alive works) */
  connects: number;
  /** CPU seconds of the curl clients, and of this process (orchestration, client 0's hashing) */
  clientCpuSecs: number;
  benchCpuSecs: number;
  /** CPU seconds of the whole machine (all processes), from /proc/stat */
  machineCpuSecs: number;
}

interface Want {
  kind: 'manifest' | 'blob';
  url: string;
  digest: string;
  size: number;
}

/** CPU seconds of this process's reaped children (cutime + cstime). */
function childCpuSecs(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[13]) + Number(f[14])) / 100;
}

/** Busy CPU seconds of the whole machine so far (everything but idle and iowait). */
function machineBusySecs(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
  return (v.reduce((a, b) => a + b, 0) - v[3]! - v[4]!) / 100;
}

/**
 * `clients` curl processes, each one client on one keep-alive TLS connection (HTTP/1.1), started
 * together. Each pass fetches every manifest by tag, then every blob, starting at a different blob
 * per client so that not all ask for the same layer at the same moment. curl reports every finished
 * transfer (status, bytes, first-byte and total time); client 0 writes its bodies to a pipe where
 * each one is hashed against its digest. A wrong status or size anywhere, or a wrong digest, fails
 * the run: a server cannot win by serving garbage.
 */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const r: LoadResult = { bytes: 0, secs: 0, blobGets: 0, manifestGets: 0, latencyMs: [], ttfbMs: [], hashed: 0, passesDone: 0, capped: false, connects: 0, clientCpuSecs: 0, benchCpuSecs: 0, machineCpuSecs: 0 };
  const plans: Want[][] = [];
  for (let w = 0; w < o.clients; w++) {
    const plan: Want[] = [];
    for (let pass = 0; pass < o.passes; pass++) {
      for (const m of o.manifests) plan.push({ kind: 'manifest', url: `${o.base}/v2/${m.repo}/manifests/${m.tag}`, digest: m.digest, size: -1 });
      const n = o.blobs.length;
      for (let k = 0; k < n; k++) {
        const b = o.blobs[(w + k) % n]!;
        plan.push({ kind: 'blob', url: `${o.base}/v2/${b.repo}/blobs/${b.digest}`, digest: b.digest, size: b.size });
      }
    }
    plans.push(plan);
    const cfg = plan.map((p) => `url = "${p.url}"\noutput = "${w === 0 ? '-' : '/dev/null'}"\n`).join('');
    await fs.writeFile(path.join(o.dir, `client-${w}.cfg`), cfg);
  }
  const perPass = o.manifests.length + o.blobs.length;
  const fmt = '%{stderr}%{http_code} %{size_download} %{time_starttransfer} %{time_total} %{num_connects} %{url_effective}\n';
  const failures: string[] = [];
  const fail = (msg: string) => {
    if (failures.length < 5) failures.push(msg);
  };

  const cpu0 = process.cpuUsage();
  const child0 = childCpuSecs();
  const mach0 = machineBusySecs();
  const t0 = process.hrtime.bigint();
  const procs = plans.map((plan, w) => {
    const p = spawn('curl', ['-s', '-S', '--http1.1', '--tls13-ciphers', TLS13_SUITES, '--cacert', o.caFile, '-H', `Accept: ${MANIFEST_ACCEPT}`, '-w', fmt, '-K', path.join(o.dir, `client-${w}.cfg`)], { stdio: ['ignore', w === 0 ? 'pipe' : 'ignore', 'pipe'] });
    o.onSpawn?.(p);
    let done = 0;
    let errText = '';
    const lines = createInterface({ input: p.stderr! });
    lines.on('line', (line) => {
      const m = /^(\d{3}) (\d+) ([\d.]+) ([\d.]+) (\d+) (\S+)$/.exec(line);
      if (!m) {
        errText += `${line}\n`;
        return;
      }
      const want = plan[done++];
      const [status, bytes, ttfb, total, connects, url] = [Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4]), Number(m[5]), m[6]!];
      if (!want || url !== want.url) return fail(`client ${w}: transfer ${done} was ${url}, expected ${want?.url}`);
      if (status !== 200 || (want.size >= 0 && bytes !== want.size)) return fail(`client ${w}: ${url}: status ${status}, ${bytes} bytes${want.size >= 0 ? ` of ${want.size}` : ''}`);
      r.bytes += bytes;
      r.connects += connects;
      if (want.kind === 'manifest') r.manifestGets++;
      else {
        r.blobGets++;
        r.latencyMs.push(total * 1000);
        r.ttfbMs.push(ttfb * 1000);
      }
      if (done % perPass === 0) r.passesDone++;
    });
    // Client 0's bodies arrive back to back, in plan order: split by size and hash each.
    let hashing: Promise<void> = Promise.resolve();
    if (w === 0) {
      hashing = (async () => {
        let i = 0;
        let h = createHash('sha256');
        let got = 0;
        const next = () => {
          const d = `sha256:${h.digest('hex')}`;
          const want = plan[i]!;
          if (d !== want.digest) fail(`client 0: ${want.url}: body hashes to ${d}`);
          else r.hashed++;
          i++;
          h = createHash('sha256');
          got = 0;
        };
        const sizeOf = (k: number) => {
          const p = plan[k]!;
          return p.size >= 0 ? p.size : o.manifests.find((m) => p.digest === m.digest)!.size;
        };
        for await (const chunk of p.stdout! as AsyncIterable<Buffer>) {
          let c = chunk;
          while (c.length && i < plan.length) {
            const take = Math.min(c.length, sizeOf(i) - got);
            h.update(c.subarray(0, take));
            got += take;
            c = c.subarray(take);
            if (got === sizeOf(i)) next();
          }
          if (c.length) fail('client 0: more body bytes than the plan holds');
        }
      })();
    }
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => p.once('close', (code, signal) => resolve({ code, signal })));
    return { p, w, exited, hashing, errText: () => errText };
  });
  let cappedAt: bigint | undefined;
  const timer = setTimeout(() => {
    r.capped = true;
    cappedAt = process.hrtime.bigint();
    for (const c of procs) if (c.p.exitCode === null) c.p.kill('SIGTERM');
  }, o.maxSecs * 1000);
  try {
    for (const c of procs) {
      const { code, signal } = await c.exited;
      await c.hashing;
      if (code !== 0 && !(r.capped && signal === 'SIGTERM')) fail(`client ${c.w}: curl exited with ${code ?? signal}: ${c.errText().trim()}`);
    }
  } finally {
    clearTimeout(timer);
    for (const c of procs) if (c.p.exitCode === null) c.p.kill('SIGKILL');
  }
  // A capped phase counts the transfers that finished before the cap, over the time up to it.
  r.secs = Number((cappedAt ?? process.hrtime.bigint()) - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  r.benchCpuSecs = (cpu.user + cpu.system) / 1e6;
  r.clientCpuSecs = childCpuSecs() - child0;
  r.machineCpuSecs = machineBusySecs() - mach0;
  if (failures.length) throw new Error(`${o.base}: the load failed:\n  ${failures.join('\n  ')}`);
  return r;
}

export function percentile(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

const statusField = (pid: number, field: string): number | undefined => {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
};

export const rssBytes = (pid: number) => statusField(pid, 'VmRSS');
export const hwmBytes = (pid: number) => statusField(pid, 'VmHWM');

/** utime + stime of a process (all its threads), in seconds. */
export function cpuSecs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which may hold spaces, in parentheses.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // USER_HZ is 100 on Linux
}

/** Reads VmRSS of `pid` every `everyMs`; stop() returns the first reading, the peak and the number of samples. */
export function sampleRss(pid: number, everyMs = 100): { stop(): { start: number; peak: number; samples: number } } {
  const start = rssBytes(pid) ?? NaN;
  let peak = 0;
  let samples = 0;
  const take = () => {
    const v = rssBytes(pid);
    if (v !== undefined) {
      samples++;
      if (v > peak) peak = v;
    }
  };
  take();
  const t = setInterval(take, everyMs);
  return {
    stop() {
      clearInterval(t);
      take();
      return { start, peak, samples };
    },
  };
}

/** The children of `pid` (a cluster primary's workers). */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** sampleRss over several processes: the peak of each, and the peak of their sum. */
export function sampleRssAll(pids: number[], everyMs = 100): { stop(): { start: number; peak: number; each: Map<number, number>; samples: number } } {
  const sum = () => pids.reduce((a, p) => a + (rssBytes(p) ?? 0), 0);
  const start = sum();
  const each = new Map<number, number>(pids.map((p) => [p, 0]));
  let peak = 0;
  let samples = 0;
  const take = () => {
    let total = 0;
    for (const p of pids) {
      const v = rssBytes(p) ?? 0;
      total += v;
      if (v > each.get(p)!) each.set(p, v);
    }
    samples++;
    if (total > peak) peak = total;
  };
  take();
  const t = setInterval(take, everyMs);
  return {
    stop() {
      clearInterval(t);
      take();
      return { start, peak, each, samples };
    },
  };
}
