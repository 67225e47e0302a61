import { QUIET_DEPRECATIONS } from '../bundle/format.js';
import { shWord } from '../util/shell.js';
import { FERRY_LAUNCHER, FERRY_MJS, RUNTIME_NODE } from './paths.js';
import type { Host } from './host.js';

/**
 * `ferry` on a node's PATH: the installed ferry on the bundled runtime, with the deprecation
 * warnings an operator can do nothing about silenced. `node` and `ferry` are for tests under a root.
 */
export function renderLauncher(o: { node?: string; ferry?: string } = {}): string {
  const args = [o.node ?? RUNTIME_NODE, ...QUIET_DEPRECATIONS, o.ferry ?? FERRY_MJS].map(shWord).join(' ');
  return `#!/bin/sh\n# Written by ferry: the installed ferry with its bundled runtime.\nexec ${args} "$@"\n`;
}

/** Writes the launcher; it needs RUNTIME_NODE and FERRY_MJS in place, which the caller put there. */
export async function writeLauncher(host: Host): Promise<void> {
  await host.write(FERRY_LAUNCHER, renderLauncher(), 0o755);
}
