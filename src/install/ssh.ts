import { createHash, createHmac } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Client, ConnectConfig, SFTPWrapper } from 'ssh2';
import { Codes, FerryError, RemoteError, UsageError } from '../errors.js';

/** `SHA256:<base64>` without padding, as `ssh-keygen -l` prints it. */
export function sshFingerprint(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

/** The key type from the SSH wire format (a length-prefixed string). */
function keyType(key: Buffer): string {
  const n = key.readUInt32BE(0);
  return key.subarray(4, 4 + n).toString('latin1');
}

function hostPatterns(host: string, port: number): string[] {
  return port === 22 ? [host, `[${host}]:22`] : [`[${host}]:${port}`];
}

function matches(field: string, host: string, port: number): boolean {
  const pats = hostPatterns(host, port);
  if (field.startsWith('|1|')) {
    const [, , salt, hash] = field.split('|');
    return pats.some((p) => createHmac('sha1', Buffer.from(salt ?? '', 'base64')).update(p).digest('base64') === hash);
  }
  return field.split(',').some((f) => pats.includes(f));
}

export type HostKeyVerdict = { kind: 'known' } | { kind: 'unknown'; fingerprint: string } | { kind: 'mismatch'; fingerprint: string; expected: string[] };

/** Checks a host key against known_hosts: known, unknown (never seen), or a mismatch (refuse). */
export async function checkKnownHost(knownHosts: string, host: string, port: number, key: Buffer): Promise<HostKeyVerdict> {
  const text = await fs.readFile(knownHosts, 'utf8').catch(() => '');
  const type = keyType(key);
  const b64 = key.toString('base64');
  const sameType: string[] = [];
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t || t.startsWith('#') || t.startsWith('@revoked')) continue;
    const parts = t.split(/\s+/);
    const [hosts, ktype, kdata] = t.startsWith('@cert-authority') ? parts.slice(1) : parts;
    if (!hosts || !ktype || !kdata || !matches(hosts, host, port) || ktype !== type) continue;
    if (kdata === b64) return { kind: 'known' };
    sameType.push(sshFingerprint(Buffer.from(kdata, 'base64')));
  }
  const fp = sshFingerprint(key);
  return sameType.length ? { kind: 'mismatch', fingerprint: fp, expected: sameType } : { kind: 'unknown', fingerprint: fp };
}

export async function addKnownHost(knownHosts: string, host: string, port: number, key: Buffer): Promise<void> {
  await fs.mkdir(path.dirname(knownHosts), { recursive: true });
  await fs.appendFile(knownHosts, `${port === 22 ? host : `[${host}]:${port}`} ${keyType(key)} ${key.toString('base64')}\n`, { mode: 0o600 });
}

export interface SshTarget {
  host: string;
  port: number;
  user: string;
  identityFile: string;
  knownHosts: string;
  /** Called for a host key known_hosts has never seen: accept it (it is then recorded)? */
  confirmUnknown: (host: string, fingerprint: string) => Promise<boolean>;
  timeoutMs?: number;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** One SSH connection: host key checked before authentication completes, then exec and SFTP. */
export class SshSession {
  private sftpP: Promise<SFTPWrapper> | undefined;
  private constructor(private readonly c: Client, readonly target: SshTarget) {}

