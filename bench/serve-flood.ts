/**
 * bench/serve-flood: what a flood of clients that never read costs `ferry serve` in resident memory,
 * and how soon it is given back. The fast suite proves the bound on the buffers themselves
 * (serve-starvation: ferry_serve_buffer_bytes_peak); RSS also holds V8's heap, which shrinks only
 * when the collector runs, so its figures are measured here and never asserted in a test.
 *   npx tsx bench/serve-flood.ts [-- --clients 600 --nofile 256]
 * Reported: RssAnon before, at the peak during the flood, and every 5 s after the clients go (60 s).
 */
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { FERRY } from '../test/helpers/cli.js';
import { buildSiteBundle, metric, request } from '../test/helpers/site.js';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const CLIENTS = arg('clients', 600);
const NOFILE = arg('nofile', 256);
const MB = 1 << 20;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rssAnon = async (pid: number) => Number(/^RssAnon:\s+(\d+) kB$/m.exec(await fs.readFile(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

const work = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-bench-flood-'));
try {
  const b = await buildSiteBundle(work, { bigBytes: 64 << 20 });
  const child = spawn('prlimit', [`--nofile=${NOFILE}`, process.execPath, FERRY, 'serve', '--bundle', b.dir, '--listen', '127.0.0.1:0', '--workers', '1'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const url = await new Promise<string>((resolve) => {
    createInterface({ input: child.stderr! }).on('line', (l) => {
      const m = / on (https?:\/\/[^ ]+) \(listening/.exec(l);
      if (m) resolve(m[1]!);
    });
  });
  const port = Number(new URL(url).port);
  const blob = `/v2/fx/big/blobs/${b.big!.layer.digest}`;
  await request(`${url}${blob}`, { headers: { Range: 'bytes=0-1023' } });
  await sleep(500);
  const base = await rssAnon(child.pid!);
  let peak = base;
  const sampler = setInterval(() => void rssAnon(child.pid!).then((v) => (peak = Math.max(peak, v)), () => {}), 50);
  const clients: net.Socket[] = [];
  for (let i = 0; i < CLIENTS; i++) {
    const c = net.connect({ host: '127.0.0.1', port }, () => {
      c.write(`GET ${blob} HTTP/1.1\r\nHost: x\r\n\r\n`);
      c.pause();
    });
    c.on('error', () => {});
    clients.push(c);
    if (i % 50 === 49) await sleep(50);
  }
  await sleep(15_000);
  clearInterval(sampler);
  const buffers = metric((await request(`${url}/metrics`).catch(() => ({ text: '' }))).text || 'ferry_serve_buffer_bytes_peak 0', 'ferry_serve_buffer_bytes_peak');
  for (const c of clients) c.destroy();
  console.log(`${CLIENTS} clients that never read, open-file limit ${NOFILE}: RssAnon ${(base / MB).toFixed(1)} MB before, +${((peak - base) / MB).toFixed(1)} MB at the peak; response buffers at most ${(buffers / MB).toFixed(1)} MB`);
  for (let s = 5; s <= 60; s += 5) {
    await sleep(5000);
    console.log(`  ${s} s after the flood: +${(((await rssAnon(child.pid!)) - base) / MB).toFixed(1)} MB`);
  }
  child.kill('SIGTERM');
} finally {
  await fs.rm(work, { recursive: true, force: true });
}
