import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MirrorStore } from '../cluster/mirror.js';
import { Codes, HostError, IntegrityError, RemoteError, UsageError, isFerryError } from '../errors.js';
import { backupKeyId, readBackupKeyFile } from '../install/backup-timer.js';
import type { Host } from '../install/host.js';
import { BACKUP_KEEP } from '../install/units.js';
import { ANSWERS_FILE, BACKUP_DIR, BACKUP_KEY, BUNDLE_PUB, FERRY_ROOT, KUBEADM_CONFIG, PKI_DIR, STATE_MIRROR } from '../install/paths.js';
import { removeOnSignal, sweepStaleTemps, tempPathFor } from '../util/fsx.js';
import { ByteReader, openSealed, SealWriter } from '../util/sealed.js';
import { selfOf } from './certs-renew.js';
import { endpointStatus, etcdTls, snapshotStream, SnapshotCheck } from './etcd.js';

/*
 * `ferry backup`: one file per backup holding what a restore to a new host needs: this server's
 * etcd snapshot, kubeadm's and the site's PKI, the site state, the kubeadm configuration and the
 * answers; sealed with the site's backup key (/etc/ferry/backup.key), streamed end to end.
 *
 * The file (format 1):
 *   "FERRYBAK" · u32 BE header length · header (JSON, plaintext: format, site, node, created, etcd
 *   revision and size, key id, cipher, chunk size, salt) · the sealed stream (util/sealed.ts) whose
 *   every chunk is bound to the header's bytes.
 * Inside the sealed stream, entries one after another:
 *   'E' · u16 BE name length · name · u32 BE mode · segments (u32 BE length > 0 · bytes)… · u32 0
 *   and last 'Z'. The entries: etcd/snapshot.db first (as etcd sent it, its sha256 appended), then
 *   files/<host path> for each file, then manifest.json (each entry's size and sha256).
 */

export const BACKUP_MAGIC = Buffer.from('FERRYBAK', 'latin1');
export const BACKUP_FORMAT = 1;
const CIPHER = 'aes-256-gcm, hkdf-sha256 per file, chunked (STREAM)';
const SEAL_INFO = 'ferry backup v1';
const DEFAULT_CHUNK = 1 << 20;
const MAX_HEADER = 64 * 1024;
const MAX_SEGMENT = 1 << 20;
const MAX_NAME = 4096;
export const SNAPSHOT_ENTRY = 'etcd/snapshot.db';
const MANIFEST_ENTRY = 'manifest.json';
/** The files a restore needs besides etcd: whole trees, and single files (each only when present). */
const BACKED_UP_TREES = ['/etc/kubernetes/pki', PKI_DIR];
const BACKED_UP_FILES = [STATE_MIRROR, KUBEADM_CONFIG, ANSWERS_FILE, BUNDLE_PUB];

