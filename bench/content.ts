import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { elfStandin } from '../fixtures/elf.js';
import { randomChunks } from '../fixtures/images.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const FERRY = path.join(ROOT, 'bin', 'ferry');

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * A spec whose bundle holds `files` binaries of equal size plus one runtime-sized file, `totalMb`
 * in all, written under `work` (vendor/ and bundle-spec/bench.yaml).
 */
export async function benchSpec(work: string, totalMb: number, files: number): Promise<string> {
  const bins = path.join(work, 'vendor');
  await fs.mkdir(bins, { recursive: true });
  const big = Math.floor(totalMb * 0.25 * 1024 * 1024);
  const each = Math.floor((totalMb * 1024 * 1024 - big) / files);
  const lines: string[] = [];
  for (let i = 0; i < files; i++) {
    const h = createHash('sha256');
    const fh = await fs.open(path.join(bins, `f${i}`), 'w');
    for (const c of randomChunks(`v${i}`, each)) {
      h.update(c);
      await fh.write(c);
    }
    await fh.close();
    lines.push(`    - {name: f${i}, version: v1, url: vendor/f${i}, sha256: {linux/amd64: ${h.digest('hex')}}}`);
  }
  const fh = await fs.open(path.join(bins, 'node'), 'w');
  // An ELF header first: the build refuses a runtime that is not a binary for its platform.
  const head = elfStandin('amd64');
  await fh.write(head);
  for (const c of randomChunks('node', big - head.length)) await fh.write(c);
  await fh.close();
  await fs.mkdir(path.join(work, 'bundle-spec'), { recursive: true });
  const spec = path.join(work, 'bundle-spec', 'bench.yaml');
  await fs.writeFile(spec, `apiVersion: ferry.dev/v1alpha1\nkind: BundleSpec\nmetadata: {name: bench, version: 0.1.0}\nspec:\n  platforms: [linux/amd64]\n  images: []\n  runtime: {node: {linux/amd64: vendor/node}}\n  binaries:\n${lines.join('\n')}\n`);
  return spec;
}

/** benchSpec, plus a signing key and the lock: what a bundle build of it needs, with its own cache. */
export async function lockedBenchSpec(work: string, totalMb: number, files: number): Promise<{ spec: string; env: NodeJS.ProcessEnv; key: string; pub: string }> {
  const spec = await benchSpec(work, totalMb, files);
  const env = { ...process.env, FERRY_CACHE_DIR: path.join(work, 'cache') };
  execFileSync(FERRY, ['key', 'generate', '--out', path.join(work, 'keys'), '-q'], { env });
  execFileSync(FERRY, ['lock', spec, '-q'], { env });
  return { spec, env, key: path.join(work, 'keys', 'ferry.key'), pub: path.join(work, 'keys', 'ferry.pub') };
}

/** A numeric `--name N` flag of a benchmark, `d` when absent; it must be a positive number. */
export function numArg(name: string, d: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i > 0 ? Number(process.argv[i + 1]) : d;
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} needs a positive number`);
  return v;
}

/** The machine a figure was measured on: CPU model, cores, and whether SHA-NI is there. */
export function machine(): string {
  const info = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.*)$/m.exec(info)?.[1] ?? 'unknown CPU';
  const flags = /^flags\s*:\s*(.*)$/m.exec(info)?.[1]?.split(' ') ?? [];
  return `machine: ${model}, ${os.availableParallelism()} cores, SHA-NI ${flags.includes('sha_ni') ? 'yes' : 'no'}, load average ${os.loadavg()[0]!.toFixed(1)}`;
}

/** Runs a command under /usr/bin/time: wall seconds, CPU seconds (user+sys) and peak RSS in MB. Throws when it fails. */
export function timed(cmd: string[], o: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): { secs: number; cpu: number; rssMb: number } {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%U %S %M', ...cmd], { cwd: o.cwd, env: o.env ?? process.env, encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd.join(' ')} failed: ${r.stderr}`);
  const [user, sys, rss] = r.stderr.trim().split('\n').pop()!.split(' ').map(Number);
  return { secs, cpu: user! + sys!, rssMb: rss! / 1024 };
}

export const goal = (met: boolean) => (met ? 'goal met' : 'goal NOT met');
