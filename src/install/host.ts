import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { KubernetesObject } from '@kubernetes/client-node';
import { x as untar } from 'tar';
import { unpackBundle, type UnpackOptions } from '../bundle/unpack.js';
import type { VerifyResult } from '../bundle/verify.js';
import { Codes, HostError } from '../errors.js';
import { exists, writeFileAtomic } from '../util/fsx.js';
import type { Reporter } from '../util/progress.js';
import { applyObjects, clusterNotReady, listDaemonSets, waitForClusterReady, waitForDaemonSets } from '../kube/client.js';
import { ADMIN_CONF } from './paths.js';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** What a bundle unpack reports (the real one, or a dry run's record of it). */
export type UnpackSummary = Pick<VerifyResult, 'manifest' | 'fingerprint' | 'entries'>;

/** A waiting option of the cluster's waits. */
export interface WaitOptions {
  timeoutMs?: number;
  reporter?: Reporter;
}

/**
 * The machine ferry installs on. `root` prefixes every host file ferry writes or reads (tests put a
 * whole node under a temporary directory); commands run for real, found on PATH, so tests put
 * recording stand-ins for kubeadm, kubelet and systemctl first on PATH.
 *
 * Every effect a step has on its host goes through these methods (files, commands, the cluster's
 * API), so that a dry run can hand the same steps a RecordingHost (recording-host.ts) instead.
 */
export class Host {
  constructor(
    readonly root = '/',
    readonly env: NodeJS.ProcessEnv = process.env,
    /** Secrets to blank out of anything logged (join tokens, certificate keys). */
    readonly secrets: string[] = [],
  ) {}

  /** A host path under the root prefix. */
  p(hostPath: string): string {
    return path.join(this.root, hostPath);
  }

  async read(hostPath: string): Promise<string | undefined> {
    try {
      return await fs.readFile(this.p(hostPath), 'utf8');
    } catch {
      return undefined;
    }
  }

  async write(hostPath: string, content: string | Buffer, mode = 0o644): Promise<void> {
    await writeFileAtomic(this.p(hostPath), content, mode);
    await fs.chmod(this.p(hostPath), mode);
  }

  async exists(hostPath: string): Promise<boolean> {
    return exists(this.p(hostPath));
  }

  /** Every file below a directory, as paths relative to it (none when it is absent). */
  async list(hostDir: string): Promise<string[]> {
    const out: string[] = [];
    const walk = async (rel: string) => {
      const entries = await fs.readdir(path.join(this.p(hostDir), rel), { withFileTypes: true }).catch(() => []);
      for (const e of entries) {
        const r = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) await walk(r);
        else out.push(r);
      }
    };
    await walk('');
    return out.sort();
  }

  async mkdir(hostPath: string, mode?: number): Promise<void> {
    await fs.mkdir(this.p(hostPath), { recursive: true, ...(mode === undefined ? {} : { mode }) });
  }

  /** Removes a file or a whole tree; absent is fine. */
  async rm(hostPath: string): Promise<void> {
    await fs.rm(this.p(hostPath), { recursive: true, force: true });
  }

  async chmod(hostPath: string, mode: number): Promise<void> {
    await fs.chmod(this.p(hostPath), mode);
  }

  /** Copies a host file to another host path, whole or not at all (through a temporary name). */
  async copy(fromHostPath: string, toHostPath: string, mode = 0o644): Promise<void> {
    const dest = this.p(toHostPath);
    await fs.mkdir(path.dirname(dest), { recursive: true });
    await fs.copyFile(this.p(fromHostPath), `${dest}.ferry-new`);
    await fs.chmod(`${dest}.ferry-new`, mode);
    await fs.rename(`${dest}.ferry-new`, dest);
  }

  /** Copies every file below one host directory to another. */
  async copyTree(fromHostDir: string, toHostDir: string): Promise<void> {
    await fs.cp(this.p(fromHostDir), this.p(toHostDir), { recursive: true });
  }

  /**
   * Unpacks a tar archive (a host file) into a host directory: only its regular executables,
   * flattened to their names (archives differ in their layout). Returns the names written.
   */
  async untarExecutables(archiveHostPath: string, toHostDir: string): Promise<string[]> {
    const dest = this.p(toHostDir);
    await fs.mkdir(dest, { recursive: true });
    const names: string[] = [];
    await untar({
      file: this.p(archiveHostPath),
      cwd: dest,
      filter: (_p, e) => isExecutableFile(e),
      strip: 0,
      onReadEntry: (e) => {
        e.path = path.basename(e.path);
        names.push(e.path);
      },
    } as Parameters<typeof untar>[0]);
    return names;
  }

  /** Verifies a bundle and unpacks it into a host directory (bundle/unpack.ts). */
  async unpackBundle(bundle: string, toHostDir: string, o: UnpackOptions): Promise<UnpackSummary> {
    return unpackBundle(bundle, this.p(toHostDir), o);
  }

  /**
   * Adds a bundle to the site store and makes `viewHostDir` its current view: `add` is the store's
   * own code (install/site-store.ts), passed in so that this room stays below it.
   */
  async addBundle<T extends UnpackSummary>(_bundle: string, _viewHostDir: string, _o: UnpackOptions, add: () => Promise<T>): Promise<UnpackSummary & Partial<{ already: boolean; blobsAdded: number; filesAdded: number }>> {
    return add();
  }

  /**
   * Runs `fn` on a real directory that stands for a host directory, for code that writes a tree
   * of files by itself (the site PKI, containerd's registry config): here the directory itself.
   */
  async produce<T>(hostDir: string, fn: (dir: string) => Promise<T>): Promise<T> {
    return fn(this.p(hostDir));
  }

  /** An effect on the cluster that is not an apply (the site state's compare-and-swap): a dry run records `what` instead. */
  async cluster<T>(_what: string, fn: () => Promise<T>): Promise<T | undefined> {
    return fn();
  }

  /** Server-side apply of objects through the cluster's admin kubeconfig. */
  async apply(objects: KubernetesObject[], log: (l: string) => void = () => {}): Promise<void> {
    await applyObjects(this.p(ADMIN_CONF), objects, log);
  }

  async daemonSets(namespace: string): Promise<string[]> {
    return listDaemonSets(this.p(ADMIN_CONF), namespace);
  }

  async waitForDaemonSets(sets: { namespace: string; name: string }[], o: WaitOptions): Promise<void> {
    await waitForDaemonSets(this.p(ADMIN_CONF), sets, o);
  }

  /** What keeps the cluster from being ready for `node` (empty when it is). */
  async clusterNotReady(node: string): Promise<string[]> {
    return clusterNotReady(this.p(ADMIN_CONF), node);
  }

  async waitForClusterReady(node: string, o: WaitOptions): Promise<void> {
    await waitForClusterReady(this.p(ADMIN_CONF), node, o);
  }

  /** Writes only when the content differs; says whether it changed. */
  async ensureFile(hostPath: string, content: string, mode = 0o644): Promise<boolean> {
    if ((await this.read(hostPath)) === content) return false;
    await this.write(hostPath, content, mode);
    return true;
  }

  redact(s: string): string {
    let out = s;
    for (const x of this.secrets) if (x) out = out.split(x).join('<redacted>');
    return out;
  }

  async run(cmd: string, args: string[], opts: { input?: string; allowFail?: boolean; timeoutMs?: number } = {}): Promise<RunResult> {
    return new Promise((resolve, reject) => {
      const child = spawn(cmd, args, { env: { ...this.env, FERRY_ROOT: this.root }, stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
      const timer = opts.timeoutMs ? setTimeout(() => child.kill('SIGTERM'), opts.timeoutMs) : undefined;
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(new HostError(Codes.installStep, `cannot run ${cmd}: ${e.message}`, { hint: `Is ${cmd} installed? The plan installs it from the bundle before it is needed; re-run ferry install.`, cause: e }));
      });
      child.on('close', (code) => {
        clearTimeout(timer);
        const r = { code: code ?? 1, stdout, stderr };
        if (r.code !== 0 && !opts.allowFail) {
          reject(
            new HostError(Codes.installStep, `${cmd} ${this.redact(args.join(' '))} failed (exit ${r.code}): ${this.redact(stderr.trim().split('\n').slice(-3).join(' / ') || stdout.trim().slice(-300))}`, {
              hint: 'See the step log under /var/log/ferry/. Fix the cause, then re-run ferry install: finished steps are skipped.',
            }),
          );
        } else resolve(r);
      });
      // A command that exits without reading its input must not crash us with EPIPE.
      child.stdin.on('error', () => {});
      child.stdin.end(opts.input ?? '');
    });
  }
}

/** A tar entry the binaries step installs: a regular file with an executable bit. */
export const isExecutableFile = (e: unknown) => (e as { type?: string }).type === 'File' && !!(((e as { mode?: number }).mode ?? 0) & 0o111);
