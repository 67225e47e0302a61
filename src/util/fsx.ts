import { randomBytes } from 'node:crypto';
import { promises as fs, rmSync } from 'node:fs';
import path from 'node:path';
import { Codes, StoreError } from '../errors.js';

/** A unique sibling name, so a rename lands on the same filesystem and is atomic. */
export function tempPathFor(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
}

/** What tempPathFor names: `.<base>.<pid>.<12 hex>.tmp`. */
const TEMP_NAME = /^\.(.+)\.(\d+)\.[0-9a-f]{12}\.tmp$/;

/** The target base name and the writer's pid of a temp file ferry made, or undefined for any other name. */
export function parseTempName(name: string): { base: string; pid: number } | undefined {
  const m = TEMP_NAME.exec(name);
  return m ? { base: m[1]!, pid: Number(m[2]) } : undefined;
}

/** Whether a process with this pid runs (EPERM: it does, as another user). */
export function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * ferry's own temp files in `dir` (by name) whose writer is gone, for targets `which` accepts:
 * what a killed run left. A live writer's files are never listed.
 */
export async function staleTemps(dir: string, which: (base: string) => boolean = () => true): Promise<string[]> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch {
    return [];
  }
  return names.filter((n) => {
    const t = parseTempName(n);
    return !!t && t.pid !== process.pid && which(t.base) && !pidAlive(t.pid);
  }).map((n) => path.join(dir, n));
}

/** Removes what staleTemps lists; best effort, as another run may sweep the same files. */
export async function sweepStaleTemps(dir: string, which?: (base: string) => boolean): Promise<string[]> {
  const stale = await staleTemps(dir, which);
  for (const f of stale) await fs.rm(f, { force: true, recursive: true }).catch(() => {});
  return stale;
}

/*
 * Temp files to remove if the process is interrupted. The handlers exist only while there is
 * something to remove; after removing, the signal is raised again with the default action (when
 * no one else handles it), so the process still ends as interrupted.
 */
const onSignal = new Set<string>();
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
function interrupted(sig: NodeJS.Signals): void {
  for (const p of onSignal) rmSync(p, { force: true, recursive: true });
  onSignal.clear();
  for (const s of SIGNALS) process.off(s, interrupted);
  if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
}

/** Removes `p` if a signal interrupts the process before the returned release is called. */
export function removeOnSignal(p: string): () => void {
  if (onSignal.size === 0) for (const s of SIGNALS) process.on(s, interrupted);
  onSignal.add(p);
  return () => {
    if (!onSignal.delete(p) || onSignal.size) return;
    for (const s of SIGNALS) process.off(s, interrupted);
  };
}

export async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p);
    return true;
  } catch {
    return false;
  }
}

/** mkdir -p that reports the real error: Node's recursive mkdir says ENOENT below a read-only parent. */
export async function mkdirs(dir: string, mode?: number): Promise<void> {
  try {
    await fs.mkdir(dir, { recursive: true, mode });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    let missing = path.resolve(dir);
    while (path.dirname(missing) !== missing && !(await exists(path.dirname(missing)))) missing = path.dirname(missing);
    await fs.mkdir(missing, { mode });
    throw e;
  }
}

/** Writes a small file atomically: temp file, fsync, rename. */
export async function writeFileAtomic(target: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  await fs.mkdir(path.dirname(target), { recursive: true });
  const tmp = tempPathFor(target);
  const release = removeOnSignal(tmp);
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
  } finally {
    release();
  }
}

/** An error from the operating system (ENOSPC, EROFS, EIO …), as Node reports it. */
export function isErrno(e: unknown): e is NodeJS.ErrnoException {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).syscall === 'string' && typeof code === 'string' && /^E[A-Z0-9]+$/.test(code);
}

export function ioError(what: string, cause: unknown): StoreError {
  const code = (cause as NodeJS.ErrnoException | undefined)?.code;
  const hint =
    code === 'ENOSPC' || code === 'EDQUOT'
      ? `The ${code === 'EDQUOT' ? 'disk quota is used up' : 'disk is full'}: free space or point the output elsewhere, then re-run; finished work is kept.`
      : code === 'EROFS'
        ? 'The filesystem is read-only: choose a writable place, or remount it read-write, then re-run.'
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
  // A killed holder would leave the lock for staleMs; an interrupted one removes it.
  const release = removeOnSignal(lockDir);
  try {
    return await fn();
  } finally {
    await fs.rm(lockDir, { recursive: true, force: true });
    release();
  }
}
