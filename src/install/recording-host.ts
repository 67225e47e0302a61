import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { KubernetesObject } from '@kubernetes/client-node';
import { t as listTar } from 'tar';
import { checkDowngrade, checkSigner, type UnpackOptions } from '../bundle/unpack.js';
import { Codes, HostError } from '../errors.js';
import { installedHere } from './site-store.js';
import { Host, isExecutableFile, type RunResult, type UnpackSummary, type WaitOptions } from './host.js';

/*
 * A Host that changes nothing: every write, copy, removal, command and apply is recorded instead of
 * done, and later reads in the same run see what was recorded (an overlay on the real root, which
 * is only ever read). A dry run hands it the very steps a real run takes, so the two cannot drift.
 */

/** One effect a step would have on its host, in the order the steps would have it. */
export type Recorded =
  | { kind: 'write'; path: string; mode: number; size: number; content?: string; from?: string }
  | { kind: 'rm'; path: string }
  | { kind: 'mkdir'; path: string }
  | { kind: 'chmod'; path: string; mode: number }
  | { kind: 'unpack'; bundle: string; into: string; entries: number }
  | { kind: 'run'; command: string }
  | { kind: 'apply'; object: string }
  | { kind: 'wait'; what: string };

/** A key is never shown, though the dry run made its own; nor are bytes that are not text. */
const showable = (p: string, data: Buffer) => !/\.key$/.test(p) && !data.includes(0) && Buffer.from(data.toString('utf8'), 'utf8').equals(data);

/** A file as the run would leave it: its content when ferry renders it, else where its bytes come from. */
export interface RecordedFile {
  path: string;
  mode: number;
  size: number;
  content?: string;
  from?: string;
}

/**
 * The verified bundle, entry by entry: what a dry run reads in place of the tree it does not
 * unpack. `files` is every file the unpacked tree would hold (relative to it) with its size.
 */
export interface BundleEntries {
  file: string;
  files: Map<string, number>;
  summary: UnpackSummary;
  /** A small entry's bytes (bundle.json, an image index, a chart manifest). */
  read(rel: string): Promise<Buffer | undefined>;
  /** Copies an entry out to a new real file (an archive whose listing the dry run needs). */
  copyOut(rel: string, dest: string): Promise<void>;
}

type Node =
  | { kind: 'data'; data: Buffer; mode: number }
  | { kind: 'copy'; from: string; size: number; mode: number }
  | { kind: 'bundle'; rel: string; size: number; mode: number }
  | { kind: 'tar'; archive: string; entry: string; size: number; mode: number }
  | { kind: 'gone' };

export interface RecordingOptions {
  /** The verified bundle that `unpackBundle` records instead of unpacking. */
  bundle?: BundleEntries;
  /** Output for a recorded command, where a step needs more than an empty success. */
  respond?: (cmd: string, args: string[], input?: string) => RunResult | undefined;
}

/** Commands that only look (the Service route probe and the addresses it reads): run for real. */
const looksOnly = (cmd: string, args: string[]) => cmd === 'ip' && (args.includes('get') || args.includes('show'));

const norm = (p: string) => path.posix.normalize(p).replace(/\/+$/, '') || '/';
const under = (p: string, dir: string) => p.startsWith(`${norm(dir)}/`);
const fromDesc = (n: Node) => (n.kind === 'copy' ? n.from : n.kind === 'bundle' ? `bundle:${n.rel}` : n.kind === 'tar' ? `${n.archive}:${n.entry}` : undefined);

export class RecordingHost extends Host {
  readonly recorded: Recorded[] = [];
  private readonly overlay = new Map<string, Node>();
  private scratch?: string;

  constructor(root: string, env: NodeJS.ProcessEnv = process.env, private readonly o: RecordingOptions = {}) {
    super(root, env);
  }

