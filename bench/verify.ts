/**
 * bench/verify: `ferry bundle verify` against `sha256sum -c` over the same content, in one run.
 *   npm run bench:verify [-- --mb 512 --files 400]
 * Both read from the page cache (each runs once untimed first). Reported: throughput of each, the
 * ratio, and the same pinned to one core with taskset.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FERRY as ferry, lockedBenchSpec, median as med, numArg } from './content.js';

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

  const time = (cmd: string[], cwd?: string) => {
    const t0 = process.hrtime.bigint();
    const r = spawnSync(cmd[0]!, cmd.slice(1), { cwd, stdio: ['ignore', 'ignore', 'pipe'], env });
    if (r.status !== 0) throw new Error(`${cmd.join(' ')}: ${r.stderr}`);
    return Number(process.hrtime.bigint() - t0) / 1e9;
  };
  const ferryCmd = [process.execPath, ferry, 'bundle', 'verify', bundle, '--trust', pub, '-q'];
  const sumCmd = ['sha256sum', '-c', '--quiet', 'checksums.txt'];
  const mbps = (s: number) => size / 1024 / 1024 / s;
  const report = (label: string, pin: string[]) => {
    time([...pin, ...ferryCmd]);
    time([...pin, ...sumCmd], x);
    const f: number[] = [];
    const s: number[] = [];
    for (let i = 0; i < runs; i++) {
      f.push(time([...pin, ...ferryCmd]));
      s.push(time([...pin, ...sumCmd], x));
    }
    const fm = med(f);
    const sm = med(s);
    console.log(`  ${label}: ferry verify ${fm.toFixed(2)} s (${mbps(fm).toFixed(0)} MiB/s), sha256sum -c ${sm.toFixed(2)} s (${mbps(sm).toFixed(0)} MiB/s): ferry at ${(sm / fm).toFixed(2)}× sha256sum's throughput (goal ≥ 0.9×)`);
  };
  console.log(`bench/verify: ${(size / 1024 / 1024).toFixed(0)} MiB bundle, ${files + 1} content files (+ the signed table), median of ${runs}`);
  report('both cores', []);
  report('one core (taskset -c 0)', ['taskset', '-c', '0']);
  // CPU use of ferry with both cores available: user+sys over wall time.
  const t = spawnSync('/usr/bin/time', ['-f', '%e %U %S %P', ...ferryCmd], { env, encoding: 'utf8' });
  const [wall, user, sys, pct] = t.stderr.trim().split('\n').pop()!.split(' ');
  console.log(`  ferry CPU: wall ${wall} s, user ${user} s, sys ${sys} s, ${pct} of one core`);
} finally {
  await fs.rm(work, { recursive: true, force: true });
}
