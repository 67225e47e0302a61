import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
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

/** The names a known_hosts line may list a host under: OpenSSH writes `[host]:port` for any port but 22. */
function lookupNames(host: string, port: number): string[] {
  const h = host.toLowerCase();
  return port === 22 ? [h, `[${h}]:22`] : [`[${h}]:${port}`];
}

/** OpenSSH's pattern language: `*` and `?` wildcards, case-insensitive. */
function globMatch(pattern: string, s: string): boolean {
  const re = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${re}$`, 'i').test(s);
}

/** Whether a known_hosts host field names this host: hashed (`|1|salt|hash`), or patterns where `!` excludes. */
function hostsMatch(field: string, host: string, port: number): boolean {
  const names = lookupNames(host, port);
  if (field.startsWith('|1|')) {
    const [, , salt, hash] = field.split('|');
    const want = Buffer.from(hash ?? '', 'base64');
    return names.some((n) => {
      const got = createHmac('sha1', Buffer.from(salt ?? '', 'base64')).update(n).digest();
      return got.length === want.length && timingSafeEqual(got, want);
    });
  }
  let hit = false;
  for (const raw of field.split(',')) {
    const negated = raw.startsWith('!');
    if (!names.some((n) => globMatch(negated ? raw.slice(1) : raw, n))) continue;
    if (negated) return false;
    hit = true;
  }
  return hit;
}

interface KnownHostLine {
  marker?: '@revoked' | '@cert-authority';
  type: string;
  key: string;
  /** 1-based, for messages. */
  line: number;
}

async function readKnownHosts(file: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return '';
    // An unreadable file is not an empty one: treating it so would make every host "new".
    throw new UsageError(Codes.sshKnownHostsRead, `cannot read ${file}: ${(e as Error).message}`, { hint: 'Fix its owner and mode (ssh.knownHosts in the answers names it).', cause: e });
  }
}

/** The known_hosts lines for this host and port, markers included; malformed and unknown-marker lines are skipped. */
async function linesFor(knownHosts: string, host: string, port: number): Promise<KnownHostLine[]> {
  const out: KnownHostLine[] = [];
  (await readKnownHosts(knownHosts)).split('\n').forEach((text, i) => {
    const parts = text.trim().split(/\s+/);
    if (!parts[0] || parts[0].startsWith('#')) return;
    const marker = parts[0].startsWith('@') ? parts.shift() : undefined;
    if (marker !== undefined && marker !== '@revoked' && marker !== '@cert-authority') return;
    const [hosts, type, key] = parts;
    if (!hosts || !type || !key || !hostsMatch(hosts, host, port)) return;
    out.push({ ...(marker ? { marker } : {}), type, key, line: i + 1 });
  });
  return out;
}

export type HostKeyVerdict =
  | { kind: 'known' }
  | { kind: 'unknown'; fingerprint: string }
  /** known_hosts lists other keys for this host, of any type. */
  | { kind: 'mismatch'; fingerprint: string; expected: string[] }
  | { kind: 'revoked'; fingerprint: string; line: number }
  /** Only a @cert-authority line vouches for this host, and ferry cannot check host certificates. */
  | { kind: 'cert-authority'; fingerprint: string; line: number };

/**
 * Checks a host key against known_hosts. A revoked key is refused even where another line lists it;
 * a host with any other key listed, whatever its type, is a mismatch (OpenSSH's accept-new refuses it
 * too). Only a host with no line at all is unknown, the one case a new key may be accepted.
 */
export async function checkKnownHost(knownHosts: string, host: string, port: number, key: Buffer): Promise<HostKeyVerdict> {
  const lines = await linesFor(knownHosts, host, port);
  const type = keyType(key);
  const b64 = key.toString('base64');
  const fingerprint = sshFingerprint(key);
  const same = (l: KnownHostLine) => l.type === type && l.key === b64;
  const revoked = lines.find((l) => l.marker === '@revoked' && same(l));
  if (revoked) return { kind: 'revoked', fingerprint, line: revoked.line };
  const plain = lines.filter((l) => !l.marker);
  if (plain.some(same)) return { kind: 'known' };
  if (plain.length) return { kind: 'mismatch', fingerprint, expected: plain.map((l) => `${l.type} ${sshFingerprint(Buffer.from(l.key, 'base64'))}`) };
  const ca = lines.find((l) => l.marker === '@cert-authority');
  if (ca) return { kind: 'cert-authority', fingerprint, line: ca.line };
  return { kind: 'unknown', fingerprint };
}

/** ssh2's host key algorithms, in its own order of preference. */
const HOST_KEY_ALGORITHMS = ['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', 'rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'];
const algorithmKeyType = (a: string) => (a.startsWith('rsa-sha2-') ? 'ssh-rsa' : a);

/**
 * The algorithms to offer, those of the key types known_hosts holds for the host first (as OpenSSH
 * orders them): a host with several keys then shows the one we know rather than a mismatch.
 */
export async function hostKeyAlgorithms(knownHosts: string, host: string, port: number): Promise<string[] | undefined> {
  const known = new Set((await linesFor(knownHosts, host, port)).filter((l) => !l.marker).map((l) => l.type));
  if (!known.size) return undefined;
  const first = HOST_KEY_ALGORITHMS.filter((a) => known.has(algorithmKeyType(a)));
  return [...first, ...HOST_KEY_ALGORITHMS.filter((a) => !first.includes(a))];
}

export async function addKnownHost(knownHosts: string, host: string, port: number, key: Buffer): Promise<void> {
  await fs.mkdir(path.dirname(knownHosts), { recursive: true });
  const text = await readKnownHosts(knownHosts);
  // A last line without its newline would otherwise swallow ours.
  const sep = text && !text.endsWith('\n') ? '\n' : '';
  await fs.appendFile(knownHosts, `${sep}${port === 22 ? host : `[${host}]:${port}`} ${keyType(key)} ${key.toString('base64')}\n`, { mode: 0o600 });
}

/** Why a host key known_hosts speaks against is refused. */
function refusal(v: Exclude<HostKeyVerdict, { kind: 'known' | 'unknown' }>, t: SshTarget): FerryError {
  const nothing = `Nothing was run on ${t.host}.`;
  switch (v.kind) {
    case 'mismatch':
      return new RemoteError(Codes.sshHostKey, `the host key of ${t.host} (${v.fingerprint}) does not match ${t.knownHosts} (${v.expected.join(', ')})`, {
        hint: `${nothing} A key of another type counts as a change too. If the host was rebuilt, remove its old lines from ${t.knownHosts} (ssh-keygen -R ${t.host}) after checking the new key out of band.`,
      });
    case 'revoked':
      return new RemoteError(Codes.sshHostKeyRevoked, `the host key of ${t.host} (${v.fingerprint}) is revoked in ${t.knownHosts} (line ${v.line})`, {
        hint: `${nothing} A revoked key means the host or its key is compromised: rebuild its keys and list the new one, whatever other lines say.`,
      });
    case 'cert-authority':
      return new RemoteError(Codes.sshHostCertAuthority, `${t.knownHosts} vouches for ${t.host} only through a @cert-authority line (line ${v.line}), and ferry cannot check SSH host certificates`, {
        hint: `${nothing} Add the host's own key (${v.fingerprint}, once checked on the host: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) as a plain line in ${t.knownHosts}.`,
      });
  }
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
    let refused: FerryError | undefined;
    const algorithms = await hostKeyAlgorithms(t.knownHosts, t.host, t.port);
    const cfg: ConnectConfig = {
      host: t.host,
      port: t.port,
      username: t.user,
      privateKey,
      readyTimeout: t.timeoutMs ?? 20_000,
      ...(algorithms ? { algorithms: { serverHostKey: algorithms } } : {}),
      hostVerifier: (key: Buffer, verify: (ok: boolean) => void) => {
        void (async () => {
          const v = await checkKnownHost(t.knownHosts, t.host, t.port, key);
          if (v.kind === 'known') return verify(true);
          if (v.kind !== 'unknown') {
            refused = refusal(v, t);
            return verify(false);
          }
          let ok = false;
          try {
            ok = await t.confirmUnknown(t.host, v.fingerprint);
          } catch (e) {
            refused = e instanceof FerryError ? e : undefined;
          }
          if (!ok) {
            refused ??= new RemoteError(Codes.sshHostUnknown, `the host key of ${t.host} (${v.fingerprint}) is not in ${t.knownHosts} and was not accepted`, {
              hint: `Check the fingerprint on the host (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) and add it to ${t.knownHosts}, or accept it when asked.`,
            });
            return verify(false);
          }
          await addKnownHost(t.knownHosts, t.host, t.port, key);
          verify(true);
        })().catch((e: unknown) => {
          refused ??= e instanceof FerryError ? e : undefined;
          verify(false);
        });
      },
    } as ConnectConfig;
    await new Promise<void>((resolve, reject) => {
      c.once('ready', () => {
        // SFTP is many small requests, each waiting for its answer: with Nagle's algorithm against
        // the peer's delayed ACKs, every one of them waited ~40 ms (a 100 kB file took 0.85 s).
        c.setNoDelay(true);
        resolve();
      });
      c.once('error', (e) =>
        reject(
          refused ??
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

  /** A command whose output is read as a stream, never held whole (a support bundle's logs); stderr keeps its last 4 kB. */
  execStream(command: string): Promise<{ stdout: Readable; done: Promise<{ code: number; stderr: string }> }> {
    return new Promise((resolve, reject) => {
      this.c.exec(command, (err, ch) => {
        if (err) return reject(new RemoteError(Codes.sshConnect, `cannot run a command on ${this.target.host}: ${err.message}`, { cause: err }));
        let stderr = '';
        ch.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString('utf8')).slice(-4096)));
        const done = new Promise<{ code: number; stderr: string }>((res) => ch.on('close', (code: number | null) => res({ code: code ?? 255, stderr })));
        ch.end();
        resolve({ stdout: ch, done });
      });
    });
  }

  private sftp(): Promise<SFTPWrapper> {
    this.sftpP ??= new Promise((resolve, reject) => this.c.sftp((e, s) => (e ? reject(e) : resolve(s))));
    return this.sftpP;
  }

  /** Directories this session made or found: an upload of many files asks for each one once. */
  private readonly madeDirs = new Set<string>();

  async mkdirp(dir: string): Promise<void> {
    const s = await this.sftp();
    const parts = dir.split('/').filter(Boolean);
    let cur = '';
    for (const p of parts) {
      cur += `/${p}`;
      if (this.madeDirs.has(cur)) continue;
      await new Promise<void>((resolve) => s.mkdir(cur, () => resolve()));
      this.madeDirs.add(cur);
    }
  }

  /**
   * Uploads through SFTP to a temp name, then renames: a cut upload never looks complete. The temp
   * file is created afresh with its final mode, so a secret (0600) is never readable by others,
   * not even while empty: an open descriptor would read it once written.
   */
  async upload(local: string, remote: string, mode = 0o644): Promise<void> {
    const s = await this.sftp();
    await this.mkdirp(path.posix.dirname(remote));
    const tmp = `${remote}.ferry-upload`;
    await new Promise<void>((resolve) => s.unlink(tmp, () => resolve()));
    await new Promise<void>((resolve, reject) =>
      s.open(tmp, 'wx', { mode }, (e, h) => (e ? reject(e) : s.close(h, (e2) => (e2 ? reject(e2) : resolve())))),
    );
    await new Promise<void>((resolve, reject) => s.fastPut(local, tmp, { mode }, (e) => (e ? reject(e) : resolve())));
    await new Promise<void>((resolve) => s.unlink(remote, () => resolve()));
    await new Promise<void>((resolve, reject) => s.rename(tmp, remote, (e) => (e ? reject(e) : resolve())));
    await new Promise<void>((resolve, reject) => s.chmod(remote, mode, (e) => (e ? reject(e) : resolve())));
  }

  close(): void {
    this.c.end();
  }
}
