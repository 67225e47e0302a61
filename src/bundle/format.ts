/**
 * Bundle format v1: the contract between the side that packs a bundle and the site that reads it.
 * Every name, path and shape both sides share lives here, with the one reader of each; changing
 * any of it is a format version bump.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { type CodeOf, Codes, IntegrityError, UsageError } from '../errors.js';
import { exists, writeFileAtomic } from '../util/fsx.js';
import { unameCaseArms } from '../util/platform.js';
import { shWord } from '../util/shell.js';

export const FORMAT_VERSION = 1;
/** The ferry that writes a bundle says so in bundle.json (and in `ferry --version`). */
export const FERRY_VERSION = '0.1.0';

/** The binary repository's directory, and its index of every binary. */
export const FILES = 'files/';
export const VERSIONS_JSON = `${FILES}versions.json`;

/** A refusal of a bundle's content: the bytes are wrong, and no flag makes them right. */
export const refuse = (code: CodeOf<'integrity'>, msg: string, hint = 'Do not use this bundle. Get a fresh copy from its source and verify it again.') => new IntegrityError(code, msg, { hint });

// ---------------------------------------------------------------------------------------------
// The archive: the signed table first, then every other entry in byte order of path.

/** The signed table: the archive's first three entries, in this order. */
export const TABLE = ['bundle.json', 'checksums.txt', 'checksums.txt.sig'] as const;
export type TableEntry = (typeof TABLE)[number];
/** `sha256sum -c` lines for every other entry; the signature covers it. */
export const CHECKSUMS_TXT: TableEntry = 'checksums.txt';

/** `<name>-<version>`: what a parts manifest names, and the default file name's stem. */
export const bundleId = (m: { name: string; version: string }) => `${m.name}-${m.version}`;
export const bundleFileName = (m: { name: string; version: string }) => `${bundleId(m)}.ferry.tar`;

/** Refuses anything but a plain relative path: no absolute, no `..`, no `.`, no empty parts. */
export function checkEntryPath(p: string): void {
  if (p.includes('\0') || p.includes('\\')) throw refuse(Codes.bundleTraversal, `entry "${p.replace(/\0/g, '\\0')}" has a NUL or backslash in its path`);
  if (p.startsWith('/') || /^[A-Za-z]:/.test(p)) throw refuse(Codes.bundleAbsolute, `entry "${p}" has an absolute path`);
  const parts = p.replace(/\/$/, '').split('/');
  if (parts.some((s) => s === '..')) throw refuse(Codes.bundleTraversal, `entry "${p}" climbs out of the bundle with ..`);
  if (parts.some((s) => s === '' || s === '.')) throw refuse(Codes.bundleTraversal, `entry "${p}" is not a canonical path`);
}

/** The mode an entry carries: the entry script, runtimes and binaries run; everything else is data. */
export function entryMode(p: string): 0o755 | 0o644 {
  return p === 'install.sh' || p.startsWith('runtime/') || (p.startsWith(FILES) && p !== VERSIONS_JSON) ? 0o755 : 0o644;
}

/** checksums.txt: `sha256sum -c` lines, sorted by path; it covers every entry but itself and its signature. */
export function checksumsText(entries: { path: string; sha256: string }[]): Buffer {
  const lines = entries.map((e) => `${e.sha256}  ${e.path}`).sort((a, b) => (a.slice(66) < b.slice(66) ? -1 : 1));
  return Buffer.from(`${lines.join('\n')}\n`);
}

/** Reads checksums.txt into path → sha256 hex, refusing malformed lines, unsafe paths and repeats. */
export function parseChecksums(text: string): Map<string, string> {
  const sums = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (!line) continue;
    const m = /^([a-f0-9]{64}) {2}(.+)$/.exec(line);
    if (!m) throw refuse(Codes.bundleFormat, `checksums.txt has a malformed line: ${line.slice(0, 100)}`);
    checkEntryPath(m[2]!);
    if (sums.has(m[2]!)) throw refuse(Codes.bundleDuplicate, `checksums.txt lists ${m[2]} twice`);
    sums.set(m[2]!, m[1]!);
  }
  return sums;
}

/**
 * Node options for every run of ferry under the bundled runtime (install.sh, the units, node-join):
 * Node 24 warns that dependencies use punycode (DEP0040) and url.parse (DEP0169), which an operator
 * can do nothing about; only those two are silenced, every other warning still shows.
 */
