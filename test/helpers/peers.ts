import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import type { FixtureSet } from '../../fixtures/images.js';
import { RegistryClient } from '../../src/oci/client.js';
import { Pusher } from '../../src/oci/copy.js';

export const execFileP = promisify(execFile);

export async function tmpdir(prefix = 'ferry-test-'): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), prefix));
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export async function waitFor(fn: () => Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    try {
      if (await fn()) return;
    } catch {
      /* not yet */
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

export function which(cmd: string): Promise<boolean> {
  return execFileP('sh', ['-c', `command -v ${cmd}`]).then(
    () => true,
    () => false,
  );
}

export interface RegistryPeer {
  host: string;
  url: string;
  dir: string;
  proc: ChildProcess;
  stop(): Promise<void>;
}

/** The CNCF distribution registry (Debian docker-registry) on a random loopback port: a real peer. */
export async function startRegistry(opts: { htpasswd?: { user: string; pass: string } } = {}): Promise<RegistryPeer> {
  const dir = await tmpdir('ferry-reg-');
  const port = await freePort();
  let auth = '';
  if (opts.htpasswd) {
    const { stdout } = await execFileP('htpasswd', ['-Bbn', opts.htpasswd.user, opts.htpasswd.pass]);
    await fs.writeFile(path.join(dir, 'htpasswd'), stdout);
    auth = `auth: {htpasswd: {realm: ferry-test, path: ${dir}/htpasswd}}\n`;
  }
  await fs.writeFile(
    path.join(dir, 'config.yml'),
    `version: 0.1\nlog: {level: warn, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: ${dir}/data}, delete: {enabled: true}}\nhttp: {addr: 127.0.0.1:${port}}\n${auth}`,
  );
  const log = await fs.open(path.join(dir, 'registry.log'), 'w');
  const proc = spawn('docker-registry', ['serve', path.join(dir, 'config.yml')], { stdio: ['ignore', log.fd, log.fd] });
  const host = `127.0.0.1:${port}`;
  await waitFor(async () => {
    const r = await fetch(`http://${host}/v2/`);
    return r.status === 200 || r.status === 401;
  }, `docker-registry on ${host}`);
  return {
    host,
    url: `http://${host}`,
    dir,
    proc,
    async stop() {
      proc.kill('SIGTERM');
      await new Promise((r) => (proc.exitCode !== null ? r(null) : proc.once('exit', r)));
      await log.close();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Loads a fixture set into a registry with ferry's own pusher, then has skopeo confirm that the
 * registry serves each image under the fixture's digest, so pulls are tested against content a
 * real peer vouches for.
 */
export async function pushFixtures(fx: FixtureSet, host: string, prefix: string): Promise<void> {
  const pusher = new Pusher({ client: new RegistryClient({ retries: 2, backoffMs: 5 }), store: fx.store });
  for (const [name, desc] of Object.entries(fx.images)) {
    const [repo, tag] = name.split(':') as [string, string];
    await pusher.push(desc, { repo: { registry: host, repository: `${prefix}/${repo}` }, tag });
    const raw = await execFileP('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${host}/${prefix}/${name}`], { encoding: 'buffer' });
    const got = `sha256:${createHash('sha256').update(raw.stdout).digest('hex')}`;
    if (got !== desc.digest) throw new Error(`registry serves ${name} as ${got}, fixture is ${desc.digest}`);
  }
}

/** Copies an image from an OCI layout into a registry with skopeo, keeping digests. */
export async function skopeoPush(layoutDir: string, name: string, dest: string, opts: { creds?: string } = {}): Promise<void> {
  await execFileP('skopeo', ['copy', '--all', '--preserve-digests', '--dest-tls-verify=false', ...(opts.creds ? ['--dest-creds', opts.creds] : []), `oci:${layoutDir}:${name}`, `docker://${dest}`]);
}

export async function skopeoInspect(args: string[]): Promise<Record<string, unknown>> {
  const { stdout } = await execFileP('skopeo', ['inspect', ...args], { maxBuffer: 16 << 20 });
  return JSON.parse(stdout) as Record<string, unknown>;
}
