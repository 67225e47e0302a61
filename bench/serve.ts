/**
 * bench/serve: `ferry serve` against the CNCF distribution registry (Debian docker-registry), both
 * over TLS on loopback with the same site certificate, serving the same ~1 GB image set, in one run.
 *   npm run bench:serve [-- --mb 1024 --clients 32 --rounds 1 --passes 1 --phase-secs 100 --workers auto --cpu-prof DIR]
 * N curl clients (one keep-alive TLS connection each) walk every manifest and pull every blob; phases
 * alternate between the two servers (F R, then R F, …). Reported: throughput of each and the
 * ratio, p50/p99 blob latency, and each server's peak RSS from /proc/<pid>/status every 100 ms: for
 * ferry, of each process (the cluster primary and its workers) and of their sum.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { randomLayer, writeImage, type Layer } from '../fixtures/images.js';
import { RegistryClient } from '../src/oci/client.js';
import { Pusher } from '../src/oci/copy.js';
import { Layout } from '../src/oci/layout.js';
import type { Descriptor } from '../src/oci/media.js';
import { initPki } from '../src/sign/pki.js';
import { sha256Hex } from '../src/util/digest.js';
import { freePort, waitFor } from '../fixtures/peers.js';
import { childPids, cpuSecs, get, hwmBytes, MANIFEST_ACCEPT, rssBytes, newAgent, percentile, runLoad, sampleRssAll, TLS13_SUITES, type BlobTarget, type LoadResult, type ManifestTarget } from './serve-load.js';
import { FERRY as ferryEntry, numArg, ROOT as root } from './content.js';

const totalMb = numArg('mb', 1024);
const clients = numArg('clients', 32);
const rounds = numArg('rounds', 1);
const passes = numArg('passes', 1);
const phaseSecs = numArg('phase-secs', 100);
const IMAGES = 8;
/** --cpu-prof DIR: ferry's processes (its workers inherit node's flags) write CPU profiles there when they stop. */
const cpuProf = process.argv.includes('--cpu-prof') ? ['--cpu-prof', '--cpu-prof-dir', path.resolve(process.argv[process.argv.indexOf('--cpu-prof') + 1]!)] : [];
const workersArg = process.argv.includes('--workers') ? process.argv[process.argv.indexOf('--workers') + 1]! : 'auto';

if (!existsSync(path.join(root, 'dist', 'ferry', 'ferry.mjs'))) throw new Error('dist/ferry/ferry.mjs is missing: run `npm run build` first');

const MiB = 1024 * 1024;
const log = (s: string) => process.stderr.write(`bench/serve: ${s}\n`);
const work = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-bench-serve-'));

// ---- processes, stopped on every exit path

interface Server {
  name: string;
  proc: ChildProcess;
  pid: number;
  /** Every process of the server: ferry's primary and its workers. */
  pids: number[];
  base: string;
  /** VmRSS once it answers, before any content was served */
  startRss?: number;
}
const procs = new Set<ChildProcess>();
async function stopProc(p: ChildProcess): Promise<void> {
  if (p.exitCode === null && p.signalCode === null) {
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 5000);
    await gone;
    clearTimeout(t);
  }
  procs.delete(p);
}
async function cleanup(): Promise<void> {
  await Promise.all([...procs].map(stopProc));
  await fs.rm(work, { recursive: true, force: true });
}
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    log(`${sig}: stopping the servers and removing ${work}`);
    void cleanup().finally(() => process.exit(130));
  });
}

async function startProc(name: string, cmd: string, args: string[], logFile: string): Promise<ChildProcess> {
  const out = await fs.open(logFile, 'w');
  const p = spawn(cmd, args, { stdio: ['ignore', out.fd, out.fd] });
  procs.add(p);
  p.once('exit', () => void out.close().catch(() => {}));
  await new Promise<void>((resolve, reject) => {
    p.once('spawn', resolve);
    p.once('error', (e) => reject(new Error(`${name}: cannot start ${cmd}: ${e.message}`)));
  });
  return p;
}

async function until(p: ChildProcess, name: string, logFile: string, ready: () => Promise<boolean>): Promise<void> {
  try {
    await waitFor(async () => {
      if (p.exitCode !== null) throw new Error('exited');
      return ready();
    }, name, 30_000);
  } catch (e) {
    throw new Error(`${name} did not come up (${(e as Error).message}); its log:\n${await fs.readFile(logFile, 'utf8').catch(() => '')}`);
  }
}