  static async connect(t: SshTarget): Promise<SshSession> {
    let privateKey: Buffer;
    try {
      privateKey = await fs.readFile(t.identityFile);
    } catch (e) {
      throw new UsageError(Codes.sshIdentityRead, `cannot read SSH identity ${t.identityFile}: ${(e as Error).message}`, { hint: 'Set ssh.identityFile in the answers to a private key the nodes accept.', cause: e });
    }
    // ssh2 loads only when ferry joins nodes.
    // ssh2 is CommonJS: bundlers put its exports on the default export.
    const mod = (await import('ssh2')) as typeof import('ssh2') & { default?: typeof import('ssh2') };
    const Client = mod.Client ?? mod.default!.Client;
    const c = new Client();
    let refusal: FerryError | undefined;
    const cfg: ConnectConfig = {
      host: t.host,
      port: t.port,
      username: t.user,
      privateKey,
      readyTimeout: t.timeoutMs ?? 20_000,
      hostVerifier: (key: Buffer, verify: (ok: boolean) => void) => {
        void (async () => {
          const v = await checkKnownHost(t.knownHosts, t.host, t.port, key);
          if (v.kind === 'known') return verify(true);
          if (v.kind === 'mismatch') {
            refusal = new RemoteError(Codes.sshHostKey, `the host key of ${t.host} (${v.fingerprint}) does not match ${t.knownHosts} (${v.expected.join(', ')})`, {
              hint: `Nothing was run on ${t.host}. If the host was rebuilt, remove its old line from ${t.knownHosts} (ssh-keygen -R ${t.host}) after checking the new key out of band.`,
            });
            return verify(false);
          }
          let ok = false;
          try {
            ok = await t.confirmUnknown(t.host, v.fingerprint);
          } catch (e) {
            refusal = e instanceof FerryError ? e : undefined;
          }
          if (!ok) {
            refusal ??= new RemoteError(Codes.sshHostUnknown, `the host key of ${t.host} (${v.fingerprint}) is not in ${t.knownHosts} and was not accepted`, {
              hint: `Check the fingerprint on the host (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) and add it to ${t.knownHosts}, or accept it when asked.`,
            });
            return verify(false);
          }
          await addKnownHost(t.knownHosts, t.host, t.port, key);
          verify(true);
        })().catch(() => verify(false));
      },
    } as ConnectConfig;
    await new Promise<void>((resolve, reject) => {
      c.once('ready', () => resolve());
      c.once('error', (e) =>
        reject(
          refusal ??
            new RemoteError(Codes.sshConnect, `cannot connect to ${t.user}@${t.host}:${t.port}: ${e.message}`, {
              hint: 'Check that sshd runs there, that the address is reachable, and that the identity is in its authorized_keys.',
              cause: e,
            }),
        ),
      );
      c.connect(cfg);
    });
    return new SshSession(c, t);
  }

  exec(command: string, opts: { input?: string; onLine?: (line: string) => void } = {}): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
      this.c.exec(command, (err, ch) => {
        if (err) return reject(new RemoteError(Codes.sshConnect, `cannot run a command on ${this.target.host}: ${err.message}`, { cause: err }));
        let stdout = '';
        let stderr = '';
        let pending = '';
        ch.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
        ch.stderr.on('data', (d: Buffer) => {
          const s = d.toString('utf8');
          stderr += s;
          pending += s;
          const lines = pending.split('\n');
          pending = lines.pop() ?? '';
          for (const l of lines) opts.onLine?.(l);
        });
        ch.on('close', (code: number | null) => resolve({ code: code ?? 255, stdout, stderr }));
        ch.end(opts.input ?? '');
      });
    });
  }

  private sftp(): Promise<SFTPWrapper> {
    this.sftpP ??= new Promise((resolve, reject) => this.c.sftp((e, s) => (e ? reject(e) : resolve(s))));
    return this.sftpP;
  }

  async mkdirp(dir: string): Promise<void> {
    const s = await this.sftp();
    const parts = dir.split('/').filter(Boolean);
    let cur = '';
    for (const p of parts) {
      cur += `/${p}`;
      await new Promise<void>((resolve) => s.mkdir(cur, () => resolve()));
    }
  }

  /** Uploads through SFTP to a temp name, then renames: a cut upload never looks complete. */
  async upload(local: string, remote: string, mode = 0o644): Promise<void> {
    const s = await this.sftp();
    await this.mkdirp(path.posix.dirname(remote));
    const tmp = `${remote}.ferry-upload`;
    await new Promise<void>((resolve, reject) => s.fastPut(local, tmp, { mode }, (e) => (e ? reject(e) : resolve())));
    await new Promise<void>((resolve) => s.unlink(remote, () => resolve()));
    await new Promise<void>((resolve, reject) => s.rename(tmp, remote, (e) => (e ? reject(e) : resolve())));
    await new Promise<void>((resolve, reject) => s.chmod(remote, mode, (e) => (e ? reject(e) : resolve())));
  }

  close(): void {
    this.c.end();
  }
}
