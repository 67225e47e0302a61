import { elfStandin } from '../../fixtures/elf.js';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { randomChunks } from '../../fixtures/images.js';
import { sha256Hex } from '../../src/util/digest.js';
import { writeBundleSpec, type SpecBinary } from '../../fixtures/spec.js';
import { ferry, type CliResult } from './cli.js';

/**
 * A small project a real `ferry bundle build` packs: local binaries (pinned by sha256), a local
 * Node runtime, and optionally images from a registry; its own cache, key and lock.
 */
export interface MiniProject {
  dir: string;
  specFile: string;
  env: NodeJS.ProcessEnv;
  key: string;
  pub: string;
  cache: string;
  /** sha256 hex of each binary, by name. */
  binaries: Record<string, string>;
  build(out: string, args?: string[]): Promise<CliResult>;
}

export interface MiniOptions {
  images?: string[];
  /** name → size in bytes (default: two of 300 kB). */
  binaries?: Record<string, number>;
  runtimeSize?: number;
}

export async function miniProject(dir: string, o: MiniOptions = {}): Promise<MiniProject> {
  const vendor = path.join(dir, 'vendor');
  await fs.mkdir(vendor, { recursive: true });
  const binaries: Record<string, string> = {};
  const specBinaries: SpecBinary[] = [];
  for (const [name, size] of Object.entries(o.binaries ?? { tool: 300_000, helper: 300_000 })) {
    const bytes = Buffer.concat([...randomChunks(`${dir}/${name}`, size)]);
    await fs.writeFile(path.join(vendor, name), bytes);
    const sha = (binaries[name] = sha256Hex(bytes));
    specBinaries.push({ name, version: 'v1.0.0', url: `vendor/${name}`, sha256: { 'linux/amd64': sha } });
  }
  // An ELF header for amd64 (the build checks the runtime's architecture), then random bytes.
  await fs.writeFile(path.join(vendor, 'node'), Buffer.concat([elfStandin('amd64'), ...randomChunks(`${dir}/node`, o.runtimeSize ?? 200_000)]));
  const specFile = await writeBundleSpec(dir, {
    name: 'mini',
    platforms: ['linux/amd64'],
    images: (o.images ?? []).map((ref) => ({ ref, platforms: ['linux/amd64'] })),
    runtime: { 'linux/amd64': 'vendor/node' },
    binaries: specBinaries,
  });
  const cache = path.join(dir, 'cache');
  const env = { FERRY_CACHE_DIR: cache };
  const keys = path.join(dir, 'keys');
  const k = await ferry(['key', 'generate', '--out', keys, '-q'], { env });
  if (k.code !== 0) throw new Error(`key generate: ${k.stderr}`);
  const l = await ferry(['lock', specFile, '-q'], { env });
  if (l.code !== 0) throw new Error(`lock: ${l.stderr}`);
  const key = path.join(keys, 'ferry.key');
  return {
    dir,
    specFile,
    env,
    key,
    pub: path.join(keys, 'ferry.pub'),
    cache,
    binaries,
    build: (out, args = []) => ferry(['bundle', 'build', specFile, '--key', key, '--out', out, ...args], { env }),
  };
}

/** Every file below `dir`, relative, sorted. */
export async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string) => {
    let entries;
    try {
      entries = await fs.readdir(path.join(dir, rel), { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(r);
      else out.push(r);
    }
  };
  await walk('');
  return out.sort();
}
