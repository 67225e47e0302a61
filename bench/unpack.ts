/**
 * bench/unpack: `ferry bundle unpack` (verifying every entry as it writes) against `tar xf` of the
 * same tar, warm (the bundle is read once first, so both read it from the page cache), onto the
 * same disk, in one run. Content is generated here (--mb, default 2 GiB) and removed afterwards.
 *   npm run bench:unpack [-- --mb 2048 --files 200 --runs 3]
 * Each timed run starts from an empty destination after `sync`, so neither inherits the other's
 * dirty pages. Reported: medians, the ratio against the goal, and ferry's peak RSS.
 */
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FERRY as ferry, goal, lockedBenchSpec, machine, median as med, numArg, timed } from './content.js';

const totalMb = numArg('mb', 2048);
const files = numArg('files', 200);
const runs = numArg('runs', 3);
const GOAL = 1.3;

const work = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-bench-unpack-'));
try {
  const { spec, env, key, pub } = await lockedBenchSpec(work, totalMb, files);
  const bundle = path.join(work, 'bench.ferry.tar');
  execFileSync(ferry, ['bundle', 'build', spec, '--key', key, '--out', bundle, '-q'], { env });
  // Only the bundle is needed from here on: free the disk the sources and the cache took.
  for (const d of ['vendor', 'cache']) await fs.rm(path.join(work, d), { recursive: true, force: true });
  execFileSync('cat', [bundle], { stdio: ['ignore', 'ignore', 'inherit'] });
  const size = (await fs.stat(bundle)).size;

  const fdest = path.join(work, 'ferry-out');
  const tdest = path.join(work, 'tar-out');
  const fresh = async (dir: string) => {
    await fs.rm(dir, { recursive: true, force: true });
    execFileSync('sync');
  };
  const rows: { ferry: number; tar: number; rss: number; fcpu: number; tcpu: number }[] = [];
  for (let i = 0; i < runs; i++) {
    await fresh(fdest);
    const f = timed([process.execPath, ferry, 'bundle', 'unpack', bundle, '--to', fdest, '--trust', pub, '-q'], { env });
    await fresh(tdest);
    await fs.mkdir(tdest);
    const t = timed(['tar', '-xf', bundle, '-C', tdest]);
    rows.push({ ferry: f.secs, tar: t.secs, rss: f.rssMb, fcpu: f.cpu, tcpu: t.cpu });
  }
  const fm = med(rows.map((r) => r.ferry));
  const tm = med(rows.map((r) => r.tar));
  const peak = Math.max(...rows.map((r) => r.rss));
  const mibs = (s: number) => (size / 1024 / 1024 / s).toFixed(0);
  console.log(`bench/unpack: ${(size / 1024 / 1024).toFixed(0)} MiB bundle, ${files + 1} content files, warm page cache, same disk, median of ${runs}`);
  console.log(`  ${machine()}`);
  // CPU seconds show where the time goes when the cores are shared: ferry also hashes every byte.
  for (const [i, r] of rows.entries()) console.log(`  run ${i + 1}: ferry unpack ${r.ferry.toFixed(2)} s (${r.fcpu.toFixed(2)} CPU-s), tar xf ${r.tar.toFixed(2)} s (${r.tcpu.toFixed(2)} CPU-s), ferry peak RSS ${r.rss.toFixed(0)} MB`);
  const ratio = fm / tm;
  console.log(`  ferry unpack ${fm.toFixed(2)} s (${mibs(fm)} MiB/s, every entry verified) vs tar xf ${tm.toFixed(2)} s (${mibs(tm)} MiB/s): ${ratio.toFixed(2)}× tar's time (goal ≤ ${GOAL}×); peak RSS ${peak.toFixed(0)} MB (goal < 150 MB): ${goal(ratio <= GOAL && peak < 150)}`);
} finally {
  await fs.rm(work, { recursive: true, force: true });
}