try {
  // ---- the image set: IMAGES images, 3 layers each: one base for all, one of two shared middles,
  // and one of their own (plus a config), about `totalMb` MiB of unique blobs in all.
  const t0 = Date.now();
  const bundle = path.join(work, 'bundle');
  const store = await Layout.open(path.join(bundle, 'images'));
  const mb = (f: number) => Math.round(f * totalMb * MiB);
  const base = await randomLayer(store, 'serve-base', mb(0.16));
  const mids = [await randomLayer(store, 'serve-mid-0', mb(0.12)), await randomLayer(store, 'serve-mid-1', mb(0.12))];
  const registries = ['registry.k8s.io', 'docker.io', 'quay.io', 'ghcr.io'];
  const images: { ref: string; repo: string; tag: string; desc: Descriptor }[] = [];
  for (let i = 0; i < IMAGES; i++) {
    const own: Layer = await randomLayer(store, `serve-own-${i}`, mb(0.6 / IMAGES));
    const { platform: _p, ...desc } = await writeImage(store, { platform: 'linux/amd64', layers: [base, mids[i % 2]!, own], label: `serve-${i}` });
    const repo = `bench/app${i}`;
    images.push({ ref: `${registries[i % registries.length]}/${repo}:v1`, repo, tag: 'v1', desc });
  }
  await store.addRefs(images.map((im) => ({ name: im.ref, descriptor: im.desc })));
  // What an unpacked bundle also holds (ferry serve needs only images/index.json).
  await fs.mkdir(path.join(bundle, 'files'), { recursive: true });
  await fs.writeFile(path.join(bundle, 'files', 'versions.json'), '{}\n');
  await fs.writeFile(path.join(bundle, 'checksums.txt'), `${sha256Hex('{}\n')}  files/versions.json\n${sha256Hex(await fs.readFile(path.join(bundle, 'images', 'index.json')))}  images/index.json\n`);

  // Every blob once (the shared base and middles are pulled once per pass, as a real client would),
  // under the first repository that holds it.
  const manifests: ManifestTarget[] = [];
  const blobs = new Map<string, BlobTarget>();
  for (const im of images) {
    manifests.push({ repo: im.repo, tag: im.tag, digest: im.desc.digest, size: im.desc.size, mediaType: im.desc.mediaType });
    const m = JSON.parse((await store.readBlob(im.desc.digest, 1 << 20)).toString('utf8')) as { config: Descriptor; layers: Descriptor[] };
    for (const b of [m.config, ...m.layers]) if (!blobs.has(b.digest)) blobs.set(b.digest, { repo: im.repo, digest: b.digest, size: b.size });
  }
  const blobList = [...blobs.values()];
  const setBytes = blobList.reduce((s, b) => s + b.size, 0);
  log(`image set: ${IMAGES} images, ${blobList.length} blobs, ${(setBytes / MiB).toFixed(0)} MiB (${((Date.now() - t0) / 1000).toFixed(1)} s)`);

  // ---- the site CA and a certificate for 127.0.0.1, used by both servers
  const pki = await initPki({ domain: 'bench.test', ips: ['127.0.0.1'], outDir: path.join(work, 'pki') });
  const ca = await fs.readFile(pki.caCert);

  // ---- the distribution registry: started plain to load the content with ferry's pusher, then
  // restarted with TLS on the same storage, so the measured process starts fresh as ferry does.
  const regData = path.join(work, 'regdata');
  const regCfg = (port: number, tls: boolean) =>
    // Debian's /etc/docker/registry/config.yml, without htpasswd auth (ferry serve has none), on
    // loopback, with the site certificate.
    [
      'version: 0.1',
      'log: {fields: {service: registry}}',
      `storage: {cache: {blobdescriptor: inmemory}, filesystem: {rootdirectory: ${regData}}, delete: {enabled: true}}`,
      `http: {addr: 127.0.0.1:${port}, headers: {X-Content-Type-Options: [nosniff]}${tls ? `, tls: {certificate: ${pki.cert}, key: ${pki.key}}` : ''}}`,
      'health: {storagedriver: {enabled: true, interval: 10s, threshold: 3}}',
      '',
    ].join('\n');
  {
    const port = await freePort();
    await fs.writeFile(path.join(work, 'reg-load.yml'), regCfg(port, false));
    const lf = path.join(work, 'reg-load.log');
    const p = await startProc('docker-registry (load)', 'docker-registry', ['serve', path.join(work, 'reg-load.yml')], lf);
    await until(p, 'docker-registry (load)', lf, async () => (await fetch(`http://127.0.0.1:${port}/v2/`)).status === 200);
    const t1 = Date.now();
    const pusher = new Pusher({ client: new RegistryClient({ retries: 2, backoffMs: 5 }), store, concurrency: 4 });
    for (const im of images) await pusher.push(im.desc, { repo: { registry: `127.0.0.1:${port}`, repository: im.repo }, tag: im.tag });
    log(`pushed the set into the registry with ferry's Pusher (${((Date.now() - t1) / 1000).toFixed(1)} s)`);
    await stopProc(p);
  }

  const regPort = await freePort();
  await fs.writeFile(path.join(work, 'reg.yml'), regCfg(regPort, true));
  const ferryPort = await freePort();
  const https = async (base: string) => {
    const agent = newAgent(ca, 1);
    try {
      return (await get(agent, base, '/v2/')).status === 200;
    } finally {
      agent.destroy();
    }
  };

  const regLog = path.join(work, 'registry.log');
  const regProc = await startProc('docker-registry', 'docker-registry', ['serve', path.join(work, 'reg.yml')], regLog);
  const registry: Server = { name: 'registry', proc: regProc, pid: regProc.pid!, pids: [regProc.pid!], base: `https://127.0.0.1:${regPort}` };
  await until(regProc, 'docker-registry (TLS)', regLog, () => https(registry.base));

  // node runs bin/ferry itself (it imports dist/ferry/ferry.mjs in-process), so this pid is the server.
  const ferryLog = path.join(work, 'ferry-serve.log');
  const ferryProc = await startProc('ferry serve', process.execPath, [...cpuProf, ferryEntry, 'serve', '--bundle', bundle, '--listen', `127.0.0.1:${ferryPort}`, '--tls-cert', pki.cert, '--tls-key', pki.key, '--shutdown-timeout', '2', '--workers', workersArg], ferryLog);
  const ferry: Server = { name: 'ferry serve', proc: ferryProc, pid: ferryProc.pid!, pids: [], base: `https://127.0.0.1:${ferryPort}` };
  // It says where it listens once every worker does.
  await until(ferryProc, 'ferry serve', ferryLog, async () => / on https:\/\//.test(await fs.readFile(ferryLog, 'utf8')) && https(ferry.base));
  ferry.pids = [ferry.pid, ...childPids(ferry.pid)];
  log(`ferry serve: ${ferry.pids.length === 1 ? 'one process' : `primary ${ferry.pid}, workers ${ferry.pids.slice(1).join(', ')}`}`);
  const exe = await fs.readlink(`/proc/${ferry.pid}/exe`);
  if (path.basename(exe) !== path.basename(process.execPath)) throw new Error(`pid ${ferry.pid} runs ${exe}, not node`);

  for (const s of [ferry, registry]) s.startRss = s.pids.reduce((a, p) => a + (rssBytes(p) ?? 0), 0);

  // ---- both serve identical content: every manifest by tag and every blob, sha256 checked
  // (untimed; this also warms the page cache for both storage copies).
  for (const s of [ferry, registry]) {
    const agent = newAgent(ca, 4);
    for (const m of manifests) {
      const g = await get(agent, s.base, `/v2/${m.repo}/manifests/${m.tag}`, { accept: MANIFEST_ACCEPT, hash: true });
      if (g.status !== 200 || g.digest !== m.digest || g.headers['docker-content-digest'] !== m.digest) {
        throw new Error(`${s.name} serves ${m.repo}:${m.tag} as ${g.digest} (status ${g.status}, header ${String(g.headers['docker-content-digest'])}), the set has ${m.digest}`);
      }
    }
    const queue = [...blobList];
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        for (let b = queue.shift(); b; b = queue.shift()) {
          const g = await get(agent, s.base, `/v2/${b.repo}/blobs/${b.digest}`, { hash: true });
          if (g.status !== 200 || g.digest !== b.digest || g.bytes !== b.size) throw new Error(`${s.name} serves blob ${b.digest} as ${g.digest} (${g.bytes} of ${b.size} bytes, status ${g.status})`);
        }
      }),
    );
    agent.destroy();
  }
  const tlsInfo = (base: string) =>
    new Promise<string>((resolve, reject) => {
      const u = new URL(base);
      const sock = tls.connect({ host: u.hostname, port: Number(u.port), ca, ciphers: TLS13_SUITES }, () => {
        resolve(`${sock.getProtocol()} ${sock.getCipher().standardName}`);
        sock.end();
      });
      sock.on('error', reject);
    });
  const tlsUsed = { ferry: await tlsInfo(ferry.base), registry: await tlsInfo(registry.base) };
  log(`both servers serve the same ${manifests.length} manifests and ${blobList.length} blobs (sha256 checked)`);

  // ---- the load: phases alternate F R | R F | …
  interface Phase {
    server: Server;
    load: LoadResult;
    startRss: number;
    peakRss: number;
    /** Peak RSS of each process. */
    each: Map<number, number>;
    samples: number;
    serverCpu: number;
  }
  const phases: Phase[] = [];
  const order: Server[] = [];
  for (let r = 0; r < rounds; r++) order.push(...(r % 2 === 0 ? [ferry, registry] : [registry, ferry]));
  for (const [i, s] of order.entries()) {
    log(`phase ${i + 1}/${order.length}: ${s.name}, ${clients} clients × ${passes} pass(es) of ${(setBytes / MiB).toFixed(0)} MiB (cap ${phaseSecs} s)`);
    await new Promise((r) => setTimeout(r, 1000));
    const sampler = sampleRssAll(s.pids, 100);
    const cpuOf = () => s.pids.map((p) => cpuSecs(p));
    const cpu0 = cpuOf();
    let load: LoadResult;
    let rss: { start: number; peak: number; each: Map<number, number>; samples: number };
    try {
      const onSpawn = (p: ChildProcess) => {
        procs.add(p);
        p.once('exit', () => procs.delete(p));
      };
      load = await runLoad({ base: s.base, caFile: pki.caCert, dir: work, clients, passes, maxSecs: phaseSecs, manifests, blobs: blobList, onSpawn });
    } finally {
      rss = sampler.stop();
    }
    const cpu1 = cpuOf();
    phases.push({ server: s, load, startRss: rss.start, peakRss: rss.peak, each: rss.each, samples: rss.samples, serverCpu: cpu1.reduce((a, c, i) => a + c - cpu0[i]!, 0) });
    log(
      `  ${(load.bytes / MiB / load.secs).toFixed(0)} MiB/s over ${load.secs.toFixed(1)} s${load.capped ? ' (time cap reached)' : ''}; CPU s by process: ${s.pids.map((p, i) => `${p} ${(cpu1[i]! - cpu0[i]!).toFixed(1)}`).join(', ')}`,
    );
  }

  // ---- report
  const sum = (s: Server) => {
    const ps = phases.filter((p) => p.server === s);
    const add = (f: (p: Phase) => number) => ps.reduce((a, p) => a + f(p), 0);
    const lat = ps.flatMap((p) => p.load.latencyMs);
    const ttfb = ps.flatMap((p) => p.load.ttfbMs);
    const secs = add((p) => p.load.secs);
    const serverCpu = add((p) => p.serverCpu);
    const clientCpu = add((p) => p.load.clientCpuSecs + p.load.benchCpuSecs);
    return {
      mibs: add((p) => p.load.bytes) / MiB / secs,
      bytes: add((p) => p.load.bytes),
      secs,
      blobs: add((p) => p.load.blobGets),
      hashed: add((p) => p.load.hashed),
      passes: add((p) => p.load.passesDone),
      connects: add((p) => p.load.connects),
      capped: ps.some((p) => p.load.capped),
      p50: percentile(lat, 50),
      p99: percentile(lat, 99),
      t50: percentile(ttfb, 50),
      t99: percentile(ttfb, 99),
      peak: Math.max(...ps.map((p) => p.peakRss)),
      /** The largest peak of any one process. */
      peakOne: Math.max(...ps.flatMap((p) => [...p.each.values()])),
      each: s.pids.map((pid) => Math.max(...ps.map((p) => p.each.get(pid) ?? 0))),
      rest: ps[0]!.startRss,
      samples: add((p) => p.samples),
      hwm: Math.max(...s.pids.map((p) => hwmBytes(p) ?? NaN)),
      serverCpu,
      clientCpu,
      otherCpu: Math.max(0, add((p) => p.load.machineCpuSecs) - serverCpu - clientCpu),
    };
  };
  const f = sum(ferry);
  const g = sum(registry);
  const ratio = f.mibs / g.mibs;
  const ok = (b: boolean) => (b ? 'met' : 'NOT met');
  const cores = (cpu: number, secs: number) => (cpu / secs).toFixed(2);
  const ms = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
  const ncpu = os.cpus().length;
  const lines = [
    `bench/serve: ${IMAGES} images, ${blobList.length} blobs (${(Math.min(...blobList.map((b) => b.size)) / 1024).toFixed(1)} KiB – ${(Math.max(...blobList.map((b) => b.size)) / MiB).toFixed(0)} MiB), ${(setBytes / MiB).toFixed(0)} MiB; identical digests from both servers, sha256 checked`,
    `  load: ${clients} curl clients, one keep-alive TLS connection each (HTTP/1.1, 127.0.0.1, one site certificate, TLS 1.3 suites in Go's client order; ferry ${tlsUsed.ferry}, registry ${tlsUsed.registry}), each pulling every manifest and blob; ${rounds} round(s) × ${passes} pass(es), cap ${phaseSecs} s per phase`,
    ...phases.map(
      (p, i) =>
        `  phase ${i + 1}  ${p.server.name.padEnd(11)} ${(p.load.bytes / MiB / p.load.secs).toFixed(0).padStart(5)} MiB/s  ${p.load.secs.toFixed(1).padStart(5)} s  ${p.load.blobGets} blob GETs${p.load.capped ? ' (time cap hit)' : ''}  p50 ${ms(percentile(p.load.latencyMs, 50))} ms  p99 ${ms(percentile(p.load.latencyMs, 99))} ms  peak RSS ${(p.peakRss / MiB).toFixed(0)} MiB`,
    ),
    '',
    `  ${''.padEnd(11)} ${'MiB/s'.padStart(7)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'TTFB p50/p99 ms'.padStart(16)} ${'peak RSS'.padStart(9)}   cores used: server / clients / other`,
    ...([
      ['ferry serve', f, ferry],
      ['registry', g, registry],
    ] as const).map(
      ([n, s, srv]) =>
        `  ${n.padEnd(11)} ${s.mibs.toFixed(0).padStart(7)} ${ms(s.p50).padStart(8)} ${ms(s.p99).padStart(8)} ${`${ms(s.t50)} / ${ms(s.t99)}`.padStart(16)} ${`${(s.peak / MiB).toFixed(0)} MiB`.padStart(9)}   ${cores(s.serverCpu, s.secs)} / ${cores(s.clientCpu, s.secs)} / ${cores(s.otherCpu, s.secs)}\n` +
        `  ${''.padEnd(11)} ${(s.bytes / MiB / 1024).toFixed(1)} GiB in ${s.secs.toFixed(1)} s, ${s.blobs} blob GETs, ${s.passes}/${clients * rounds * passes} full passes${s.capped ? ' (time-capped)' : ''}, ${s.connects} TLS connections, ${s.hashed} bodies sha256-checked; ` +
        `RSS ${((srv.startRss ?? NaN) / MiB).toFixed(0)} MiB when started, ${(s.rest / MiB).toFixed(0)} MiB before load, VmHWM ${(s.hwm / MiB).toFixed(0)} MiB`,
    ),
    '',
    `  ferry/registry throughput: ${ratio.toFixed(2)}×  (goal ≥ 1.0×: ${ok(ratio >= 1)})`,
    `  ferry serve peak RSS per process: ${(f.peakOne / MiB).toFixed(0)} MiB  (goal < 150 MiB: ${ok(f.peakOne < 150 * MiB)}); ` +
      `${f.each.length === 1 ? 'one process' : `primary ${(f.each[0]! / MiB).toFixed(0)} MiB, workers ${f.each.slice(1).map((b) => (b / MiB).toFixed(0)).join(' / ')} MiB, total ${(f.peak / MiB).toFixed(0)} MiB`}; registry ${(g.peak / MiB).toFixed(0)} MiB`,
    `  note: clients and server share this host's ${ncpu} cores (${os.cpus()[0]?.model.trim() ?? '?'}); "other" is CPU used by processes outside the benchmark.`,
    `        ferry serve runs ${ferry.pids.length === 1 ? 'one node process' : `a primary and ${ferry.pids.length - 1} workers (--workers ${workersArg})`}; the registry (Go) may use every core. RSS: VmRSS of each server process every 100 ms during load; "peak RSS" above is their sum, VmHWM the largest process's.`,
    '        Latency: request sent → last body byte, over blobs of every size; TTFB: → first byte.',
  ];
  console.log(lines.join('\n'));
} finally {
  await cleanup();
}
