/**
 * bench/pull: ferry images pull against skopeo copy, same ~200 MB image set (6 images, a shared
 * base layer), from the distribution registry on loopback, in one run.
 *   npm run bench:pull [-- --mb 200 --runs 3]
 * Reports wall times, the ratio, and ferry's peak RSS (from /usr/bin/time).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Layout } from '../src/oci/layout.js';
import { randomLayer, writeImage } from '../fixtures/images.js';
import { pushFixtures, startRegistry } from '../fixtures/peers.js';
import { FERRY, median as med, numArg } from './content.js';

const totalMb = numArg('mb', 200);
const runs = numArg('runs', 3);

const work = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-bench-'));
const reg = await startRegistry();
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
  const names = Object.keys(images);
  const spec = path.join(work, 'bundle-spec', 'bench.yaml');
  await fs.mkdir(path.dirname(spec), { recursive: true });
  await fs.writeFile(spec, `apiVersion: ferry.dev/v1alpha1\nkind: BundleSpec\nmetadata: {name: bench, version: 0.1.0}\nspec:\n  platforms: [linux/amd64]\n  images:\n${names.map((n) => `    - ${reg.host}/bench/${n}`).join('\n')}\n`);
  const lock = path.join(work, 'images.lock');
  execFileSync(process.execPath, [FERRY, 'lock', spec, '--lock', lock, '-q']);

  const timed = (cmd: string[], env: NodeJS.ProcessEnv = {}) => {
    const t0 = process.hrtime.bigint();
    const r = spawnSync('/usr/bin/time', ['-f', '%M', ...cmd], { env: { ...process.env, ...env }, encoding: 'utf8' });
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    if (r.status !== 0) throw new Error(`${cmd.join(' ')} failed: ${r.stderr}`);
    const rssKb = Number(r.stderr.trim().split('\n').pop());
    return { secs, rssMb: rssKb / 1024 };
  };

  const rows: { ferry: number; skopeo: number; rss: number }[] = [];
  for (let run = 0; run < runs; run++) {
    const fdir = path.join(work, `ferry-${run}`);
    const f = timed([process.execPath, FERRY, 'images', 'pull', spec, '--lock', lock, '--out', fdir, '-q'], { FERRY_CACHE_DIR: path.join(work, `cache-${run}`) });
    const sdir = path.join(work, `skopeo-${run}`);
    const t0 = process.hrtime.bigint();
    for (const n of names) execFileSync('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${reg.host}/bench/${n}`, `oci:${sdir}:${n}`]);
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    rows.push({ ferry: f.secs, skopeo: s, rss: f.rssMb });
    await fs.rm(fdir, { recursive: true, force: true });
    await fs.rm(sdir, { recursive: true, force: true });
    await fs.rm(path.join(work, `cache-${run}`), { recursive: true, force: true });
  }
  const fm = med(rows.map((r) => r.ferry));
  const sm = med(rows.map((r) => r.skopeo));
  console.log(`bench/pull: ${names.length} images, ~${totalMb} MB, ${runs} runs (median)`);
  for (const [i, r] of rows.entries()) console.log(`  run ${i + 1}: ferry ${r.ferry.toFixed(2)} s, skopeo ${r.skopeo.toFixed(2)} s, ferry peak RSS ${r.rss.toFixed(0)} MB`);
  console.log(`  ferry ${fm.toFixed(2)} s vs skopeo ${sm.toFixed(2)} s: ratio ${(fm / sm).toFixed(2)}× (goal ≤ 0.5×); ferry peak RSS ${Math.max(...rows.map((r) => r.rss)).toFixed(0)} MB (goal < 150 MB)`);
} finally {
  await reg.stop();
  await fs.rm(work, { recursive: true, force: true });
}
