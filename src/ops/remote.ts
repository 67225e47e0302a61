import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseChecksums, QUIET_DEPRECATIONS, type BundleManifest } from '../bundle/format.js';
import type { NodeRecord, SiteAnswers } from '../cluster/state.js';
import { Codes, RemoteError, UsageError } from '../errors.js';
import type { Host } from '../install/host.js';
import { BUNDLE_DIR, FERRY_DIGEST, FERRY_DIR, FERRY_MJS, RUNTIME_NODE } from '../install/paths.js';
import { SshSession, type ExecResult } from '../install/ssh.js';
import { limiter } from '../util/limit.js';
import { archOfUname } from '../util/platform.js';
import { shQuote as sq } from '../util/shell.js';

/*
 * A node ferry acts on over SSH: reached by its inventory address under the known_hosts rules of
 * SshSession, its arch detected, ferry and its runtime put there once per digest, and node
 * operations (`ferry node-join`, …) run there with their payload on stdin.
 */

export type SshSettings = NonNullable<SiteAnswers['ssh']>;

/** Where a node is reached: its name, and the address SSH connects to (a join target's host, or a NodeRecord's ip). */
export interface NodeAddress {
  name: string;
  host: string;
}

export const addressOf = (n: Pick<NodeRecord, 'name' | 'ip'>): NodeAddress => ({ name: n.name, host: n.ip });

export interface ConnectOptions {
  ssh?: SshSettings;
  /** Asked about a host key known_hosts has never seen (never about a changed one). */
  confirmHostKey: (host: string, fingerprint: string) => Promise<boolean>;
  /** For tests: the root prefix on the node ({name} is replaced). */
  remoteRoot?: string;
}

export interface RemoteNode {
  readonly name: string;
  readonly host: string;
  readonly session: SshSession;
  /** The bundle's name for the node's arch (amd64, arm64), from `uname -m`. */
  readonly arch: string;
  /** The root prefix on the node ('/' but in tests). */
  readonly root: string;
  /** A host path on the node, under its root. */
  p(hostPath: string): string;
  close(): void;
}

const expandHome = (p: string) => (p.startsWith('~/') ? path.join(os.homedir(), p.slice(2)) : p);

export async function connectNode(n: NodeAddress, o: ConnectOptions): Promise<RemoteNode> {
  const ssh = o.ssh ?? {};
  const session = await SshSession.connect({
    host: n.host,
    port: ssh.port ?? 22,
    user: ssh.user ?? 'root',
    identityFile: expandHome(ssh.identityFile ?? '~/.ssh/id_ed25519'),
    knownHosts: expandHome(ssh.knownHosts ?? '~/.ssh/known_hosts'),
    confirmUnknown: o.confirmHostKey,
  });
  try {
    const uname = (await session.exec('uname -m')).stdout.trim();
    const arch = archOfUname(uname);
    if (!arch) throw new UsageError(Codes.platformUnsupported, `${n.name} is ${uname || 'of an unknown architecture'}, which no bundle carries`, { hint: 'ferry runs on amd64 and arm64 nodes.' });
    const root = o.remoteRoot ? o.remoteRoot.replaceAll('{name}', n.name) : '/';
    return { name: n.name, host: n.host, session, arch, root, p: (hp) => path.posix.join(root, hp), close: () => session.close() };
  } catch (e) {
    session.close();
    throw e;
  }
}

/** Files below a directory, relative, sorted. */
async function listFiles(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(path.join(dir, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await listFiles(dir, r)));
    else if (e.isFile()) out.push(r);
  }
  return out.sort();
}

const sha256File = async (f: string) => {
  const h = createHash('sha256');
  await pipeline(createReadStream(f), h);
  return h.digest('hex');
};

/** What ensureFerry puts on a node: the ferry tree and one runtime of the unpacked bundle, and their digest. */
export interface FerryPayload {
  /** Local paths (under the bundle dir) → host paths on the node, with modes. */
  files: { local: string; remote: string; mode: number }[];
  digest: string;
}

/**
 * The ferry tree and the runtime for a platform, and one digest of both: the sha256 of their
 * checksums.txt lines (the signed table the unpacked bundle keeps), or, where the tree has no table,
 * of the same lines computed from the files.
 */
