import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeContainerdConfig } from '../../src/install/containerd.js';
import { containerdConfig } from '../../src/install/system-files.js';
import { startServer, type SiteServer } from '../../src/site/server.js';
import { initPki } from '../../src/sign/pki.js';
import { startContainerd, type ContainerdPeer } from '../helpers/containerd.js';
import { execFileP, freePort, tmpdir, waitFor } from '../helpers/peers.js';
import { siteBinary } from '../helpers/site-cache.js';
import { buildSiteBundle, type SiteBundle } from '../helpers/site.js';

let work: string;
let b: SiteBundle;
let srv: SiteServer;
let ctd: ContainerdPeer;
let caFile: string;
let hostsDir: string;
const logs: string[] = [];

beforeAll(async () => {
  work = await tmpdir('ferry-site-ctd-');
  b = await buildSiteBundle(work);
  const pki = await initPki({ domain: 'site.test', outDir: path.join(work, 'pki') });
  caFile = pki.caCert;
  srv = await startServer({ bundleDir: b.dir, listen: '127.0.0.1:0', tls: { cert: pki.cert, key: pki.key }, log: (l) => logs.push(l) });
  const r = await writeContainerdConfig({ bundleDir: b.dir, mirrors: [srv.url], caFile, outDir: path.join(work, 'ctd-config') });
  hostsDir = path.join(work, 'ctd-config', 'certs.d');
  expect(r.registries).toEqual(['127.0.0.1:5000', 'docker.io', 'ghcr.io', 'quay.io', 'registry.k8s.io']);
  ctd = await startContainerd();
});
afterAll(async () => {
  await ctd?.stop();
  await srv?.close();
  await fs.rm(work, { recursive: true, force: true });
});

/** The server logs a request when its response closes, which can trail the client a little. */
const logged = (test: (lines: string[]) => boolean) => waitFor(async () => test(logs), 'the access log', 60_000).then(() => true, () => false);
const pull = (ref: string, extra: string[] = []) => ctd.ctr(['images', 'pull', '--hosts-dir', hostsDir, ...extra, ref], { timeout: 60_000 });
const listed = async () => {
  const out = await ctd.ctr(['images', 'ls']);
  return new Map(out.split('\n').slice(1).filter(Boolean).map((l) => {
    const [name, , digest] = l.split(/\s+/);
    return [name!, digest!] as const;
  }));
};

/** The lines of one [table] of a TOML dump, up to the next table. */
function table(toml: string, name: string): string {
  const lines = toml.split('\n');
  // containerd 2.x quotes table keys with ' where 1.x uses ".
  const start = lines.findIndex((l) => l.trim().replaceAll("'", '"') === `[${name}]`);
  if (start < 0) return '';
  const end = lines.findIndex((l, i) => i > start && l.trim().startsWith('['));
  return lines.slice(start + 1, end < 0 ? undefined : end).join('\n');
}

/** containerd's own reading of a rendered config: `config dump` parses it, decodes each plugin's config and prints it. */
async function dump(containerd: string, configVersion: 2 | 3, cgroupDriver: 'systemd' | 'cgroupfs'): Promise<string> {
  const dir = path.join(work, `dump-v${configVersion}-${cgroupDriver}`);
  await fs.mkdir(dir, { recursive: true });
  // root and state stay in the test directory.
  const text = containerdConfig({ pauseImage: 'registry.site.test/pause:3.10', cgroupDriver, configVersion }).replace(`version = ${configVersion}\n`, `version = ${configVersion}\nroot = "${dir}/root"\nstate = "${dir}/state"\n`);
  await fs.writeFile(path.join(dir, 'config.toml'), text);
  return (await execFileP(containerd, ['--config', path.join(dir, 'config.toml'), 'config', 'dump'])).stdout;
}

// Debian ships containerd 1.6, which reads config version 2 only; containerd 2.x is the site suite's build, when there is one.
const containerd2 = siteBinary('containerd', 'containerd', 'FERRY_CONTAINERD_V2');

describe("containerd reads ferry's config.toml", () => {
  it('containerd 1.6 takes the pause image, the cgroup driver of runc and certs.d from version 2, for either driver', async () => {
    const cri = 'plugins."io.containerd.grpc.v1.cri"';
    for (const cgroupDriver of ['systemd', 'cgroupfs'] as const) {
      const out = await dump('containerd', 2, cgroupDriver);
      expect(table(out, cri)).toMatch(/^\s*sandbox_image = "registry\.site\.test\/pause:3\.10"$/m);
      expect(table(out, `${cri}.containerd.runtimes.runc`)).toMatch(/^\s*runtime_type = "io\.containerd\.runc\.v2"$/m);
      expect(table(out, `${cri}.containerd.runtimes.runc.options`)).toMatch(new RegExp(`^\\s*SystemdCgroup = ${cgroupDriver === 'systemd'}$`, 'm'));
      expect(table(out, `${cri}.registry`)).toMatch(/^\s*config_path = "\/etc\/containerd\/certs\.d"$/m);
    }
  });

  it.skipIf(!containerd2)('containerd 2.x takes the same from version 3 (its images and runtime CRI plugins)', async () => {
    for (const cgroupDriver of ['systemd', 'cgroupfs'] as const) {
      const out = await dump(containerd2!, 3, cgroupDriver);
      expect(out).toMatch(/^version = 3$/m);
      expect(table(out, 'plugins."io.containerd.cri.v1.images".pinned_images')).toMatch(/^\s*sandbox = 'registry\.site\.test\/pause:3\.10'$/m);
      expect(table(out, 'plugins."io.containerd.cri.v1.images".registry')).toMatch(/^\s*config_path = '\/etc\/containerd\/certs\.d'$/m);
      expect(table(out, 'plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc')).toMatch(/^\s*runtime_type = 'io\.containerd\.runc\.v2'$/m);
      expect(table(out, 'plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options')).toMatch(new RegExp(`^\\s*SystemdCgroup = ${cgroupDriver === 'systemd'}$`, 'm'));
    }
  });
});

