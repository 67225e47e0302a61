import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Codes, StoreError } from '../errors.js';

/** A unique sibling name, so a rename lands on the same filesystem and is atomic. */
export function tempPathFor(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
}

export async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p);
    return true;
  } catch {
    return false;
  }
}

/** Writes a small file atomically: temp file, fsync, rename. */
export async function writeFileAtomic(target: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  await fs.mkdir(path.dirname(target), { recursive: true });
  const tmp = tempPathFor(target);
  try {
    const fh = await fs.open(tmp, 'w', mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, target);
  } catch (e) {
    await fs.rm(tmp, { force: true });
    throw ioError(`cannot write ${target}`, e);
  }
}

export function ioError(what: string, cause: unknown): StoreError {
  const code = (cause as NodeJS.ErrnoException | undefined)?.code;
  const hint =
    code === 'ENOSPC'
      ? 'The disk is full: free space or point the output elsewhere, then re-run; finished work is kept.'
      : code === 'EACCES' || code === 'EPERM'
        ? 'Permission denied: check the directory owner and mode, or run as a user that may write there.'
        : 'Check the path and the filesystem, then re-run; finished work is kept.';
  return new StoreError(Codes.storeIo, `${what}: ${(cause as Error)?.message ?? String(cause)}`, { hint, cause });
}

/**
 * An exclusive lock made with mkdir, which is atomic on every local filesystem. Stale locks (from a
 * killed process) are taken over after `staleMs`.
 */
export async function withDirLock<T>(lockDir: string, fn: () => Promise<T>, staleMs = 30_000): Promise<T> {
  const start = Date.now();
  let delay = 2;
  await fs.mkdir(path.dirname(lockDir), { recursive: true });
  for (;;) {
    try {
      await fs.mkdir(lockDir);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError(`cannot take lock ${lockDir}`, e);
      try {
        const st = await fs.stat(lockDir);
        if (Date.now() - st.mtimeMs > staleMs) {
          await fs.rm(lockDir, { recursive: true, force: true });
          continue;
        }
      } catch {
        continue;
      }
      if (Date.now() - start > 5 * staleMs) {
        throw new StoreError(Codes.storeIo, `timed out waiting for lock ${lockDir}`, {
          hint: 'Another ferry process holds the store. Wait for it, or remove the lock directory if no ferry is running.',
        });
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 100);
    }
  }
  try {
    return await fn();
  } finally {
    await fs.rm(lockDir, { recursive: true, force: true });
  }
}
