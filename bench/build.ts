/**
 * bench/build: a warm-cache `ferry bundle build` of ~1 GB against `tar cf` of the same cached
 * files (the limit: one pass of reading and writing), in one run; plus ferry's peak RSS.
 *   npm run bench:build [-- --mb 1024 --files 200]
 */
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FERRY as ferry, lockedBenchSpec, median as med, numArg, timed } from './content.js';

const totalMb = numArg('mb', 1024);
const files = numArg('files', 200);
const runs = numArg('runs', 3);

const work = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-bench-build-'));
try {
  const { spec, env, key } = await lockedBenchSpec(work, totalMb, files);
  const out = path.join(work, 'out.ferry.tar');
  // Warm the cache (downloads, i.e. local copies, happen here, untimed).
  execFileSync(ferry, ['bundle', 'build', spec, '--key', key, '--out', out, '-q'], { env });
  const cached = path.join(work, 'cache', 'files', 'sha256');
  const rows: { ferry: number; tar: number; rss: number }[] = [];
  for (let i = 0; i < runs; i++) {
    await fs.rm(out, { force: true });
    const f = timed([process.execPath, ferry, 'bundle', 'build', spec, '--key', key, '--out', out, '-q'], { env });
    await fs.rm(path.join(work, 'tar.tar'), { force: true });
    const t = timed(['tar', '-cf', path.join(work, 'tar.tar'), '.'], { cwd: cached, env });
    rows.push({ ferry: f.secs, tar: t.secs, rss: f.rssMb });
  }
  const size = (await fs.stat(out)).size;
  const fm = med(rows.map((r) => r.ferry));
  const tm = med(rows.map((r) => r.tar));
  console.log(`bench/build: ${(size / 1024 / 1024).toFixed(0)} MiB bundle, ${files + 1} content files, warm cache, median of ${runs}`);
  for (const [i, r] of rows.entries()) console.log(`  run ${i + 1}: ferry ${r.ferry.toFixed(2)} s, tar cf ${r.tar.toFixed(2)} s, ferry peak RSS ${r.rss.toFixed(0)} MB`);
  console.log(`  ferry ${fm.toFixed(2)} s vs tar cf ${tm.toFixed(2)} s: ${(fm / tm).toFixed(2)}× tar's time (goal ≤ 1.2×); peak RSS ${Math.max(...rows.map((r) => r.rss)).toFixed(0)} MB (goal < 150 MB)`);
} finally {
  await fs.rm(work, { recursive: true, force: true });
}
