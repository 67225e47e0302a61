/**
 * bench/verify: `ferry bundle verify` against `sha256sum -c` over the same content, in one run.
 *   npm run bench:verify [-- --mb 512 --files 400 --runs 3]
 * Both read from the page cache (each runs once untimed first), then alternate; medians of --runs.
 * Reported: throughput of each, the ratio against the goal, ferry's peak RSS, and the same pinned
 * to one core with taskset (where hashing on workers cannot help).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FERRY as ferry, goal, lockedBenchSpec, machine, median as med, numArg, timed } from './content.js';

const totalMb = numArg('mb', 512);
const files = numArg('files', 400);
const runs = numArg('runs', 3);

const work = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-bench-verify-'));
try {
  const { spec, env, key, pub } = await lockedBenchSpec(work, totalMb, files);
  const bundle = path.join(work, 'bench.ferry.tar');
  execFileSync(ferry, ['bundle', 'build', spec, '--key', key, '--out', bundle, '-q'], { env });
  const x = path.join(work, 'x');
  await fs.mkdir(x);
  execFileSync('tar', ['-xf', bundle, '-C', x]);
  const size = (await fs.stat(bundle)).size;

  const ferryCmd = [process.execPath, ferry, 'bundle', 'verify', bundle, '--trust', pub, '-q'];
  const sumCmd = ['sha256sum', '-c', '--quiet', 'checksums.txt'];
  const mbps = (s: number) => size / 1024 / 1024 / s;
  console.log(`bench/verify: ${(size / 1024 / 1024).toFixed(0)} MiB bundle, ${files + 1} content files (+ the signed table), warm page cache, median of ${runs}`);
  console.log(`  ${machine()}`);
  const report = (label: string, pin: string[], goalX?: number) => {
    timed([...pin, ...ferryCmd], { env });
    timed([...pin, ...sumCmd], { cwd: x, env });
    const f: number[] = [];
    const s: number[] = [];
    const rss: number[] = [];
    for (let i = 0; i < runs; i++) {
      const r = timed([...pin, ...ferryCmd], { env });
      f.push(r.secs);
      rss.push(r.rssMb);
      s.push(timed([...pin, ...sumCmd], { cwd: x, env }).secs);
    }
    const fm = med(f);
    const sm = med(s);
    const ratio = sm / fm;
    const peak = Math.max(...rss);
    const verdict = goalX === undefined ? '' : ` (goal ≥ ${goalX}×, peak RSS < 150 MB: ${goal(ratio >= goalX && peak < 150)})`;
    console.log(`  ${label}: ferry verify ${fm.toFixed(2)} s (${mbps(fm).toFixed(0)} MiB/s), sha256sum -c ${sm.toFixed(2)} s (${mbps(sm).toFixed(0)} MiB/s): ferry at ${ratio.toFixed(2)}× sha256sum's throughput; ferry peak RSS ${peak.toFixed(0)} MB${verdict}`);
  };
  report('both cores', [], 1.6);
  report('one core (taskset -c 0)', ['taskset', '-c', '0']);
  // CPU use of ferry with both cores available: user+sys over wall time.
  const t = spawnSync('/usr/bin/time', ['-f', '%e %U %S %P', ...ferryCmd], { env, encoding: 'utf8' });
  const [wall, user, sys, pct] = t.stderr.trim().split('\n').pop()!.split(' ');
  console.log(`  ferry CPU: wall ${wall} s, user ${user} s, sys ${sys} s, ${pct} of one core`);
} finally {
  await fs.rm(work, { recursive: true, force: true });
}
