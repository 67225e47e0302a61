import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';

/** The sha256 of bytes as 64 hex characters, the form checksums.txt and sha256sum use. */
export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The OCI digest of bytes: `sha256:<hex>`. */
export function sha256(data: string | Uint8Array): string {
  return `sha256:${sha256Hex(data)}`;
}

export function newHash(digest: string): Hash {
  const alg = digest.slice(0, digest.indexOf(':'));
  return createHash(alg === 'sha512' ? 'sha512' : 'sha256');
}

export function digestOf(hash: Hash, digest: string): string {
  return `${digest.slice(0, digest.indexOf(':'))}:${hash.digest('hex')}`;
}

/** Hashes a file as it streams; never loads it whole. */
export async function hashFile(path: string, alg: 'sha256' | 'sha512' = 'sha256'): Promise<{ digest: string; size: number }> {
  const h = createHash(alg);
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    h.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { digest: `${alg}:${h.digest('hex')}`, size };
}
