import os from 'node:os';
import path from 'node:path';

/** FERRY_CACHE_DIR, else $XDG_CACHE_HOME/ferry, else ~/.cache/ferry. */
export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.FERRY_CACHE_DIR) return path.resolve(env.FERRY_CACHE_DIR);
  if (env.XDG_CACHE_HOME) return path.join(path.resolve(env.XDG_CACHE_HOME), 'ferry');
  return path.join(os.homedir(), '.cache', 'ferry');
}

/** The shared blob cache: one OCI layout that every pull fills and every output links from. */
export function cacheStoreDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(cacheDir(env), 'oci');
}

/** Relative paths in a spec (charts/x, bins/…) are read from the project: bundle-spec/'s parent. */
export function specBaseDir(specFile: string): string {
  const dir = path.dirname(path.resolve(specFile));
  return path.basename(dir) === 'bundle-spec' ? path.dirname(dir) : dir;
}
