import { createHash, createPublicKey, type Hash, type KeyObject } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Codes, FerryError, IntegrityError, UsageError } from '../errors.js';
import { fingerprint, verifyBytes } from '../sign/keys.js';
import { sha256Hex } from '../util/digest.js';
import { ioError, isErrno } from '../util/fsx.js';
import { HashWorkers } from '../util/hash-workers.js';
import { silentReporter, type Reporter } from '../util/progress.js';
import { checkBundlePath, checkEntryPath, isPartsFile, parseBundleManifest, parseChecksums, partsSigningBytes, readPartsManifest, refuse as bad, TABLE, type BundleManifest, type PartsManifest, type TableEntry } from './format.js';
import { BASE_JSON, BASE_SIG, parseDelta, type DeltaManifest } from './delta.js';
import { ELF_HEAD, runtimeEntryProblem } from './runtime.js';
import { readTar, TarFormatError, type TarEntry } from './tarread.js';
import { fileHeader } from './tarwriter.js';

export interface VerifyOptions {
  /** The trusted public key (`--trust ferry.pub`). */
  trust?: KeyObject;
  /** Without a trusted key: shown the fingerprint, says whether the operator accepts it. */
  confirm?: (fingerprint: string) => Promise<boolean>;
  reporter?: Reporter;
  /**
   * Unpack: called for each content entry once it is known to be listed; returns the file to
   * write into (a staging path), or undefined to hash it without keeping it (a store that holds
   * it already). The bytes are hashed as they are written.
   */
  extractTo?: (entryPath: string, mode: number) => Promise<string | undefined>;
  /** Stop after the signed table (and a delta's base.json): says who signed the bundle, checks none of its content. */
  tableOnly?: boolean;
  /** Told where each content entry's data lies in the archive, so it can be copied out later (copyEntry). */
  onEntry?: (entryPath: string, at: EntryPlace) => void;
}

/** An entry's data as a byte range of the archive (of the parts read as one stream). */
export interface EntryPlace {
  offset: number;
  size: number;
}

export interface VerifyResult {
  manifest: BundleManifest;
  /** The signed table's bytes, so an unpacked tree keeps them. */
  table: Record<TableEntry, Buffer>;
  fingerprint: string;
  entries: number;
  bytes: number;
  /** A delta bundle: its signed base.json (the base it needs, the entries it leaves to it), and the bytes to keep. */
  delta?: { manifest: DeltaManifest; bytes: Buffer; sig: Buffer };
}

const MAX_TABLE = 64 << 20;

/**
 * Every listed path must be able to be a file at once: none may be another's directory (`a` and
 * `a/b`), and none may end in `/`. Checked on the signed list, before any content is read, so
 * unpack never meets a tree it cannot write.
 */
function checkTree(paths: Iterable<string>): void {
  const files = new Set<string>();
  const dirs = new Map<string, string>();
  for (const p of paths) {
    if (p.endsWith('/')) throw bad(Codes.bundleTraversal, `entry "${p}" is not a canonical path: a file's name does not end in /`);
    files.add(p);
    for (let i = p.indexOf('/'); i > 0; i = p.indexOf('/', i + 1)) if (!dirs.has(p.slice(0, i))) dirs.set(p.slice(0, i), p);
  }
  for (const p of files) {
    const under = dirs.get(p);
    if (under) throw bad(Codes.bundleEntryConflict, `entries ${p} and ${under} cannot both exist: ${p} would be a file and a directory`);
  }
}

function linkEscapes(entryPath: string, target: string): boolean {
  if (target.startsWith('/')) return true;
  const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(entryPath), target));
  return resolved === '..' || resolved.startsWith('../');
}

/** The archive as one byte stream: a file, or parts checked against a signed parts manifest. */
interface Source {
  /** Pulled directly, without read-ahead, so a failure is blamed on the part being read. */
  stream: AsyncIterable<Buffer>;
  close(): void;
  /** For parts: after a failure, says whether the part being read is not the one listed. */
  partProblem(): Promise<FerryError | undefined>;
  parts?: PartsManifest;
}

