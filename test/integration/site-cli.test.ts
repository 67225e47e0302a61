import { execFile, spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/cli.js';
import { execFileP, freePort, tmpdir, waitFor } from '../helpers/peers.js';
import { buildSiteBundle, type SiteBundle } from '../helpers/site.js';

const RUNNER = path.join(ROOT, 'bin', 'ferry');

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}
function run(args: string[]): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, [RUNNER, ...args], { cwd: ROOT, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

let work: string;
let b: SiteBundle;
beforeAll(async () => {
  work = await tmpdir('ferry-site-cli-');
  b = await buildSiteBundle(work);
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

describe('ferry pki', () => {
  it('init makes the CA and registry certificate, and a re-run keeps the CA', async () => {
    const out = path.join(work, 'pki');
    const r = await run(['pki', 'init', '--domain', 'site.test', '--ip', '10.0.0.5', '--out', out, '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { caReused: boolean; serverCert: string; names: string[]; ips: string[] };
    expect(j).toMatchObject({ caReused: false, serverCert: 'issued', names: ['registry.site.test', 'localhost'], ips: ['10.0.0.5', '127.0.0.1', '::1'] });
    expect(((await fs.stat(path.join(out, 'ca.key'))).mode & 0o777).toString(8)).toBe('600');
    const ca = await fs.readFile(path.join(out, 'ca.crt'));
    const again = await run(['pki', 'init', '--domain', 'site.test', '--ip', '10.0.0.5', '--out', out]);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/^kept the existing site CA: .*ca\.crt/m);
    expect(again.stdout).toMatch(/SHA-256 fingerprint ([0-9A-F]{2}:){31}[0-9A-F]{2}/);
    expect((await fs.readFile(path.join(out, 'ca.crt'))).equals(ca)).toBe(true);
  });

  it('issue signs another server certificate, and explains a missing CA with exit 2', async () => {
    const out = path.join(work, 'pki');
    const r = await run(['pki', 'issue', '--ca-dir', out, '--name', 's2.site.test', '--ip', '10.0.0.12', '--out', path.join(out, 's2')]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^issued .*s2\.crt .* for s2\.site\.test, 10\.0\.0\.12, valid until /);
    expect((await execFileP('openssl', ['verify', '-CAfile', path.join(out, 'ca.crt'), path.join(out, 's2.crt')])).stdout).toMatch(/OK/);
    const missing = await run(['pki', 'issue', '--ca-dir', path.join(work, 'nowhere'), '--name', 'x.site.test', '--out', path.join(work, 'x')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^error\[PKI_MISSING\]: no site CA in /m);
    expect(missing.stderr).toMatch(/^ {2}hint: Run `ferry pki init/m);
  });
});

describe('ferry containerd config', () => {
  it('writes hosts.toml for every registry in the bundle and the config_path snippets', async () => {
    const out = path.join(work, 'ctd');
    const r = await run(['containerd', 'config', '--bundle', b.dir, '--mirror', 'https://registry.site.test:5443', '--mirror', 'https://10.0.0.12:5443', '--ca', '/etc/ferry/pki/ca.crt', '--out', out, '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { registries: string[] };
    expect(j.registries).toEqual(['127.0.0.1:5000', 'docker.io', 'ghcr.io', 'quay.io', 'registry.k8s.io']);
    expect(await fs.readFile(path.join(out, 'certs.d', 'ghcr.io', 'hosts.toml'), 'utf8')).toMatch(/^server = "https:\/\/registry\.site\.test:5443"$/m);
    expect((await fs.readdir(out)).sort()).toEqual(['certs.d', 'containerd-v2-registry.toml', 'containerd-v3-registry.toml']);
    const bad = await run(['containerd', 'config', '--bundle', b.dir, '--mirror', 'https://u:p@x', '--ca', '/ca.crt', '--out', out]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^error\[MIRROR_INVALID\]: mirror "https:\/\/u:p@x" must not carry credentials/m);
    const noMirror = await run(['containerd', 'config', '--bundle', b.dir, '--ca', '/ca.crt', '--out', out]);
    expect(noMirror.code).toBe(2);
    expect(noMirror.stderr).toMatch(/--mirror/);
  });
});

describe('ferry serve', () => {
  it('serves over TLS until SIGTERM, logs each request, then stops cleanly with exit 0', async () => {
    const pki = path.join(work, 'pki');
    const port = await freePort();
    const child = spawn(process.execPath, [RUNNER, 'serve', '--bundle', b.dir, '--listen', `127.0.0.1:${port}`, '--tls-cert', path.join(pki, 'registry.crt'), '--tls-key', path.join(pki, 'registry.key')], { cwd: ROOT });
    let stderr = '';
    let stdout = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      await waitFor(async () => stderr.includes(`on https://127.0.0.1:${port}`), 'ferry serve to listen');
      const { stdout: cat } = await execFileP('curl', ['-sSf', '--cacert', path.join(pki, 'ca.crt'), `https://127.0.0.1:${port}/v2/_catalog`]);
      expect(JSON.parse(cat)).toMatchObject({ repositories: expect.arrayContaining(['pause', 'library/busybox']) });
      await waitFor(async () => stderr.includes('"GET /v2/_catalog HTTP/1.1" 200'), 'the access log line');
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(stderr).toMatch(/SIGTERM: finishing in-flight requests/);
    expect(stdout).toBe('ferry serve stopped: in-flight requests finished\n');
    // Said once, when the drain began (it used to be said again on stdout).
    expect(`${stderr}${stdout}`.match(/SIGTERM/g)).toHaveLength(1);
    // TLS: no plain-HTTP warning.
    expect(stderr).not.toMatch(/plain HTTP/);
  });

  it('warns that plain HTTP on an address other than loopback serves every image to anyone, unencrypted', async () => {
    const port = await freePort();
    for (const [listen, warned] of [[`0.0.0.0:${port}`, true], [`127.0.0.1:${port}`, false]] as const) {
      const child = spawn(process.execPath, [RUNNER, 'serve', '--bundle', b.dir, '--listen', listen, '--workers', '1'], { cwd: ROOT });
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      try {
        await waitFor(async () => stderr.includes(`listening on ${listen}`), 'ferry serve to listen');
      } finally {
        child.kill('SIGTERM');
      }
      expect(await exited).toBe(0);
      if (warned) expect(stderr).toMatch(new RegExp(`warning: ferry serve listens on 0\\.0\\.0\\.0:${port} in plain HTTP: .*--tls-cert and --tls-key`));
      else expect(stderr).not.toMatch(/plain HTTP/);
    }
  });

  it('refuses half a TLS pair, a directory that is no bundle, and a taken port, each with its code', async () => {
    const half = await run(['serve', '--bundle', b.dir, '--listen', '127.0.0.1:0', '--tls-cert', '/x.crt']);
    expect([half.code, half.stderr]).toEqual([2, expect.stringMatching(/^error\[USAGE\]: --tls-cert and --tls-key go together/m)]);
    const noBundle = await run(['serve', '--bundle', work, '--listen', '127.0.0.1:0']);
    expect([noBundle.code, noBundle.stderr]).toEqual([6, expect.stringMatching(/^error\[SERVE_BUNDLE\]: .* is not an unpacked bundle/m)]);
    // The directory comes from bundle unpack; verify writes nothing.
    expect(noBundle.stderr).toMatch(/hint: Point --bundle at the directory `ferry bundle unpack FILE --trust ferry\.pub --to DIR` wrote/);
    const badListen = await run(['serve', '--bundle', b.dir, '--listen', 'everywhere']);
    expect([badListen.code, badListen.stderr]).toEqual([2, expect.stringMatching(/^error\[SERVE_LISTEN\]: cannot listen on "everywhere"/m)]);
    const blocker = spawn(process.execPath, ['-e', "require('net').createServer().listen(Number(process.argv[1]), '127.0.0.1', () => console.log('up'))", String(await freePort())]);
    try {
      const port = Number(blocker.spawnargs.at(-1));
      await new Promise((r) => blocker.stdout!.once('data', r));
      const taken = await run(['serve', '--bundle', b.dir, '--listen', `127.0.0.1:${port}`]);
      expect([taken.code, taken.stderr]).toEqual([2, expect.stringMatching(/^error\[SERVE_LISTEN\]: cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE[\s\S]*hint: Another process holds that port/m)]);
    } finally {
      blocker.kill();
    }
  });

  it('shows examples in --help', async () => {
    for (const cmd of [['serve'], ['pki', 'init'], ['pki', 'issue'], ['containerd', 'config']]) {
      const r = await run([...cmd, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout, cmd.join(' ')).toMatch(new RegExp(`Examples:\\n {2}\\$ ferry ${cmd.join(' ')} `));
    }
  });
});