export async function ferryPayload(local: Host, manifest: BundleManifest, platform: string, dir?: string): Promise<FerryPayload> {
  const rt = manifest.runtime.find((r) => r.platform === platform);
  if (!rt) throw new UsageError(Codes.platformUnsupported, `the bundle has no runtime for ${platform}`, { hint: `The bundle carries ${manifest.platforms.join(', ')}.` });
  const bundleDir = dir ?? local.p(BUNDLE_DIR);
  const tree = await listFiles(path.join(bundleDir, 'ferry'));
  const entries = [rt.path, ...tree.map((f) => `ferry/${f}`)];
  const table = await fs.readFile(path.join(bundleDir, 'checksums.txt'), 'utf8').catch(() => undefined);
  const sums = table ? parseChecksums(table) : new Map<string, string>();
  const lines: string[] = [];
  for (const e of entries) lines.push(`${sums.get(e) ?? (await sha256File(path.join(bundleDir, e)))}  ${e}`);
  lines.sort();
  return {
    digest: createHash('sha256').update(`${lines.join('\n')}\n`).digest('hex'),
    files: [
      { local: path.join(bundleDir, rt.path), remote: RUNTIME_NODE, mode: 0o755 },
      ...tree.map((f) => ({ local: path.join(bundleDir, 'ferry', f), remote: `${FERRY_DIR}/${f}`, mode: 0o644 })),
    ],
  };
}

/** Uploads files over the session's one SFTP channel, `parallel` at once; directories are made first, each once. */
export async function uploadFiles(node: RemoteNode, files: { local: string; remote: string; mode?: number }[], parallel = 8): Promise<void> {
  for (const d of [...new Set(files.map((f) => path.posix.dirname(node.p(f.remote))))].sort()) await node.session.mkdirp(d);
  const limit = limiter(Math.max(1, parallel));
  await Promise.all(files.map((f) => limit(() => node.session.upload(f.local, node.p(f.remote), f.mode))));
}

export interface EnsureResult {
  digest: string;
  /** Files uploaded: 0 when the node's stamp matched. */
  uploaded: number;
  seconds: number;
}

/**
 * ferry and its runtime on the node, once per digest: the stamp the last upload wrote there is
 * compared first, and only a node without it, or with another, gets the files. The stamp goes
 * before the upload and comes back after it, so a cut upload never looks complete.
 */
/** `bundleDir`: another unpacked bundle than BUNDLE_DIR (an upgrade's, in the store). */
export async function ensureFerry(node: RemoteNode, local: Host, manifest: BundleManifest, o: { parallel?: number; force?: boolean; bundleDir?: string } = {}): Promise<EnsureResult> {
  const t0 = Date.now();
  const payload = await ferryPayload(local, manifest, `linux/${node.arch}`, o.bundleDir);
  const stamp = node.p(FERRY_DIGEST);
  const have = (await node.session.exec(`cat ${sq(stamp)} 2>/dev/null`)).stdout.trim();
  if (have === payload.digest && !o.force) return { digest: payload.digest, uploaded: 0, seconds: (Date.now() - t0) / 1000 };
  // The ferry tree is replaced whole: its guard refuses any file its list does not name, such as a chunk of the ferry uploaded before.
  await must(node, `rm -f ${sq(stamp)} && rm -rf ${sq(node.p(FERRY_DIR))}`);
  await uploadFiles(node, payload.files, o.parallel);
  await must(node, `printf '%s\\n' ${payload.digest} > ${sq(`${stamp}.tmp`)} && mv ${sq(`${stamp}.tmp`)} ${sq(stamp)}`);
  return { digest: payload.digest, uploaded: payload.files.length, seconds: (Date.now() - t0) / 1000 };
}

async function must(node: RemoteNode, cmd: string): Promise<void> {
  const r = await node.session.exec(cmd);
  if (r.code !== 0) throw new RemoteError(Codes.joinFailed, `${node.name}: ${cmd} failed: ${r.stderr.trim() || `exit ${r.code}`}`, { hint: `Check the disk and permissions under ${node.p('/var/lib/ferry')} on ${node.name}.` });
}

/**
 * Runs a node operation of the ferry ensureFerry put there (`node-join`, …) with its payload on
 * stdin; the node checks the payload against the operation's schema. Progress lines come on stderr.
 */
export function runNodeOp(node: RemoteNode, op: string, o: { args?: string[]; payload: unknown; remotePath?: string; onLine?: (line: string) => void }): Promise<ExecResult> {
  const env = o.remotePath ? `PATH=${sq(o.remotePath)}:"$PATH" ` : '';
  const cmd = `${env}${sq(node.p(RUNTIME_NODE))} ${QUIET_DEPRECATIONS.join(' ')} ${sq(node.p(FERRY_MJS))} ${op} --root ${sq(node.root)}${(o.args ?? []).map((a) => ` ${sq(a)}`).join('')}`;
  return node.session.exec(cmd, { input: JSON.stringify(o.payload), ...(o.onLine ? { onLine: o.onLine } : {}) });
}
