/**
 * bench/pull: ferry images pull against skopeo copy (image by image, as it works), same ~200 MB
 * image set (6 images, a shared base layer), from the distribution registry, in one run.
 *   npm run bench:pull [-- --mb 200 --runs 3] [--wan [--delay-ms 40 --mbps 20]]
 * Plain: the registry on loopback (goal ≤ 0.8× skopeo's time). --wan: the registry behind
 * bench/wan-proxy.ts, the stand-in for the internet, which adds 40 ms to every request and caps
 * each connection at 20 MB/s (goal ≤ 0.5×). Reports medians, the ratio and ferry's peak RSS.
 */
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Layout } from '../src/oci/layout.js';
import { randomLayer, writeImage } from '../fixtures/images.js';
import { pushFixtures, startRegistry } from '../fixtures/peers.js';
import { FERRY, goal, machine, median as med, numArg, timed } from './content.js';
import { startWanProxy } from './wan-proxy.js';

const totalMb = numArg('mb', 200);
const runs = numArg('runs', 3);
const wan = process.argv.includes('--wan');
const link = { delayMs: numArg('delay-ms', 40), bytesPerSec: numArg('mbps', 20) * 1e6 };
const GOAL = wan ? 0.5 : 0.8;

const work = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-bench-'));
const reg = await startRegistry();
const proxy = wan ? await startWanProxy(reg.host, link) : undefined;
try {
  const store = await Layout.open(path.join(work, 'fx'));
  const mb = (n: number) => Math.round(n * 1024 * 1024);
  const base = await randomLayer(store, 'bench-base', mb(totalMb * 0.2));
  const images: Record<string, import('../src/oci/media.js').Descriptor> = {};
  for (let i = 0; i < 6; i++) {
    const own = [await randomLayer(store, `bench-${i}-a`, mb((totalMb * 0.8) / 6 / 2)), await randomLayer(store, `bench-${i}-b`, mb((totalMb * 0.8) / 6 / 2))];
    const { platform: _p, ...d } = await writeImage(store, { platform: 'linux/amd64', layers: [base, ...own] });
    images[`app${i}:v1`] = d;
  }
  await pushFixtures({ store, images, bytes: 0 }, reg.host, 'bench');
  const host = proxy?.host ?? reg.host;
  const names = Object.keys(images);
  const spec = path.join(work, 'bundle-spec', 'bench.yaml');
  await fs.mkdir(path.dirname(spec), { recursive: true });
  await fs.writeFile(spec, `apiVersion: ferry.dev/v1alpha1\nkind: BundleSpec\nmetadata: {name: bench, version: 0.1.0}\nspec:\n  platforms: [linux/amd64]\n  images:\n${names.map((n) => `    - ${host}/bench/${n}`).join('\n')}\n`);
  const lock = path.join(work, 'images.lock');
  execFileSync(process.execPath, [FERRY, 'lock', spec, '--lock', lock, '-q']);

  const rows: { ferry: number; skopeo: number; rss: number }[] = [];
  for (let run = 0; run < runs; run++) {
    const fdir = path.join(work, `ferry-${run}`);
    const f = timed([process.execPath, FERRY, 'images', 'pull', spec, '--lock', lock, '--out', fdir, '-q'], { env: { ...process.env, FERRY_CACHE_DIR: path.join(work, `cache-${run}`) } });
    const sdir = path.join(work, `skopeo-${run}`);
    const t0 = process.hrtime.bigint();
    for (const n of names) execFileSync('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${host}/bench/${n}`, `oci:${sdir}:${n}`]);
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    rows.push({ ferry: f.secs, skopeo: s, rss: f.rssMb });
    await fs.rm(fdir, { recursive: true, force: true });
    await fs.rm(sdir, { recursive: true, force: true });
    await fs.rm(path.join(work, `cache-${run}`), { recursive: true, force: true });
  }
  const fm = med(rows.map((r) => r.ferry));
  const sm = med(rows.map((r) => r.skopeo));
  const peak = Math.max(...rows.map((r) => r.rss));
  const where = proxy ? `over the WAN stand-in (bench/wan-proxy.ts: +${link.delayMs} ms per request, ${link.bytesPerSec / 1e6} MB/s per connection)` : 'on plain loopback';
  console.log(`bench/pull: ${names.length} images, ~${totalMb} MB, ${where}, median of ${runs}`);
  console.log(`  ${machine()}`);
  for (const [i, r] of rows.entries()) console.log(`  run ${i + 1}: ferry ${r.ferry.toFixed(2)} s, skopeo ${r.skopeo.toFixed(2)} s, ferry peak RSS ${r.rss.toFixed(0)} MB`);
  const ratio = fm / sm;
  console.log(`  ferry ${fm.toFixed(2)} s vs skopeo ${sm.toFixed(2)} s: ${ratio.toFixed(2)}× skopeo's time (goal ≤ ${GOAL}×); ferry peak RSS ${peak.toFixed(0)} MB (goal < 150 MB): ${goal(ratio <= GOAL && peak < 150)}`);
} finally {
  await proxy?.stop();
  await reg.stop();
  await fs.rm(work, { recursive: true, force: true });
}