export const QUIET_DEPRECATIONS = ['--disable-warning=DEP0040', '--disable-warning=DEP0169'] as const;

export const INSTALL_SH = `#!/bin/sh
# ferry bundle entry point: runs the bundled ferry with the bundled Node.js for this machine.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
case "$(uname -m)" in
${unameCaseArms()}
  *) echo "ferry: unsupported architecture $(uname -m)" >&2; exit 2 ;;
esac
node="$here/runtime/linux-$arch/node"
if [ ! -x "$node" ]; then
  echo "ferry: this bundle carries no runtime for linux/$arch" >&2
  exit 2
fi
# Nothing unlisted may sit under ferry/ or runtime/ (Node would load a node_modules planted there,
# or left from an earlier extract): every regular file there is listed, with a plain name.
unlisted=$(cd "$here" && {
  find ferry runtime -name '*[!A-Za-z0-9._+-]*' -print
  find ferry runtime ! -type d ! -type f -print
  find ferry runtime -type f -print | awk 'NR == FNR { listed[substr($0, 67)] = 1; next } !($0 in listed)' checksums.txt -
} 2>&1) || true
if [ -n "$unlisted" ]; then
  printf '%s\n' "$unlisted" | head -n 20 >&2
  echo "ferry: error[FERRY_TREE_UNLISTED]: the files above under ferry/ or runtime/ are not listed in checksums.txt; extract the bundle again into an empty directory with the steps that ferry bundle build printed" >&2
  exit 5
fi
# A guard against accidents (a partial extract, a file changed since), not the trust anchor: that
# is the openssl and sha256sum check run before this script, which covered this script too.
if ! bad=$(cd "$here" && grep -E "^[0-9a-f]{64}  (install\\.sh|ferry/.+|runtime/linux-$arch/node)\\$" checksums.txt | sha256sum -c - 2>&1); then
  printf '%s\\n' "$bad" | grep -v ': OK$' >&2 || true
  echo "ferry: install.sh, ferry/ or runtime/linux-$arch/node here do not match checksums.txt; extract them again and run the openssl and sha256sum steps that ferry bundle build printed" >&2
  exit 2
fi
# The first word is ferry's subcommand (install, bundle add …); a bundle or an option first means
# install, as "sh install.sh BUNDLE --trust ferry.pub" always did.
case "\${1:-}" in
  ""|-*|*.*|*/*) set -- install "$@" ;;
esac
# Nothing from the environment decides what Node loads: no preloaded module, no extra search path.
unset NODE_OPTIONS NODE_PATH
exec "$node" ${QUIET_DEPRECATIONS.join(' ')} "$here/ferry/ferry.mjs" "$@"
`;

/** Where the Node.js runtime for a platform (`linux/amd64`) sits; install.sh looks there. */
export const runtimePath = (platform: string) => `runtime/linux-${platform.split('/')[1]}/node`;

/**
 * The site's first commands, before anything from the bundle runs: stock tar, openssl and
 * sha256sum, with the ferry.pub that came by another channel. tar takes the signed table out first
 * (and stops there); openssl checks it; then tar takes out exactly the names it lists for install.sh,
 * ferry/ and this machine's runtime (never a directory, so nothing unlisted comes along), sha256sum
 * checks them, and only then does install.sh run, which refuses any unlisted file beside them.
 * Parts are read in the order FILE.parts.json lists them, never by a glob (a planted FILE.part000
 * is not read; a name parts.json lists falsely only yields bytes the table then refuses).
 * `bundle` is what install.sh is given (FILE or FILE.parts.json), relative to the directory the
 * commands run in. tar keeps no owner or mode from the archive: the headers are not signed, a
 * setuid bit would be.
 */