async function openSource(input: string): Promise<Source> {
  await checkBundlePath(input);
  if (!isPartsFile(input)) {
    try {
      await fs.access(input);
    } catch (e) {
      throw new UsageError(Codes.bundleRead, `cannot read bundle ${input}: ${(e as Error).message}`, { hint: 'Check the path; for a split bundle pass FILE.parts.json.', cause: e });
    }
    const stream = createReadStream(input, { highWaterMark: 1 << 20 });
    return { stream, close: () => stream.destroy(), partProblem: async () => undefined };
  }
  const m = await readPartsManifest(input);
  const dir = path.dirname(input);
  const missing = (await Promise.all(m.parts.map((p) => fs.stat(path.join(dir, p.name)).then(() => undefined, () => p.name)))).filter((n): n is string => !!n);
  if (missing.length) {
    // Only the missing names: a bundle may have hundreds of parts.
    const what = missing.length === 1 ? `part ${missing[0]} of ${m.bundle} is missing` : `${missing.length} of ${m.parts.length} parts of ${m.bundle} are missing`;
    throw new IntegrityError(Codes.bundlePartMissing, `${what} beside ${input}${missing.length === 1 ? '' : `: ${missing.join(', ')}`}`, {
      hint: `Copy ${missing.length === 1 ? 'that part' : 'those parts'} into ${dir} and run again.`,
    });
  }
  for (const p of m.parts) {
    const st = await fs.stat(path.join(dir, p.name));
    if (st.size !== p.size) throw new IntegrityError(Codes.bundlePartMismatch, `part ${p.name} is ${st.size} bytes, ${m.bundle} lists ${p.size}`, { hint: 'That part is damaged or belongs to another bundle. Copy it again.' });
  }
  let current: { name: string; hash: Hash; fh: FileHandle; expect: string } | undefined;
  let partFailure: FerryError | undefined;
  async function* gen(): AsyncGenerator<Buffer> {
    for (const p of m.parts) {
      const fh = await fs.open(path.join(dir, p.name), 'r');
      current = { name: p.name, hash: createHash('sha256'), fh, expect: p.sha256 };
      try {
        for (;;) {
          const buf = Buffer.allocUnsafe(1 << 20);
          const { bytesRead } = await fh.read(buf, 0, buf.length, null);
          if (!bytesRead) break;
          const chunk = buf.subarray(0, bytesRead);
          current.hash.update(chunk);
          yield chunk;
        }
        if (current.hash.digest('hex') !== p.sha256) {
          throw (partFailure = new IntegrityError(Codes.bundlePartMismatch, `part ${p.name} does not match ${m.bundle}'s parts manifest`, { hint: 'That part is damaged or belongs to another bundle. Copy it again from the source.' }));
        }
      } finally {
        await fh.close();
        current = undefined;
      }
    }
  }
  const it = gen();
  return {
    stream: it,
    close: () => void it.return(undefined).catch(() => {}),
    parts: m,
    // Finish hashing the part that was being read: a foreign part explains the failure better.
    async partProblem() {
      if (partFailure) return partFailure;
      const c = current;
      if (!c) return undefined;
      try {
        const buf = Buffer.allocUnsafe(1 << 20);
        for (;;) {
          const { bytesRead } = await c.fh.read(buf, 0, buf.length, null);
          if (!bytesRead) break;
          c.hash.update(buf.subarray(0, bytesRead));
        }
        if (c.hash.digest('hex') !== c.expect) {
          return new IntegrityError(Codes.bundlePartMismatch, `part ${c.name} does not match ${m.bundle}'s parts manifest`, { hint: 'That part is damaged or belongs to another bundle. Copy it again from the source.' });
        }
      } catch {
        /* the stream is closing */
      }
      return undefined;
    },
  };
}

/** The caller's own callback failed (Ctrl-C at the trust prompt): its error passes through as it is, not as a bundle's fault. */
class FromCaller {
  constructor(readonly error: unknown) {}
}

/** Decides which key to trust: --trust, or the bundle's own key once the operator confirms it. */
async function trustedKey(o: VerifyOptions, signerPem: string | undefined, what: string): Promise<KeyObject> {
  if (o.trust) return o.trust;
  if (!signerPem) throw new IntegrityError(Codes.bundleUnsigned, `${what} names no signing key`, { hint: 'Pass --trust ferry.pub.' });
  let key: KeyObject;
  try {
    key = createPublicKey(signerPem);
  } catch (e) {
    throw bad(Codes.bundleFormat, `${what} carries an unreadable signing key: ${(e as Error).message}`);
  }
  const fp = fingerprint(key);
  let ok = false;
  try {
    ok = !!o.confirm && (await o.confirm(fp));
  } catch (e) {
    throw new FromCaller(e);
  }
  if (!ok) {
    throw new IntegrityError(Codes.bundleUntrusted, `the bundle is signed by key ${fp}, which was not confirmed`, {
      hint: 'Compare the fingerprint with the one the bundle\'s maker gave you, then confirm it, or pass --trust ferry.pub.',
    });
  }
  return key;
}

