import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Codes, HostError } from '../errors.js';
import { writeFileAtomic } from '../util/fsx.js';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * The machine ferry installs on. `root` prefixes every host file ferry writes or reads (tests put a
 * whole node under a temporary directory); commands run for real, found on PATH, so tests put
 * recording stand-ins for kubeadm, kubelet and systemctl first on PATH.
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