  /** Every file the run would leave written, by path. */
  files(): RecordedFile[] {
    return [...this.overlay.entries()]
      .filter(([, n]) => n.kind !== 'gone')
      .map(([p, n]) => {
        const x = n as Exclude<Node, { kind: 'gone' }>;
        const size = x.kind === 'data' ? x.data.length : x.size;
        const shown = x.kind === 'data' && showable(p, x.data);
        return { path: p, mode: x.mode, size, ...(shown ? { content: x.data.toString('utf8') } : x.kind === 'data' ? { from: 'written by the run (a key, or not text): not shown' } : { from: fromDesc(x) }) };
      })
      .sort((a, b) => (a.path < b.path ? -1 : 1));
  }

  /** Commands, applies and waits, in order. */
  actions(): string[] {
    return this.recorded.flatMap((r) => (r.kind === 'run' ? [r.command] : r.kind === 'apply' ? [`apply ${r.object}`] : r.kind === 'wait' ? [`wait for ${r.what}`] : []));
  }

  /** Removes the dry run's own scratch files (archives copied out to list them). */
  async close(): Promise<void> {
    if (this.scratch) await fs.rm(this.scratch, { recursive: true, force: true });
    this.scratch = undefined;
  }

  private async tmp(): Promise<string> {
    this.scratch ??= await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-dry-run-'));
    return this.scratch;
  }

  private node(hostPath: string): Node | undefined {
    return this.overlay.get(norm(hostPath));
  }

  private async bytes(hostPath: string): Promise<Buffer | undefined> {
    const n = this.node(hostPath);
    if (!n) return fs.readFile(this.p(hostPath)).catch(() => undefined);
    if (n.kind === 'data') return n.data;
    if (n.kind === 'copy') return this.bytes(n.from);
    if (n.kind === 'bundle') return this.o.bundle?.read(n.rel);
    return undefined;
  }

  private async size(hostPath: string): Promise<number> {
    const n = this.node(hostPath);
    if (!n) return (await fs.stat(this.p(hostPath)).catch(() => undefined))?.size ?? 0;
    return n.kind === 'gone' ? 0 : n.kind === 'data' ? n.data.length : n.size;
  }

  /** A real file with the bytes a host path would hold, for reading code that wants a path. */
  private async realFile(hostPath: string): Promise<string> {
    const n = this.node(hostPath);
    if (!n) return this.p(hostPath);
    if (n.kind === 'copy') return this.realFile(n.from);
    const dest = path.join(await this.tmp(), `${this.recorded.length}-${path.basename(hostPath)}`);
    if (n.kind === 'bundle' && this.o.bundle) await this.o.bundle.copyOut(n.rel, dest);
    else if (n.kind === 'data') await fs.writeFile(dest, n.data);
    else throw new HostError(Codes.installStep, `the dry run cannot read ${hostPath}: a step before it would have written it from ${fromDesc(n) ?? 'nothing'}`, { hint: 'Report this: a step reads what the dry run only records.' });
    return dest;
  }

  private set(hostPath: string, n: Node): void {
    this.overlay.set(norm(hostPath), n);
  }

  override async read(hostPath: string): Promise<string | undefined> {
    return (await this.bytes(hostPath))?.toString('utf8');
  }

  override async exists(hostPath: string): Promise<boolean> {
    const n = this.node(hostPath);
    if (n) return n.kind !== 'gone';
    for (const [p, x] of this.overlay) if (under(p, hostPath) && x.kind !== 'gone') return true;
    return super.exists(hostPath);
  }

  override async list(hostDir: string): Promise<string[]> {
    const dir = norm(hostDir);
    const out = new Set((await super.list(dir)).filter((rel) => this.node(`${dir}/${rel}`) === undefined));
    for (const [p, n] of this.overlay) if (under(p, dir) && n.kind !== 'gone') out.add(p.slice(dir.length + 1));
    return [...out].sort();
  }