/**
 * Checks a bundle as it streams: the signature over checksums.txt first, then every entry against
 * it. Refuses unlisted, duplicate and missing entries, unsafe paths, links and device nodes. With
 * `extractTo`, verified bytes land in staging files as they stream; nothing else is written.
 */
export async function verifyBundle(input: string, o: VerifyOptions = {}): Promise<VerifyResult> {
  try {
    return await verifyStream(input, o);
  } catch (e) {
    if (e instanceof FromCaller) throw e.error;
    throw e;
  }
}

async function verifyStream(input: string, o: VerifyOptions): Promise<VerifyResult> {
  const reporter = o.reporter ?? silentReporter;
  const src = await openSource(input);
  let key: KeyObject | undefined;
  if (src.parts) {
    key = await trustedKey(o, src.parts.signer?.publicKey, input);
    if (!src.parts.signature) throw new IntegrityError(Codes.bundleUnsigned, `${input} is not signed`, { hint: 'Split bundles carry a signed parts manifest; copy it again from the source.' });
    verifyBytes(key, partsSigningBytes(src.parts), src.parts.signature, input, src.parts.signer?.fingerprint);
  }

  let manifestBytes: Buffer | undefined;
  let manifest: BundleManifest | undefined;
  let checksumsBytes: Buffer | undefined;
  let sigBytes: Buffer | undefined;
  let sums: Map<string, string> | undefined;
  let delta: { manifest: DeltaManifest; bytes: Buffer; sig: Buffer } | undefined;
  let deltaBytes: Buffer | undefined;
  const fromBase = new Set<string>();
  const seen = new Set<string>();
  let bytes = 0;
  // Entries hash on worker threads while the reader moves on; digests are checked in entry order.
  const hashes = new HashWorkers();
  let pending: { p: string; want: string; digest: Promise<string>; why?: string }[] = [];
  const settle = async (keep: number) => {
    while (pending.length > keep) {
      const { p, want, digest, why } = pending.shift()!;
      const got = await digest;
      if (got !== want) {
        pending = [];
        throw bad(Codes.bundleChecksum, `entry ${p} does not match its checksum (expected ${want}, got ${got})`);
      }
      if (why) {
        pending = [];
        throw new IntegrityError(Codes.runtimeArch, `entry ${p} cannot run on its architecture: ${why}`, { hint: 'The bundle was built with a wrong spec.runtime.node; rebuild it with the right runtime.' });
      }
    }
  };

  const readSmall = async (e: TarEntry, max: number): Promise<Buffer> => {
    if (e.size > max) throw bad(Codes.bundleFormat, `entry ${e.path} is ${e.size} bytes, more than ${max} allowed`);
    const chunks: Buffer[] = [];
    for await (const c of e.data) chunks.push(c);
    return Buffer.concat(chunks);
  };

  const onHead = async (e: TarEntry, name: TableEntry) => {
    const b = await readSmall(e, name === 'checksums.txt.sig' ? 4096 : MAX_TABLE);
    if (name === 'bundle.json') {
      manifestBytes = b;
      manifest = parseBundleManifest(b, input);
    } else if (name === 'checksums.txt') {
      checksumsBytes = b;
      if (src.parts && sha256Hex(b) !== src.parts.checksums) {
        throw new IntegrityError(Codes.bundlePartMismatch, `the parts do not belong to ${src.parts.bundle}: its checksums differ`, { hint: 'A part from another bundle is mixed in. Copy the parts again.' });
      }
    } else {
      sigBytes = b;
      key ??= await trustedKey(o, manifest?.signer?.publicKey, input);
      verifyBytes(key, checksumsBytes!, b.toString('utf8'), 'checksums.txt', manifest?.signer?.fingerprint);
      sums = parseChecksums(checksumsBytes!.toString('utf8'));
      checkTree([...TABLE, ...sums.keys()]);
      if (sums.get('bundle.json') !== sha256Hex(manifestBytes!)) throw bad(Codes.bundleChecksum, 'bundle.json does not match its signed checksum');
      seen.add('bundle.json');
      reporter.info(`signature ok: signed by ${fingerprint(key)}; ${sums.size + 2} entries: checksums.txt, its signature and the ${sums.size} it lists`);
    }
  };

  const onContent = async (e: TarEntry) => {
    const p = e.path;
    const want = sums!.get(p);
    if (!want) throw bad(Codes.bundleUnlisted, `entry ${p} is not listed in checksums.txt`);
    if (fromBase.has(p)) throw bad(Codes.bundleFormat, `entry ${p} is carried, yet ${BASE_JSON} takes it from the base`);
    if (seen.has(p)) throw bad(Codes.bundleDuplicate, `entry ${p} appears twice`);
    seen.add(p);
    o.onEntry?.(p, { offset: e.offset, size: e.size });
    const h = hashes.entry(e.size);
    const target = o.extractTo ? await o.extractTo(p, e.mode) : undefined;
    // A failure to write the extracted copy is the host's (disk full, read-only), not the bundle's.
    const local = (err: unknown) => (err instanceof FerryError || err instanceof TarFormatError ? err : ioError(`cannot write ${target}`, err));
    const fh = target ? await fs.open(target, 'wx', e.mode & 0o755).catch((err: unknown) => Promise.reject(local(err))) : undefined;
    reporter.blobStart(e.size);
    let head = Buffer.alloc(0);
    try {
      for await (const c of e.data) {
        if (head.length < ELF_HEAD) head = Buffer.concat([head, c.subarray(0, ELF_HEAD - head.length)]);
        const hashed = h.update(c);
        bytes += c.length;
        reporter.bytes(c.length);
        if (fh) await fh.write(c).catch((err: unknown) => Promise.reject(local(err)));
        await hashed;
      }
    } finally {
      await fh?.close().catch((err: unknown) => Promise.reject(local(err)));
    }
    reporter.blobDone();
    // Signed and listed, yet a runtime labelled for the wrong arch would only fail once a node runs it;
    // checked after its digest, so a tampered entry is refused as tampered first.
    const why = runtimeEntryProblem(p, head);
    pending.push({ p, want, digest: h.digest(), ...(why ? { why } : {}) });
  };

  try {
    let i = 0;
    for await (const e of readTar(src.stream)) {
      const p = e.path;
      checkEntryPath(p);
      const t = e.type;
      if (t === 'File' && p.endsWith('/')) throw bad(Codes.bundleTraversal, `entry "${p}" is not a canonical path: a file's name does not end in /`);
      if (t === 'SymbolicLink' || t === 'Link') {
        if (linkEscapes(p, e.linkpath)) throw bad(Codes.bundleLink, `entry ${p} is a link to ${e.linkpath}, outside the bundle`);
        throw bad(Codes.bundleLinkUnsupported, `entry ${p} is a link; ferry bundles hold only files`);
      }
      if (t === 'CharacterDevice' || t === 'BlockDevice' || t === 'FIFO' || t === 'ContiguousFile') throw bad(Codes.bundleSpecial, `entry ${p} is a ${t}, not a file`);
      if (t !== 'File') throw bad(Codes.bundleSpecial, `entry ${p} has unsupported type ${t}`);
      // ferry writes one canonical header per entry; any other byte there is tampering.
      if ((e.mode !== 0o644 && e.mode !== 0o755) || !e.raw.equals(fileHeader(p, e.size, e.mode))) {
        throw bad(Codes.bundleFormat, `the header of entry ${p} is not the one ferry writes`);
      }
      if (i < TABLE.length) {
        if (p !== TABLE[i]) throw bad(Codes.bundleFormat, `entry ${i + 1} is ${p}; a bundle starts with ${TABLE.join(', ')}`);
        await onHead(e, TABLE[i]!);
      } else if (i === TABLE.length && p === BASE_JSON) {
        // A delta: the full table, then its own signed base.json (see delta.ts).
        if (sums!.has(BASE_JSON)) throw bad(Codes.bundleFormat, `checksums.txt lists ${BASE_JSON}, which only a delta's own table may hold`);
        deltaBytes = await readSmall(e, MAX_TABLE);
      } else if (i === TABLE.length + 1 && deltaBytes) {
        if (p !== BASE_SIG) throw bad(Codes.bundleFormat, `entry ${i + 1} is ${p}; a delta's ${BASE_JSON} is followed by ${BASE_SIG}`);
        const sig = await readSmall(e, 4096);
        verifyBytes(key!, deltaBytes, sig.toString('utf8'), BASE_JSON, manifest?.signer?.fingerprint);
        const d = parseDelta(deltaBytes, input);
        for (const q of d.fromBase) if (!sums!.has(q)) throw bad(Codes.bundleFormat, `${BASE_JSON} takes ${q} from the base, but checksums.txt does not list it`);
        delta = { manifest: d, bytes: deltaBytes, sig };
        for (const q of d.fromBase) fromBase.add(q);
        reporter.info(`a delta on ${d.base.id}: ${d.fromBase.length} of ${sums!.size} entries come from it`);
      } else if (o.tableOnly) {
        break;
      } else {
        if ((TABLE as readonly string[]).includes(p)) throw bad(Codes.bundleDuplicate, `entry ${p} appears twice`);
        await settle(16);
        await onContent(e);
      }
      i++;
      if (o.tableOnly && i === TABLE.length + 2 && delta) break;
    }
    if (deltaBytes && !delta) throw bad(Codes.bundleTruncated, `${input} ends after ${BASE_JSON}, before its signature`);
    await settle(0);
  } catch (err) {
    // Ask about the part before closing the stream: closing ends the part being read.
    const partErr = await src.partProblem();
    src.close();
    if (partErr) throw partErr;
    // An entry still hashing came before whatever failed now, so its mismatch is the one to report.
    await settle(0);
    if (err instanceof TarFormatError) {
      if (err.kind === 'truncated' && sums) {
        const missing = [...sums.keys()].filter((q) => !seen.has(q) && !fromBase.has(q));
        throw bad(Codes.bundleTruncated, `the archive is cut short: ${err.message}${missing.length ? `; ${missing.length} listed entries never came (first: ${missing[0]})` : ''}`, 'Copy the bundle again; check free space on the medium it came on.');
      }
      throw bad(err.kind === 'truncated' ? Codes.bundleTruncated : Codes.bundleFormat, `the archive is ${err.kind === 'truncated' ? 'cut short' : 'malformed'}: ${err.message}`);
    }
    if (err instanceof FerryError || err instanceof FromCaller) throw err;
    // An errno is the medium or the host failing to give the bytes, not a bundle cut short.
    if (isErrno(err)) throw ioError(`cannot read ${input}`, err);
    throw bad(Codes.bundleTruncated, `cannot read the archive: ${(err as Error).message}`);
  } finally {
    await hashes.close();
  }
  if (!sums || !manifest) throw bad(Codes.bundleTruncated, `${input} ends before its signed table: it is empty, cut short, or not a ferry bundle`);
  const result = (entries: number): VerifyResult => ({ manifest: manifest!, table: { 'bundle.json': manifestBytes!, 'checksums.txt': checksumsBytes!, 'checksums.txt.sig': sigBytes! }, fingerprint: fingerprint(key!), entries, bytes, ...(delta ? { delta } : {}) });
  if (o.tableOnly) {
    src.close();
    return result(TABLE.length + (delta ? 2 : 0));
  }
  const missing = [...sums.keys()].filter((p) => !seen.has(p) && !fromBase.has(p));
  if (missing.length) {
    throw bad(Codes.bundleTruncated, `the archive ends before ${missing.length} listed entries (first: ${missing[0]}): it was cut short`, 'Copy the bundle again; check free space on the medium it came on.');
  }
  return result(seen.size + 2 + (delta ? 2 : 0));
}