export function bootstrapSteps(bundle: string, platform: string, o: { pub?: string; installArgs?: string[] } = {}): string[] {
  const rt = runtimePath(platform);
  const dir = path.posix.dirname(bundle);
  const read = isPartsFile(bundle)
    ? `sed -n 's/^ *"name": "\\([A-Za-z0-9._-]*\\.part[0-9][0-9]*\\)",\\{0,1\\}$/\\1/p' ${shWord(bundle)} | while IFS= read -r p; do cat ${dir === '.' ? '' : `${shWord(dir)}/`}"$p" || exit; done | tar -xf -`
    : `tar -xf ${shWord(bundle)}`;
  const tarOpts = '--no-same-owner --no-same-permissions';
  const pub = shWord(o.pub ?? 'ferry.pub');
  const sig = `${CHECKSUMS_TXT}.sig`;
  const der = `${CHECKSUMS_TXT}.der`;
  const listed = `^[0-9a-f]{64}  (install\\.sh|ferry/.+|${rt.replace(/\./g, '\\.')})$`;
  return [
    `${read} ${tarOpts} --occurrence ${TABLE.join(' ')}`,
    `openssl base64 -d -A -in ${sig} -out ${der}`,
    `openssl dgst -sha256 -verify ${pub} -signature ${der} ${CHECKSUMS_TXT}`,
    `grep -E '${listed}' ${CHECKSUMS_TXT} > ${FIRST_STEP_SUMS}`,
    `sed 's/^.\\{66\\}//' ${FIRST_STEP_SUMS} > ${FIRST_STEP_NAMES}`,
    `${read} ${tarOpts} --no-recursion -T ${FIRST_STEP_NAMES}`,
    `sha256sum -c ${FIRST_STEP_SUMS}`,
    ['sh', 'install.sh', 'install', bundle, '--trust', o.pub ?? 'ferry.pub', ...(o.installArgs ?? [])].map(shWord).join(' '),
  ];
}

/** The first step's own files beside the bundle: the signed lines it checks, and their names for tar. */
const FIRST_STEP_SUMS = 'first-step.sha256';
const FIRST_STEP_NAMES = 'first-step.names';

/** The bundled ferry's list of its own files (sha256sum lines, relative to ferry/), written by the build; its guard checks its directory against it. */
export const FERRY_FILES_LIST = 'ferry.files';

/** bootstrapSteps as one script: each command runs only if the one before it succeeded. */
export const bootstrapScript = (...a: Parameters<typeof bootstrapSteps>) => bootstrapSteps(...a).join(' &&\n');

// ---------------------------------------------------------------------------------------------
// files/: the binary repository, served by the site at /files/.

/** One binary: its spec name and version, and the arch and file name it has in the bundle. */
export interface BinaryCoords {
  name: string;
  version: string;
  arch: string;
  file: string;
}

/** files/<name>/<version>/linux-<arch>/<file> */
export function binaryPath(c: BinaryCoords): string {
  return `${FILES}${c.name}/${c.version}/linux-${c.arch}/${c.file}`;
}

/** The reverse of binaryPath; undefined for any other path (versions.json, a stray file). */
export function parseBinaryPath(p: string): BinaryCoords | undefined {
  if (!p.startsWith(FILES)) return undefined;
  const segs = p.slice(FILES.length).split('/');
  if (segs.length !== 4 || segs.some((s) => s === '' || s === '.' || s === '..') || !segs[2]!.startsWith('linux-')) return undefined;
  const [name, version, dir, file] = segs as [string, string, string, string];
  return { name, version, arch: dir.slice('linux-'.length), file };
}

/** A binary as bundle.json lists it; `path` is its bundle entry (binaryPath). */
export interface BundleFile {
  name: string;
  version: string;
  platform: string;
  path: string;
  sha256: string;
  size: number;
  archive: boolean;
  /** Where it was fetched from upstream (never a --binary-mirror). */
  url: string;
}

/** versions.json lists the same as bundle.json's files, with paths below files/, as the site serves them. */
export type VersionsEntry = BundleFile;

export function versionsJson(files: BundleFile[]): Buffer {
  const entries: VersionsEntry[] = files.map((f) => ({ ...f, path: f.path.slice(FILES.length) })).sort((a, b) => (a.path < b.path ? -1 : 1));
  return Buffer.from(`${JSON.stringify(entries, null, 2)}\n`);
}

/** Reads versions.json (from an unpacked bundle or the site service), refusing any path off the layout. */
export function parseVersionsJson(text: string, what = VERSIONS_JSON): VersionsEntry[] {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw refuse(Codes.bundleFormat, `${what} is not JSON`);
  }
  const ok = (e: unknown): e is VersionsEntry => {
    const x = e as Partial<VersionsEntry> | null;
    return !!x && typeof x.name === 'string' && typeof x.version === 'string' && typeof x.platform === 'string' && typeof x.path === 'string' && !!parseBinaryPath(`${FILES}${x.path}`) && typeof x.sha256 === 'string' && /^[a-f0-9]{64}$/.test(x.sha256) && typeof x.size === 'number';
  };
  if (!Array.isArray(v)) throw refuse(Codes.bundleFormat, `${what} is not a list of files`);
  const badEntry = v.find((e) => !ok(e));
  if (badEntry !== undefined) throw refuse(Codes.bundleFormat, `${what} lists a file ferry does not know how to read: ${JSON.stringify(badEntry).slice(0, 200)}`);
  return v as VersionsEntry[];
}

