import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
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
  for (const c of randomChunks('node', big)) await fh.write(c);
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
