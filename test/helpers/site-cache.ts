import { existsSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * A binary the site suite builds from upstream (scripts/site/build-components.sh), for fast tests
 * that want the real thing when it is there: `env` names an override, else the newest complete
 * build of `component` in the site cache. Undefined when there is none; such tests skip.
 */
export function siteBinary(component: string, file: string, env: string): string | undefined {
  if (process.env[env]) return process.env[env];
  const bin = path.join(process.env.FERRY_SITE_CACHE ?? path.join(os.homedir(), '.cache/ferry-site'), 'bin');
  if (!existsSync(bin)) return undefined;
  const builds = readdirSync(bin)
    .filter((d) => d.startsWith(`${component}-v`) && existsSync(path.join(bin, d, '.done')) && existsSync(path.join(bin, d, file)))
    .sort((a, b) => b.localeCompare(a, 'en', { numeric: true }));
  return builds[0] ? path.join(bin, builds[0], file) : undefined;
}