/** A versions.json entry as bundle.json lists it (its path back below the bundle root). */
export const bundleFileOf = (v: VersionsEntry): BundleFile => ({ ...v, path: `${FILES}${v.path}` });

// ---------------------------------------------------------------------------------------------
// bundle.json: the first entry, signed through checksums.txt.

export interface BundleManifest {
  formatVersion: number;
  name: string;
  version: string;
  description?: string;
  created: string;
  ferryVersion: string;
  platforms: string[];
  kubernetes?: { version: string; imageRepository?: string };
  images: { ref: string; digest: string; mediaType: string; platforms: string[] }[];
  charts: { name: string; version: string; ref: string; digest: string }[];
  files: BundleFile[];
  runtime: { platform: string; version: string; path: string; sha256: string; size: number }[];
  /** The signing key, so a site without --trust can be shown its fingerprint to confirm. */
  signer: { fingerprint: string; publicKey: string };
  /** Bytes of every entry's content, for the unpack disk-space preflight. */
  contentSize: number;
  entries: number;
}

export function manifestBytes(m: BundleManifest): Buffer {
  return Buffer.from(`${JSON.stringify(m, null, 2)}\n`);
}

/** What is wrong with a parsed bundle.json's shape, or undefined. Only what readers rely on is checked. */
function manifestProblem(m: Record<string, unknown>): string | undefined {
  const str = (v: unknown) => typeof v === 'string';
  const count = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  const list = (v: unknown, item: (x: Record<string, unknown>) => boolean) => Array.isArray(v) && v.every((x) => !!x && typeof x === 'object' && item(x as Record<string, unknown>));
  for (const k of ['name', 'version', 'created', 'ferryVersion'] as const) if (!str(m[k])) return `${k} is not a string`;
  if (!Array.isArray(m.platforms) || !m.platforms.every(str)) return 'platforms is not a list of strings';
  if (!list(m.images, (i) => str(i.ref) && str(i.digest))) return 'images is not a list of images';
  if (!list(m.charts, (c) => str(c.name) && str(c.ref))) return 'charts is not a list of charts';
  if (!list(m.files, (f) => str(f.path) && count(f.size))) return 'files is not a list of files';
  if (!list(m.runtime, (r) => str(r.platform) && str(r.path) && count(r.size))) return 'runtime is not a list of runtimes';
  // A missing signer is the verifier's to report (the bundle names no key); a malformed one is not.
  const s = m.signer as Record<string, unknown> | undefined;
  if (s !== undefined && !(s && str(s.fingerprint) && str(s.publicKey))) return 'signer is not a key';
  if (!count(m.contentSize) || !count(m.entries)) return 'contentSize or entries is not a count';
  return undefined;
}

/** Parses and checks bundle.json; `where` names the bundle in errors. */
export function parseBundleManifest(bytes: Buffer | string, where: string): BundleManifest {
  let m: unknown;
  try {
    m = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw refuse(Codes.bundleFormat, `bundle.json of ${where} is not JSON`);
  }
  if (!m || typeof m !== 'object' || Array.isArray(m)) throw refuse(Codes.bundleFormat, `bundle.json of ${where} is not an object`);
  const fv = (m as { formatVersion?: unknown }).formatVersion;
  if (fv !== FORMAT_VERSION) {
    throw new IntegrityError(Codes.bundleFormat, `bundle format ${String(fv)} is not supported by this ferry (format ${FORMAT_VERSION})`, { hint: 'Use the ferry that came with the bundle: sh install.sh.' });
  }
  const problem = manifestProblem(m as Record<string, unknown>);
  if (problem) throw refuse(Codes.bundleFormat, `bundle.json of ${where} is not a ferry bundle manifest: ${problem}`);
  return m as BundleManifest;
}