/** The bytes [offset, offset + size) of a bundle file or of its parts read as one stream. */
async function* rangeOf(input: string, at: EntryPlace): AsyncGenerator<Buffer> {
  const pieces: { file: string; start: number }[] = [];
  if (!isPartsFile(input)) pieces.push({ file: input, start: 0 });
  else {
    let start = 0;
    for (const p of (await readPartsManifest(input)).parts) {
      pieces.push({ file: path.join(path.dirname(input), p.name), start });
      start += p.size;
    }
  }
  const end = at.offset + at.size;
  for (let i = 0; i < pieces.length; i++) {
    const from = Math.max(at.offset, pieces[i]!.start);
    const to = Math.min(end, pieces[i + 1]?.start ?? end);
    if (to <= from) continue;
    yield* createReadStream(pieces[i]!.file, { start: from - pieces[i]!.start, end: to - pieces[i]!.start - 1 }) as AsyncIterable<Buffer>;
  }
}

/**
 * Copies one entry of a bundle verifyBundle has read (its place from `onEntry`) into `dest`, a new
 * file, and checks its bytes against the signed checksum again: the bundle may have changed since.
 */
export async function copyEntry(input: string, entryPath: string, at: EntryPlace, sha256: string, dest: string, mode = 0o644): Promise<void> {
  const h = createHash('sha256');
  const fh = await fs.open(dest, 'wx', mode);
  try {
    for await (const c of rangeOf(input, at)) {
      h.update(c);
      await fh.write(c);
    }
  } finally {
    await fh.close();
  }
  if (h.digest('hex') !== sha256) throw bad(Codes.bundleChecksum, `entry ${entryPath} no longer matches its checksum: ${input} changed while it was read`);
}