describe('containerd pulls through the generated hosts.toml from the site service', () => {
  it('pulls by upstream name over TLS with the site CA, naming the upstream in ?ns=', async () => {
    await pull('registry.k8s.io/pause:3.10');
    expect((await listed()).get('registry.k8s.io/pause:3.10')).toBe(b.refs['registry.k8s.io/pause:3.10']!.digest);
    expect(await logged((ls) => ls.some((l) => /"HEAD \/v2\/pause\/manifests\/3\.10\?ns=registry\.k8s\.io HTTP\/1\.1" 200 /.test(l)))).toBe(true);
    expect(await logged((ls) => ls.some((l) => /"GET \/v2\/pause\/blobs\/sha256:[a-f0-9]{64}\?ns=registry\.k8s\.io HTTP\/1\.1" 200 /.test(l)))).toBe(true);
  });

  it('runs the busybox fixture pulled as docker.io/library/busybox', async () => {
    await pull('docker.io/library/busybox:1.36', ['--platform', 'linux/amd64']);
    const out = await ctd.ctr(['run', '--rm', 'docker.io/library/busybox:1.36', `t-${process.pid}`]);
    expect(out.trim()).toBe('hello from ferry');
  });

  it('pulls multi-arch OCI indexes, Docker manifest lists and a registry with a port, all platforms', async () => {
    for (const ref of ['registry.k8s.io/coredns/coredns:v1.11.3', 'docker.io/library/haproxy:3.0', 'quay.io/fx/docker:v1', '127.0.0.1:5000/fx/multi:v1']) {
      await pull(ref, ['--all-platforms']);
    }
    const l = await listed();
    for (const ref of ['registry.k8s.io/coredns/coredns:v1.11.3', 'docker.io/library/haproxy:3.0', 'quay.io/fx/docker:v1', '127.0.0.1:5000/fx/multi:v1']) {
      expect(l.get(ref), ref).toBe(b.refs[ref]!.digest);
    }
    // Nothing answers on 127.0.0.1:5000 here: the bytes came from the site service.
    expect(await logged((ls) => ls.some((l) => /\/v2\/fx\/multi\/manifests\/v1\?ns=127\.0\.0\.1(%3A|:)5000 /.test(l)))).toBe(true);
  });

  it('keeps registries that share a path apart by ?ns=', async () => {
    await pull('ghcr.io/library/busybox:1.36', ['--all-platforms']);
    const l = await listed();
    expect(l.get('ghcr.io/library/busybox:1.36')).toBe(b.refs['ghcr.io/library/busybox:1.36']!.digest);
    expect(l.get('docker.io/library/busybox:1.36')).toBe(b.refs['docker.io/library/busybox:1.36']!.digest);
    expect(l.get('ghcr.io/library/busybox:1.36')).not.toBe(l.get('docker.io/library/busybox:1.36'));
  });

  it('has no fallback upstream: a tag the bundle lacks fails at the site service', async () => {
    const before = logs.length;
    const err = await pull('registry.k8s.io/pause:9.99').then(() => '', (e: { stderr: string }) => e.stderr);
    expect(err).toMatch(/not found/);
    expect(await logged((ls) => ls.slice(before).some((l) => l.includes('/v2/pause/manifests/9.99?ns=registry.k8s.io HTTP/1.1" 404')))).toBe(true);
  });

  it('tries mirrors in order, and the later one serves when the first is down', async () => {
    const dead = `https://127.0.0.1:${await freePort()}`;
    const r = await writeContainerdConfig({ bundleDir: b.dir, mirrors: [dead, srv.url], caFile, outDir: path.join(work, 'ctd-two') });
    const toml = await fs.readFile(path.join(work, 'ctd-two', 'certs.d', 'quay.io', 'hosts.toml'), 'utf8');
    expect(toml.indexOf(`[host."${dead}"]`)).toBeLessThan(toml.indexOf(`[host."${srv.url}"]`));
    expect(r.hostsFiles.length).toBe(5);
    await ctd.ctr(['images', 'rm', 'quay.io/fx/docker:v1']).catch(() => '');
    await ctd.ctr(['content', 'prune', 'references']).catch(() => '');
    const before = logs.length;
    await ctd.ctr(['images', 'pull', '--hosts-dir', path.join(work, 'ctd-two', 'certs.d'), 'quay.io/fx/docker:v1']);
    expect((await listed()).get('quay.io/fx/docker:v1')).toBe(b.refs['quay.io/fx/docker:v1']!.digest);
    expect(await logged((ls) => ls.slice(before).some((l) => l.includes('/v2/fx/docker/manifests/v1?ns=quay.io')))).toBe(true);
    // The layers came again too, past the dead first mirror.
    expect(await logged((ls) => ls.slice(before).filter((l) => /"GET \/v2\/fx\/docker\/blobs\/sha256:[a-f0-9]{64}\?ns=quay\.io HTTP\/1\.1" 200 /.test(l)).length >= 2)).toBe(true);
  });
});
