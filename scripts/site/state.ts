/* What `npm run site -- up` made, so that `down`, `exec` and the tests can find it. */
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import { STATE_FILE, WORK, type Release } from './config.js';
import type { HostState, Net, Resolver } from './hosts.js';

export interface SiteState {
  domain: string;
  fqdn: string;
  net: Net & { subnet: string };
  bundle: string;
  /** The release the site was installed at (absent: current, from before there were two). */
  release?: Release;
  hosts: HostState[];
  resolver?: Resolver;
}

export async function saveState(s: SiteState): Promise<void> {
  await fs.mkdir(WORK, { recursive: true });
  await fs.writeFile(STATE_FILE, JSON.stringify(s, null, 2));
}

export function loadState(): SiteState | undefined {
  return existsSync(STATE_FILE) ? (JSON.parse(readFileSync(STATE_FILE, 'utf8')) as SiteState) : undefined;
}
