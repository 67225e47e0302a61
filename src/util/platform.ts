/*
 * How a machine names its architecture, and how a bundle names it (linux/<arch>). Both sides use
 * it: the build picks Node.js runtimes, install.sh and ferry join read `uname -m`, a node reads
 * process.arch.
 */

/** Node.js's process.arch for each arch a bundle carries. */
const NODE_ARCH = { amd64: 'x64', arm64: 'arm64' } as const;
/** What `uname -m` prints for each arch a bundle carries. */
const UNAME_ARCH = { amd64: ['x86_64', 'amd64'], arm64: ['aarch64', 'arm64'] } as const;

/** The bundle's arch for Node.js's process.arch (x64 → amd64); others pass through as they are. */
export function archOf(nodeArch: string = process.arch): string {
  return Object.entries(NODE_ARCH).find(([, n]) => n === nodeArch)?.[0] ?? nodeArch;
}

/** This machine as the bundle names platforms: linux/amd64. */
export const thisPlatform = () => `linux/${archOf()}`;

/** The bundle's arch for what `uname -m` prints, or undefined for one no bundle carries. */
export function archOfUname(machine: string): string | undefined {
  return Object.entries(UNAME_ARCH).find(([, names]) => (names as readonly string[]).includes(machine.trim()))?.[0];
}

/** Node.js's name for a platform's arch (linux/amd64 → x64), as its release files are named. */
export function nodeArchOf(platform: string): string | undefined {
  return NODE_ARCH[platform.split('/')[1] as keyof typeof NODE_ARCH];
}

/** The `case "$(uname -m)"` arms of a shell script that sets $arch (install.sh). */
export const unameCaseArms = () =>
  Object.entries(UNAME_ARCH)
    .map(([arch, names]) => `  ${names.join('|')}) arch=${arch} ;;`)
    .join('\n');