// ---------------------------------------------------------------------------------------------
// Parts: <file>.part001, .part002 … beside <file>.parts.json, which lists them and is signed too.

export interface PartInfo {
  name: string;
  size: number;
  sha256: string;
}

export interface PartsManifest {
  formatVersion: 1;
  bundle: string;
  /** sha256 of the bundle's checksums.txt: ties the parts to one bundle. */
  checksums: string;
  size: number;
  parts: PartInfo[];
  signer?: { fingerprint: string; publicKey: string };
  signature?: string;
}

/** Just under 4 GiB: the largest file FAT32 holds is 4 GiB - 1 byte. */
export const DEFAULT_PART_SIZE = 4 * 1024 ** 3 - 64 * 1024;

const PARTS_SUFFIX = '.parts.json';
export const isPartsFile = (input: string) => input.endsWith(PARTS_SUFFIX);
export const partsFileOf = (bundleFile: string) => `${bundleFile}${PARTS_SUFFIX}`;
/**
 * The n-th part (from 1) of a bundle file, beside it, its number padded to the width the count
 * needs (at least 3): every part name is as long as the others, so a shell glob sorts them in order.
 */
export const partFileOf = (bundleFile: string, n: number, count = n) => `${bundleFile}.part${String(n).padStart(Math.max(3, String(count).length), '0')}`;
/** A part is a plain file name beside the parts manifest: no directory, so no `..` and no absolute path. */
const PART_NAME = /^[^/\\]+\.part\d{3,}$/;

/** The bytes that parts.json's signature covers: the manifest without its signature, keys sorted. */
export function partsSigningBytes(m: PartsManifest): Buffer {
  const { signature: _s, ...rest } = m;
  return Buffer.from(JSON.stringify(sortKeys(rest)));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]));
  return v;
}

export async function writePartsManifest(file: string, m: PartsManifest): Promise<void> {
  await writeFileAtomic(file, `${JSON.stringify(m, null, 2)}\n`);
}

/**
 * The one reader of a parts manifest. It refuses a part name that is not a plain file name before
 * anything opens a part, so no reader follows `../x` or `/proc/self/fd/0`. Not a signature check:
 * verify does that.
 */
export async function readPartsManifest(file: string): Promise<PartsManifest> {
  let m: PartsManifest;
  try {
    m = JSON.parse(await fs.readFile(file, 'utf8')) as PartsManifest;
  } catch (e) {
    throw new IntegrityError(Codes.bundleFormat, `cannot read parts manifest ${file}: ${(e as Error).message}`, { hint: 'Copy FILE.parts.json from the source again.', cause: e });
  }
  if (!m || m.formatVersion !== 1 || !Array.isArray(m.parts) || !m.parts.every((p) => !!p && typeof p.name === 'string' && PART_NAME.test(p.name) && /^[a-f0-9]{64}$/.test(p.sha256))) {
    throw refuse(Codes.bundleFormat, `${file} is not a ferry parts manifest`);
  }
  return m;
}

/**
 * Refuses the bundle paths operators get wrong before anything opens them: a path that does not
 * exist, and one part named where the parts manifest belongs.
 */
export async function checkBundlePath(input: string): Promise<void> {
  const part = /^(.*)\.part\d{3,}$/.exec(input);
  if (part) {
    const manifest = partsFileOf(part[1]!);
    throw new UsageError(Codes.bundlePartGiven, `${input} is one part of a split bundle; ferry reads the parts through their manifest`, {
      hint: `Pass ${manifest}${(await exists(manifest)) ? '' : ' (copy it beside the parts first)'}: it lists every part and is signed.`,
    });
  }
  const missing = await fs.stat(input).then(() => false, (e: NodeJS.ErrnoException) => e.code === 'ENOENT' || e.code === 'ENOTDIR');
  if (missing) {
    throw new UsageError(Codes.bundleNotFound, `bundle ${input} does not exist`, {
      hint: isPartsFile(input) ? 'Check the path; FILE.parts.json is copied beside FILE.part001, .part002 …' : 'Check the path; for a split bundle pass FILE.parts.json.',
    });
  }
}

/** The files a bundle is read from: its parts, beside the parts manifest, or none for a single file. */
export async function partFiles(input: string): Promise<string[]> {
  if (!isPartsFile(input)) return [];
  return (await readPartsManifest(input)).parts.map((p) => path.join(path.dirname(input), p.name));
}