  override async write(hostPath: string, content: string | Buffer, mode = 0o644): Promise<void> {
    const data = Buffer.isBuffer(content) ? content : Buffer.from(content, 'utf8');
    this.set(hostPath, { kind: 'data', data, mode });
    this.recorded.push({ kind: 'write', path: norm(hostPath), mode, size: data.length, ...(showable(hostPath, data) ? { content: data.toString('utf8') } : {}) });
  }

  override async mkdir(hostPath: string): Promise<void> {
    this.recorded.push({ kind: 'mkdir', path: norm(hostPath) });
  }

  override async rm(hostPath: string): Promise<void> {
    const p = norm(hostPath);
    for (const rel of await this.list(p)) this.set(`${p}/${rel}`, { kind: 'gone' });
    if (this.node(p) || (await fs.stat(this.p(p)).then((s) => s.isFile(), () => false))) this.set(p, { kind: 'gone' });
    this.recorded.push({ kind: 'rm', path: p });
  }

  override async chmod(hostPath: string, mode: number): Promise<void> {
    const n = this.node(hostPath);
    if (n && n.kind !== 'gone') n.mode = mode;
    else if (!n) this.set(hostPath, { kind: 'copy', from: norm(hostPath), size: await this.size(hostPath), mode });
    this.recorded.push({ kind: 'chmod', path: norm(hostPath), mode });
  }

  override async copy(fromHostPath: string, toHostPath: string, mode = 0o644): Promise<void> {
    const size = await this.size(fromHostPath);
    const n = this.node(fromHostPath);
    // A copy of a bundle entry keeps naming the entry, so its bytes stay readable.
    this.set(toHostPath, n?.kind === 'bundle' ? { ...n, mode } : { kind: 'copy', from: norm(fromHostPath), size, mode });
    this.recorded.push({ kind: 'write', path: norm(toHostPath), mode, size, from: n?.kind === 'bundle' ? `bundle:${n.rel}` : norm(fromHostPath) });
  }

  override async copyTree(fromHostDir: string, toHostDir: string): Promise<void> {
    const files = await this.list(fromHostDir);
    // As the real copy does: a missing source is an error, not an empty tree.
    if (!files.length && !(await this.exists(fromHostDir))) throw new HostError(Codes.installStep, `cannot copy ${fromHostDir}: it does not exist`, { hint: 'Is the bundle unpacked? Re-run ferry install.' });
    for (const rel of files) await this.copy(`${fromHostDir}/${rel}`, `${toHostDir}/${rel}`);
  }

  override async untarExecutables(archiveHostPath: string, toHostDir: string): Promise<string[]> {
    const file = await this.realFile(archiveHostPath);
    const found: { name: string; size: number; mode: number }[] = [];
    await listTar({
      file,
      filter: (_p, e) => isExecutableFile(e),
      onReadEntry: (e) => void found.push({ name: path.basename(e.path), size: e.size ?? 0, mode: (e.mode ?? 0o755) & 0o7777 }),
    } as Parameters<typeof listTar>[0]);
    for (const f of found) {
      const dest = `${norm(toHostDir)}/${f.name}`;
      this.set(dest, { kind: 'tar', archive: norm(archiveHostPath), entry: f.name, size: f.size, mode: f.mode });
      this.recorded.push({ kind: 'write', path: dest, mode: f.mode, size: f.size, from: `${norm(archiveHostPath)}:${f.name}` });
    }
    return found.map((f) => f.name);
  }

  override async unpackBundle(bundle: string, toHostDir: string, _o: UnpackOptions): Promise<UnpackSummary> {
    const b = this.o.bundle;
    if (!b || path.resolve(b.file) !== path.resolve(bundle)) {
      throw new HostError(Codes.installStep, `the dry run has not verified ${bundle}, so it cannot stand in for unpacking it`, { hint: 'Report this: the dry run verifies the bundle before it runs the steps.' });
    }
    const into = norm(toHostDir);
    for (const rel of await this.list(into)) this.set(`${into}/${rel}`, { kind: 'gone' });
    for (const [rel, size] of b.files) this.set(`${into}/${rel}`, { kind: 'bundle', rel, size, mode: 0o644 });
    this.recorded.push({ kind: 'unpack', bundle, into, entries: b.files.size });
    return b.summary;
  }

