import path from 'node:path';
import { Codes, IntegrityError, UsageError } from '../errors.js';
import { downloadFileName, expandTemplate, type BinarySpec } from '../spec/spec.js';
import { limiter } from '../util/limit.js';
import { fetchTextCached, fetchToCache, type FetchOptions } from './fetch.js';
import { binaryPath } from './format.js';

export interface FetchedFile {
  name: string;
  version: string;
  platform: string;
  url: string;
  sha256: string;
  size: number;
  /** Where it sits in the cache. */
  source: string;
  /** Where it goes in the bundle (binaryPath). */
  bundlePath: string;
  archive: boolean;
}

/**
 * Finds the sha256 for `fileName` in a checksum document: a bare hex digest (kubeadm.sha256), or
 * `sha256sum` lines where the entry for the file name wins (SHA256SUMS, runc.sha256sum).
 */
function pickChecksum(doc: string, fileName: string, docUrl: string): string {
  const lines = doc.split('\n').map((l) => l.trim()).filter(Boolean);
  const entries = lines.map((l) => /^([a-fA-F0-9]{64})(?:\s+\*?(.+))?$/.exec(l)).filter((m): m is RegExpExecArray => !!m);
  if (entries.length === 1 && !entries[0]![2]) return entries[0]![1]!.toLowerCase();
  const hit = entries.find((m) => m[2] && path.posix.basename(m[2].trim()) === fileName);
  if (hit) return hit[1]!.toLowerCase();
  if (entries.length === 1) return entries[0]![1]!.toLowerCase();
  throw new UsageError(Codes.checksumMissing, `${docUrl} has no sha256 for ${fileName}`, {
    hint: 'Check checksumUrl in the spec: it must list the downloaded file by name, or hold a single digest.',
  });
}

export async function fetchBinaries(bins: BinarySpec[], platforms: string[], fileCache: string, o: FetchOptions = {}): Promise<FetchedFile[]> {
  const limit = limiter(4);
  const jobs: Promise<FetchedFile>[] = [];
  for (const b of bins) {
    for (const platform of platforms) {
      jobs.push(
        limit(async () => {
          const url = expandTemplate(b.url, b.version, platform);
          const fileName = downloadFileName(url);
          let sha = b.sha256?.[platform]?.toLowerCase();
          if (!sha && b.checksumUrl) {
            const cu = expandTemplate(b.checksumUrl, b.version, platform);
            sha = await fetchTextCached(cu, fileCache, (doc) => pickChecksum(doc, fileName, cu), o, 1 << 20);
          }
          if (!sha) {
            throw new UsageError(Codes.checksumMissing, `binary ${b.name} ${b.version} for ${platform} has no checksum`, {
              hint: `Give it sha256: {${platform}: <hex>} or a checksumUrl in the spec; ferry never packs an unchecked binary.`,
            });
          }
          const got = await fetchToCache(url, sha, fileCache, o);
          const arch = platform.split('/')[1]!;
          const archive = !!b.extract;
          return {
            name: b.name,
            version: b.version,
            platform,
            url,
            sha256: sha,
            size: got.size,
            source: got.path,
            bundlePath: binaryPath({ name: b.name, version: b.version, arch, file: archive ? fileName : b.name }),
            archive,
          };
        }),
      );
    }
  }
  return Promise.all(jobs);
}
