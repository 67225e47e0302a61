/**
 * bench/build: a warm-cache `ferry bundle build` of ~1 GiB against `tar cf` of the same cached
 * files (the limit: one pass of reading and writing), side by side in one run; plus ferry's peak RSS.
 *   npm run bench:build [-- --mb 1024 --files 200 --runs 3 --node /usr/bin/node --node /path/to/node24]
 * Each --node runs ferry under that Node (default: the one running the bench), in turn with tar.
 * Every timed command starts after a `sync` (untimed), so none pays for another's dirty pages.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FERRY as ferry, goal, lockedBenchSpec, machine, median as med, numArg, timed } from './content.js';

const totalMb = numArg('mb', 1024);
const files = numArg('files', 200);
const runs = numArg('runs', 3);
const GOAL = 1.3;
const nodes = process.argv.flatMap((a, i) => (a === '--node' && process.argv[i + 1] ? [process.argv[i + 1]!] : []));
if (!nodes.length) nodes.push(process.execPath);
const versionOf = (node: string) => execFileSync(node, ['--version'], { encoding: 'utf8' }).trim();

const work = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-bench-build-'));
try {
  const { spec, env, key } = await lockedBenchSpec(work, totalMb, files);
  const out = path.join(work, 'out.ferry.tar');
  const tarOut = path.join(work, 'tar.tar');
  const cached = path.join(work, 'cache', 'files', 'sha256');
  const build = (node: string) => [node, ferry, 'bundle', 'build', spec, '--key', key, '--out', out, '-q'];
  const tar = ['tar', '-cf', tarOut, '.'];
  const fresh = async () => {
    await fs.rm(out, { force: true });
    await fs.rm(tarOut, { force: true });
    spawnSync('sync');
  };
  // Warm: the cache (downloads, i.e. local copies, happen here), the page cache, each Node once.
  for (const node of nodes) {
    await fresh();
    timed(build(node), { env });
  }
  await fresh();
  timed(tar, { cwd: cached, env });

  const rows = nodes.map(() => [] as ReturnType<typeof timed>[]);
  const tars: ReturnType<typeof timed>[] = [];
  for (let i = 0; i < runs; i++) {
    for (const [n, node] of nodes.entries()) {
      await fresh();
      rows[n]!.push(timed(build(node), { env }));
    }
    await fresh();
    tars.push(timed(tar, { cwd: cached, env }));
  }
  const size = (await fs.stat(tarOut).catch(() => undefined))?.size;
  timed(build(nodes[0]!), { env });
  const bundle = (await fs.stat(out)).size;
  const tm = med(tars.map((r) => r.secs));
  console.log(`bench/build: ${(bundle / 1024 / 1024).toFixed(0)} MiB bundle, ${files + 1} content files, warm cache, median of ${runs}; tar of the cache ${((size ?? 0) / 1024 / 1024).toFixed(0)} MiB`);
  console.log(`  ${machine()}`);
  console.log(`  tar cf: ${tm.toFixed(2)} s wall, ${med(tars.map((r) => r.cpu)).toFixed(2)} s CPU (runs ${tars.map((r) => r.secs.toFixed(2)).join(', ')})`);
  for (const [n, node] of nodes.entries()) {
    const r = rows[n]!;
    const fm = med(r.map((x) => x.secs));
    const peak = Math.max(...r.map((x) => x.rssMb));
    const start = med([0, 1, 2].map(() => timed([node, ferry, '--version']).secs));
    const ratio = fm / tm;
    console.log(
      `  ferry under Node ${versionOf(node)}: ${fm.toFixed(2)} s wall, ${med(r.map((x) => x.cpu)).toFixed(2)} s CPU (runs ${r.map((x) => x.secs.toFixed(2)).join(', ')}); ` +
        `${ratio.toFixed(2)}× tar's time (goal ≤ ${GOAL}×), peak RSS ${peak.toFixed(0)} MB (goal < 150 MB): ${goal(ratio <= GOAL && peak < 150)}; \`ferry --version\` alone ${start.toFixed(2)} s`,
    );
  }
  console.log(`  load average at the end ${os.loadavg()[0]!.toFixed(1)}`);
} finally {
  await fs.rm(work, { recursive: true, force: true });
}