  /** A dry run records the store's add as an unpack of the bundle's entries into the current view. */
  override async addBundle<T extends UnpackSummary>(bundle: string, viewHostDir: string, o: UnpackOptions, _add: () => Promise<T>): Promise<UnpackSummary> {
    // The real run's rollback and signer checks, against what this server runs now.
    const summary = this.o.bundle?.summary;
    if (summary) {
      const installed = await installedHere(this, o);
      checkDowngrade(viewHostDir, installed, summary.manifest, o);
      checkSigner(viewHostDir, installed, summary.fingerprint, o);
    }
    return this.unpackBundle(bundle, viewHostDir, o);
  }

  /**
   * The directory's files as the run would have them are laid out in a scratch directory, `fn`
   * writes there, and what it changed is recorded as writes (and removals) of the host directory.
   */
  override async produce<T>(hostDir: string, fn: (dir: string) => Promise<T>): Promise<T> {
    const dir = norm(hostDir);
    const work = await fs.mkdtemp(path.join(await this.tmp(), 'produce-'));
    const before = new Map<string, Buffer>();
    for (const rel of await this.list(dir)) {
      const data = await this.bytes(`${dir}/${rel}`);
      if (!data) continue;
      await fs.mkdir(path.dirname(path.join(work, rel)), { recursive: true });
      const mode = (await fs.stat(this.p(`${dir}/${rel}`)).catch(() => undefined))?.mode ?? 0o644;
      await fs.writeFile(path.join(work, rel), data, { mode: mode & 0o777 });
      before.set(rel, data);
    }
    try {
      const r = await fn(work);
      const after = await new Host(work).list('/');
      for (const rel of after) {
        const data = await fs.readFile(path.join(work, rel));
        const mode = (await fs.stat(path.join(work, rel))).mode & 0o777;
        if (!before.get(rel)?.equals(data)) await this.write(`${dir}/${rel}`, data, mode);
      }
      for (const rel of before.keys()) if (!after.includes(rel)) await this.rm(`${dir}/${rel}`);
      return r;
    } finally {
      await fs.rm(work, { recursive: true, force: true });
    }
  }

  override async run(cmd: string, args: string[], opts: { input?: string; allowFail?: boolean; timeoutMs?: number } = {}): Promise<RunResult> {
    if (looksOnly(cmd, args)) return super.run(cmd, args, opts);
    this.recorded.push({ kind: 'run', command: this.redact([cmd.startsWith(this.root) && this.root !== '/' ? cmd.slice(this.root.length) : cmd, ...args].join(' ')) });
    return this.o.respond?.(cmd, args, opts.input) ?? { code: 0, stdout: '', stderr: '' };
  }

  override async cluster<T>(what: string, _fn: () => Promise<T>): Promise<T | undefined> {
    this.recorded.push({ kind: 'apply', object: what });
    return undefined;
  }

  override async apply(objects: KubernetesObject[], log: (l: string) => void = () => {}): Promise<void> {
    for (const o of objects) {
      const id = `${o.kind}/${o.metadata?.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata?.name}`;
      this.recorded.push({ kind: 'apply', object: id });
      log(`would apply ${id}`);
    }
  }

  override async daemonSets(): Promise<string[]> {
    return [];
  }

  override async waitForDaemonSets(sets: { namespace: string; name: string }[], _o: WaitOptions): Promise<void> {
    if (sets.length) this.recorded.push({ kind: 'wait', what: `DaemonSets ${sets.map((s) => `${s.namespace}/${s.name}`).join(', ')}` });
  }

  override async clusterNotReady(): Promise<string[]> {
    return ['the cluster does not exist yet (dry run)'];
  }

  override async waitForClusterReady(node: string, _o: WaitOptions): Promise<void> {
    this.recorded.push({ kind: 'wait', what: `${node} Ready` });
  }
}