/** A scheduled or asked-for backup's file name: `ferry-backup-<UTC time>-<node>.fbak`. */
const BACKUP_NAME = /^ferry-backup-(\d{8}T\d{6}Z)-([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?)\.fbak$/;
/** The pre-upgrade snapshots ferry upgrade leaves (plain etcd snapshots): listed, never pruned. */
const PRE_UPGRADE_NAME = /^pre-upgrade-.+\.db$/;

export const backupFileName = (at: Date, node: string) => `ferry-backup-${at.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}-${node}.fbak`;

export interface BackupHeader {
  format: number;
  site: string;
  node: string;
  created: string;
  etcd: { endpoint: string; memberId: string; version: string; revision: string; dbSize: number };
  keyId: string;
  cipher: string;
  chunkBytes: number;
  /** base64, 32 bytes: the per-file key's salt. */
  salt: string;
}

export interface ManifestEntry {
  name: string;
  mode: number;
  bytes: number;
  sha256: string;
}

export interface BackupManifest {
  format: number;
  entries: ManifestEntry[];
  snapshot: { bytes: number; dbSha256: string };
}

const notOurs = (file: string, why: string) => new IntegrityError(Codes.backupNotOurs, `${file} is not a ferry backup: ${why}`, { hint: 'Name a file ferry backup save wrote (ferry backup list shows them).' });
const corrupt = (file: string, why: string) => new IntegrityError(Codes.backupCorrupt, `${file}: ${why}`, { hint: 'The backup was changed or damaged after it was written. Use another backup.' });

/** Reads a backup's plaintext header (no key needed). */
export async function readBackupHeader(file: string): Promise<{ header: BackupHeader; headerBytes: Buffer; bodyOffset: number }> {
  const fh = await fs.open(file, 'r');
  try {
    const head = Buffer.alloc(12);
    const { bytesRead } = await fh.read(head, 0, 12, 0);
    if (bytesRead < 12 || !head.subarray(0, 8).equals(BACKUP_MAGIC)) throw notOurs(file, 'it does not begin with FERRYBAK');
    const len = head.readUInt32BE(8);
    if (len < 2 || len > MAX_HEADER) throw notOurs(file, `a header of ${len} bytes`);
    const json = Buffer.alloc(len);
    const r = await fh.read(json, 0, len, 12);
    if (r.bytesRead < len) throw new IntegrityError(Codes.backupTruncated, `${file} ends inside its header`, { hint: 'The file was cut short. Use another backup.' });
    let h: Partial<BackupHeader>;
    try {
      h = JSON.parse(json.toString('utf8')) as Partial<BackupHeader>;
    } catch {
      throw notOurs(file, 'its header is not JSON');
    }
    if (typeof h.format !== 'number') throw notOurs(file, 'its header names no format');
    if (h.format !== BACKUP_FORMAT) throw new UsageError(Codes.backupFormat, `${file} is a backup of format ${h.format}; this ferry reads format ${BACKUP_FORMAT}`, { hint: 'Use the ferry release that wrote it (or a newer one).' });
    if (typeof h.keyId !== 'string' || typeof h.salt !== 'string' || typeof h.chunkBytes !== 'number' || h.chunkBytes < 1 || h.chunkBytes > 64 << 20 || typeof h.site !== 'string' || typeof h.node !== 'string' || typeof h.created !== 'string' || !h.etcd) {
      throw notOurs(file, 'its header lacks a field of format 1');
    }
    return { header: h as BackupHeader, headerBytes: Buffer.concat([head, json]), bodyOffset: 12 + len };
  } finally {
    await fh.close();
  }
}

/** Writes entries into a sealed stream, keeping each one's size and digest for the manifest. */
class EntryWriter {
  readonly entries: ManifestEntry[] = [];
  private cur: { name: string; mode: number; bytes: number; hash: ReturnType<typeof createHash> } | undefined;
  constructor(private readonly seal: SealWriter) {}

  async begin(name: string, mode: number): Promise<void> {
    const n = Buffer.from(name, 'utf8');
    const h = Buffer.alloc(1 + 2 + n.length + 4);
    h[0] = 0x45; // 'E'
    h.writeUInt16BE(n.length, 1);
    n.copy(h, 3);
    h.writeUInt32BE(mode & 0o7777, 3 + n.length);
    await this.seal.write(h);
    this.cur = { name, mode: mode & 0o7777, bytes: 0, hash: createHash('sha256') };
  }

  async data(b: Buffer): Promise<void> {
    for (let off = 0; off < b.length; off += MAX_SEGMENT) {
      const part = b.subarray(off, off + MAX_SEGMENT);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(part.length);
      await this.seal.write(len);
      await this.seal.write(part);
      this.cur!.hash.update(part);
      this.cur!.bytes += part.length;
    }
  }

  async end(): Promise<void> {
    await this.seal.write(Buffer.alloc(4));
    const c = this.cur!;
    this.entries.push({ name: c.name, mode: c.mode, bytes: c.bytes, sha256: c.hash.digest('hex') });
    this.cur = undefined;
  }

  async file(name: string, src: string, mode: number): Promise<void> {
    await this.begin(name, mode);
    for await (const chunk of createReadStream(src, { highWaterMark: 256 * 1024 })) await this.data(chunk as Buffer);
    await this.end();
  }

  async finish(): Promise<void> {
    await this.seal.write(Buffer.from('Z', 'latin1'));
    await this.seal.end();
  }
}

/** Every regular file below a directory, by host path, sorted (none when the directory is absent). */
async function treeFiles(root: string, hostDir: string): Promise<{ hostPath: string; mode: number }[]> {
  const out: { hostPath: string; mode: number }[] = [];
  const walk = async (dir: string) => {
    let names: string[];
    try {
      names = (await fs.readdir(path.join(root, dir))).sort();
    } catch {
      return;
    }
    for (const n of names) {
      const p = `${dir}/${n}`;
      const st = await fs.lstat(path.join(root, p));
      if (st.isDirectory()) await walk(p);
      else if (st.isFile()) out.push({ hostPath: p, mode: st.mode });
    }
  };
  await walk(hostDir);
  return out;
}

export interface SaveOptions {
  host: Host;
  /** Where to write; default BACKUP_DIR/<backupFileName> on this host. */
  out?: string;
  /** This server's etcd client address (ip, or ip:port); default this server's IP from the site state. */
  endpoint?: string;
  /** The key file; default BACKUP_KEY on this host. */
  keyFile?: string;
  chunkBytes?: number;
  now?: Date;
  log?: (l: string) => void;
}

export interface SaveResult {
  file: string;
  bytes: number;
  site: string;
  node: string;
  revision: string;
  snapshotBytes: number;
  files: number;
  seconds: number;
}

/** Takes a backup of this server: its etcd member's snapshot and the files a restore needs, sealed into one file. */
export async function saveBackup(o: SaveOptions): Promise<SaveResult> {
  const t0 = Date.now();
  const host = o.host;
  const key = await readBackupKeyFile(o.keyFile ?? host.p(BACKUP_KEY));
  const mirror = await new MirrorStore(host.root).read();
  if (!mirror) throw new UsageError(Codes.stateMissing, `no site state mirror at ${host.p(STATE_MIRROR)}`, { hint: 'Run ferry backup save on a server where ferry install finished (ferry state mirror copies the state).' });
  const state = mirror.value;
  const self = selfOf(state.nodes);
  const node = self?.name ?? os.hostname();
  const endpoint = o.endpoint ?? self?.ip;
  if (!endpoint) throw new UsageError(Codes.usage, `this machine's addresses name no server of the site ${state.answers.domain}`, { hint: 'Run ferry backup save on a server of the site.' });
  const tls = await etcdTls(host);
  if (!tls) throw new RemoteError(Codes.backupFailed, "this server has no etcd client certificate (kubeadm's healthcheck-client)", { hint: 'Run ferry backup save on a server (ferry status lists them).' });
  let status;
  try {
    status = await endpointStatus(tls, endpoint, 10_000);
  } catch (e) {
    throw new RemoteError(Codes.backupFailed, `etcd at ${endpoint} does not answer: ${(e as Error).message}`, { hint: 'Check this server\'s etcd (ferry status, crictl ps --name etcd) and run the same command again.', cause: e });
  }
  const at = o.now ?? new Date();
  const file = o.out ?? host.p(`${BACKUP_DIR}/${backupFileName(at, node)}`);
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const chunkBytes = o.chunkBytes ?? DEFAULT_CHUNK;
  const salt = randomBytes(32);
  const header: BackupHeader = {
    format: BACKUP_FORMAT,
    site: state.answers.domain,
    node,
    created: at.toISOString(),
    etcd: { endpoint, memberId: status.memberId, version: status.version, revision: status.revision, dbSize: status.dbSize },
    keyId: backupKeyId(key),
    cipher: CIPHER,
    chunkBytes,
    salt: salt.toString('base64'),
  };
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const lead = Buffer.alloc(12);
  BACKUP_MAGIC.copy(lead, 0);
  lead.writeUInt32BE(json.length, 8);
  const headerBytes = Buffer.concat([lead, json]);

  const tmp = tempPathFor(file);
  const release = removeOnSignal(tmp);
  const fh = await fs.open(tmp, 'wx', 0o600);
  let written = 0;
  const put = async (b: Buffer) => {
    await fh.write(b);
    written += b.length;
  };
  try {
    await put(headerBytes);
    const seal = new SealWriter(key, salt, SEAL_INFO, headerBytes, chunkBytes, put);
    const w = new EntryWriter(seal);
    await w.begin(SNAPSHOT_ENTRY, 0o600);
    let snap;
    try {
      snap = await snapshotStream(tls, endpoint, { write: (b) => w.data(b) });
    } catch (e) {
      if (isFerryError(e)) throw e;
      throw new RemoteError(Codes.backupFailed, `the snapshot from etcd at ${endpoint} broke off: ${(e as Error).message}`, { hint: 'Check this server\'s etcd (ferry status) and run the same command again.', cause: e });
    }
    await w.end();
    o.log?.(`etcd snapshot: ${snap.bytes} bytes at revision ${status.revision} or later, its sha256 checked`);
    const files = [...(await Promise.all(BACKED_UP_TREES.map((d) => treeFiles(host.root, d)))).flat()];
    for (const f of BACKED_UP_FILES) {
      const st = await fs.lstat(host.p(f)).catch(() => undefined);
      if (st?.isFile()) files.push({ hostPath: f, mode: st.mode });
    }
    for (const f of files) await w.file(`files${f.hostPath}`, host.p(f.hostPath), f.mode);
    const manifest: BackupManifest = { format: BACKUP_FORMAT, entries: [...w.entries], snapshot: { bytes: snap.bytes, dbSha256: snap.dbSha256 } };
    await w.begin(MANIFEST_ENTRY, 0o600);
    await w.data(Buffer.from(JSON.stringify(manifest), 'utf8'));
    await w.end();
    await w.finish();
    await fh.sync();
    await fh.close();
    await fs.rename(tmp, file);
    o.log?.(`${file}: ${written} bytes, ${files.length} files and the snapshot, sealed with key ${header.keyId}`);
    return { file, bytes: written, site: header.site, node, revision: status.revision, snapshotBytes: snap.bytes, files: files.length, seconds: (Date.now() - t0) / 1000 };
  } catch (e) {
    await fh.close().catch(() => {});
    await fs.rm(tmp, { force: true });
    throw e;
  } finally {
    release();
  }
}

/** What a reader of a backup's entries does with each: a sink for its bytes, or undefined to only check it. */
export type EntrySink = { data(b: Buffer): Promise<void>; end(): Promise<void>; abort(): Promise<void> } | undefined;

export interface OpenResult {
  header: BackupHeader;
  manifest: BackupManifest;
  fileBytes: number;
}

/**
 * Reads a whole backup with its key, checking everything: the header's key id, every frame's tag,
 * the entries' framing, each entry against the manifest, and the snapshot against the sha256 etcd
 * appended to it. `onEntry` may take each entry's bytes as they pass; nothing is held in memory.
 */
export async function openBackup(file: string, key: Buffer, onEntry: (name: string, mode: number) => Promise<EntrySink> = async () => undefined): Promise<OpenResult> {
  const { header, headerBytes, bodyOffset } = await readBackupHeader(file);
  if (header.keyId !== backupKeyId(key)) {
    throw new UsageError(Codes.backupWrongKey, `${file} was sealed with key ${header.keyId}; the key given is ${backupKeyId(key)}`, { hint: `Use the backup key of the site ${header.site} (${BACKUP_KEY} on its servers, or where it was kept off-site).` });
  }
  const st = await fs.stat(file);
  const r = new ByteReader(createReadStream(file, { start: bodyOffset, highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer>);
  const plain = new ByteReader(openSealed(r, key, Buffer.from(header.salt, 'base64'), SEAL_INFO, headerBytes, header.chunkBytes, file));
  const need = async (n: number, what: string) => {
    const b = await plain.read(n);
    if (!b) throw corrupt(file, `its contents end inside ${what}`);
    return b;
  };
  const seen: ManifestEntry[] = [];
  let manifest: BackupManifest | undefined;
  let snapshot: { bytes: number; dbSha256?: string } | undefined;
  for (;;) {
    const kind = (await need(1, 'an entry'))[0];
    if (kind === 0x5a) break; // 'Z'
    if (kind !== 0x45 || manifest) throw corrupt(file, `an entry of unknown kind ${kind} at byte ${plain.consumed - 1} of its contents`);
    const nameLen = (await need(2, 'an entry name')).readUInt16BE(0);
    if (nameLen < 1 || nameLen > MAX_NAME) throw corrupt(file, `an entry name of ${nameLen} bytes`);
    const name = (await need(nameLen, 'an entry name')).toString('utf8');
    if (!safeEntryName(name)) throw corrupt(file, `an entry named ${JSON.stringify(name.slice(0, 100))}`);
    const mode = (await need(4, 'an entry mode')).readUInt32BE(0);
    const isManifest = name === MANIFEST_ENTRY;
    const isSnapshot = name === SNAPSHOT_ENTRY;
    const sink = isManifest ? undefined : await onEntry(name, mode);
    const hash = createHash('sha256');
    const check = isSnapshot ? new SnapshotCheck() : undefined;
    const manifestParts: Buffer[] = [];
    let bytes = 0;
    try {
      for (;;) {
        const len = (await need(4, `the entry ${name}`)).readUInt32BE(0);
        if (!len) break;
        if (len > MAX_SEGMENT) throw corrupt(file, `a segment of ${len} bytes in ${name}`);
        const seg = await need(len, `the entry ${name}`);
        hash.update(seg);
        check?.update(seg);
        bytes += len;
        if (isManifest) {
          if (bytes > 16 << 20) throw corrupt(file, 'a manifest over 16 MiB');
          manifestParts.push(Buffer.from(seg));
        } else await sink?.data(seg);
      }
      if (check) {
        const d = check.done();
        if (!d) throw corrupt(file, 'its etcd snapshot does not match the sha256 etcd appended to it');
        snapshot = { bytes: check.bytes, dbSha256: d };
      }
      await sink?.end();
    } catch (e) {
      await sink?.abort();
      throw e;
    }
    if (isManifest) {
      try {
        manifest = JSON.parse(Buffer.concat(manifestParts).toString('utf8')) as BackupManifest;
      } catch {
        throw corrupt(file, 'its manifest is not JSON');
      }
    } else seen.push({ name, mode, bytes, sha256: hash.digest('hex') });
  }
  if (!(await plain.atEnd())) throw corrupt(file, 'its contents go on after their end mark');
  if (!manifest || !Array.isArray(manifest.entries)) throw corrupt(file, 'it has no manifest');
  const want = JSON.stringify(manifest.entries.map((e) => [e.name, e.mode, e.bytes, e.sha256]));
  if (want !== JSON.stringify(seen.map((e) => [e.name, e.mode, e.bytes, e.sha256]))) throw corrupt(file, 'its entries do not match its manifest');
  if (!snapshot || seen[0]?.name !== SNAPSHOT_ENTRY || manifest.snapshot?.dbSha256 !== snapshot.dbSha256) throw corrupt(file, 'its etcd snapshot is missing or not the one its manifest names');
  return { header, manifest, fileBytes: st.size };
}

/** Entry names are relative, without `.` or `..` segments, under the few places a backup writes. */
export function safeEntryName(name: string): boolean {
  if (name === SNAPSHOT_ENTRY || name === MANIFEST_ENTRY) return true;
  if (!name.startsWith('files/') || /[\x00-\x1f\x7f\\]/.test(name)) return false;
  const segs = name.slice('files/'.length).split('/');
  return segs.length > 1 && segs.every((s) => s && s !== '.' && s !== '..');
}

/** `ferry backup verify`: reads the whole backup with the key, writing nothing. */
export async function verifyBackup(file: string, keyFile: string): Promise<OpenResult & { seconds: number }> {
  const t0 = Date.now();
  const key = await readBackupKeyFile(keyFile, `Name the site's backup key with --key (it is ${BACKUP_KEY} on every server of the site).`);
  const r = await openBackup(file, key);
  return { ...r, seconds: (Date.now() - t0) / 1000 };
}

export interface BackupListing {
  file: string;
  name: string;
  kind: 'backup' | 'pre-upgrade';
  bytes: number;
  modified: string;
  /** A backup's header (undefined for a pre-upgrade snapshot, or a backup whose header does not read). */
  header?: BackupHeader;
  /** Why the header does not read (a damaged or foreign file with a backup's name). */
  problem?: string;
}

/** The backups and pre-upgrade snapshots in a directory, newest first by their time. */
export async function listBackups(dir: string): Promise<BackupListing[]> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch {
    return [];
  }
  const out: BackupListing[] = [];
  for (const name of names) {
    const kind = BACKUP_NAME.test(name) ? 'backup' : PRE_UPGRADE_NAME.test(name) ? 'pre-upgrade' : undefined;
    if (!kind) continue;
    const file = path.join(dir, name);
    const st = await fs.lstat(file);
    if (!st.isFile()) continue;
    const row: BackupListing = { file, name, kind, bytes: st.size, modified: st.mtime.toISOString() };
    if (kind === 'backup') {
      try {
        row.header = (await readBackupHeader(file)).header;
      } catch (e) {
        row.problem = (e as Error).message;
      }
    }
    out.push(row);
  }
  // A backup's time is the one in its name (its header's, to the second); a snapshot's, its mtime.
  const when = (r: BackupListing) => {
    const m = BACKUP_NAME.exec(r.name)?.[1];
    return m ? Date.parse(`${m.slice(0, 4)}-${m.slice(4, 6)}-${m.slice(6, 8)}T${m.slice(9, 11)}:${m.slice(11, 13)}:${m.slice(13, 15)}Z`) : Date.parse(r.modified);
  };
  return out.sort((a, b) => when(b) - when(a) || b.name.localeCompare(a.name));
}

/**
 * What a prune removes: the backups past the newest `keep`, only files with a backup's name whose
 * header reads as ferry's (pre-upgrade snapshots and anything else stay).
 */
export function pruneCandidates(list: BackupListing[], keep: number): BackupListing[] {
  const ours = list.filter((r) => r.kind === 'backup' && r.header);
  return ours.slice(keep);
}

export async function pruneBackups(dir: string, keep: number, confirm: (doomed: BackupListing[]) => Promise<boolean>): Promise<{ removed: BackupListing[]; kept: number; stale: string[]; confirmed: boolean }> {
  if (!Number.isInteger(keep) || keep < 1) throw new UsageError(Codes.usage, `--keep ${keep}: keep at least one backup`, { hint: `--keep ${BACKUP_KEEP} (a week at one every 6 hours)` });
  const list = await listBackups(dir);
  const doomed = pruneCandidates(list, keep);
  const kept = list.filter((r) => r.kind === 'backup').length - doomed.length;
  if (!doomed.length) return { removed: [], kept, stale: await sweepStaleTemps(dir, (b) => BACKUP_NAME.test(b)), confirmed: true };
  if (!(await confirm(doomed))) return { removed: [], kept: kept + doomed.length, stale: [], confirmed: false };
  for (const r of doomed) await fs.rm(r.file, { force: true });
  // A save killed midway leaves its temporary file (its writer's pid in the name, that process gone).
  const stale = await sweepStaleTemps(dir, (b) => BACKUP_NAME.test(b));
  return { removed: doomed, kept, stale, confirmed: true };
}

export interface RestoreSnapshotOptions {
  file: string;
  key: Buffer;
  /** The new member's data directory: it must not exist, or be empty. */
  dataDir: string;
  /** The new member's name and peer URL (its new IP: https://10.0.0.21:2380). */
  name: string;
  peerUrl: string;
  /**
   * Runs `etcdutl` with these arguments (the snapshot file and the data directory are host paths):
   * a local binary in tests, `ctr run` of the site's etcd image on a node.
   */
  etcdutl: (args: string[]) => Promise<{ code: number; stderr: string }>;
  /** Where the decrypted snapshot is kept while etcdutl reads it (0700; removed after). Default: beside dataDir. */
  workDir?: string;
}

/**
 * Restores a backup's etcd snapshot into a fresh data directory as a new single-member cluster
 * (`etcdutl snapshot restore` with the new name and peer URL, so the member's address is its new
 * IP). The backup is checked whole before etcdutl runs; the decrypted snapshot lives only in a
 * 0700 directory for as long as etcdutl needs it.
 */
export async function restoreSnapshot(o: RestoreSnapshotOptions): Promise<{ header: BackupHeader; snapshotBytes: number; seconds: number }> {
  const t0 = Date.now();
  const existing = await fs.readdir(o.dataDir).catch(() => undefined);
  if (existing?.length) throw new HostError(Codes.restoreFailed, `${o.dataDir} is not empty`, { hint: 'Restore into a new, empty data directory; etcd\'s data there is never overwritten.' });
  const work = await fs.mkdtemp(path.join(o.workDir ?? path.dirname(path.resolve(o.dataDir)), '.ferry-restore-'));
  const release = removeOnSignal(work);
  try {
    await fs.chmod(work, 0o700);
    const snap = path.join(work, 'snapshot.db');
    const fh = await fs.open(snap, 'wx', 0o600);
    const opened = await openBackup(o.file, o.key, async (name) =>
      name === SNAPSHOT_ENTRY
        ? {
            data: async (b) => void (await fh.write(b)),
            end: async () => {
              await fh.sync();
              await fh.close();
            },
            abort: () => fh.close().catch(() => {}),
          }
        : undefined,
    );
    const r = await o.etcdutl(['snapshot', 'restore', snap, '--data-dir', o.dataDir, '--name', o.name, '--initial-cluster', `${o.name}=${o.peerUrl}`, '--initial-advertise-peer-urls', o.peerUrl]);
    if (r.code !== 0) throw new HostError(Codes.restoreFailed, `etcdutl snapshot restore failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-2).join(' / ')}`, { hint: 'The backup itself checked out; see etcdutl\'s message.' });
    return { header: opened.header, snapshotBytes: opened.manifest.snapshot.bytes, seconds: (Date.now() - t0) / 1000 };
  } finally {
    await fs.rm(work, { recursive: true, force: true });
    release();
  }
}

/** Where the etcd image keeps etcdutl (upstream's registry.k8s.io/etcd does, and the site in a box's). */
export const IMAGE_ETCDUTL = '/usr/local/bin/etcdutl';

/**
 * `ctr` arguments that run etcdutl from the etcd image already in containerd (nodes have no etcdutl
 * of their own), with `dir` (holding both the decrypted snapshot and the new data directory, as
 * restoreSnapshot lays them out) bound at the same path, and the container removed after.
 */
export function etcdutlCtrArgs(o: { image: string; dir: string; id: string; namespace?: string }, args: string[]): string[] {
  return ['-n', o.namespace ?? 'k8s.io', 'run', '--rm', '--mount', `type=bind,src=${o.dir},dst=${o.dir},options=rbind:rw`, o.image, o.id, IMAGE_ETCDUTL, ...args];
}

/**
 * Writes a backup's files (files/<host path>) under `host`, for a restore on a new host: only
 * those `want` accepts, each 0600 or its own mode, after the whole backup checked out.
 * Files are staged first and moved into place only when every check passed.
 */
export async function restoreFiles(o: { file: string; key: Buffer; host: Host; want?: (hostPath: string) => boolean }): Promise<string[]> {
  // Staged on the host's own disk (keys among them), not in a shared /tmp.
  await fs.mkdir(o.host.p(FERRY_ROOT), { recursive: true, mode: 0o700 });
  const stage = await fs.mkdtemp(path.join(o.host.p(FERRY_ROOT), '.restore-files-'));
  const release = removeOnSignal(stage);
  const staged: { hostPath: string; tmp: string; mode: number }[] = [];
  try {
    await fs.chmod(stage, 0o700);
    await openBackup(o.file, o.key, async (name, mode) => {
      if (!name.startsWith('files/')) return undefined;
      const hostPath = name.slice('files'.length);
      if (o.want && !o.want(hostPath)) return undefined;
      const tmp = path.join(stage, String(staged.length));
      const fh = await fs.open(tmp, 'wx', 0o600);
      staged.push({ hostPath, tmp, mode });
      return { data: async (b) => void (await fh.write(b)), end: () => fh.close(), abort: () => fh.close().catch(() => {}) };
    });
    for (const s of staged) {
      const dest = o.host.p(s.hostPath);
      await fs.mkdir(path.dirname(dest), { recursive: true, mode: 0o755 });
      await fs.copyFile(s.tmp, dest);
      await fs.chmod(dest, s.mode & 0o777);
    }
    return staged.map((s) => s.hostPath);
  } finally {
    await fs.rm(stage, { recursive: true, force: true });
    release();
  }
}
