import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushStore } from '../../src/bundle/images.js';
import { RegistryClient } from '../../src/oci/client.js';
import { Layout } from '../../src/oci/layout.js';
import { buildBusyboxImage, buildFixtureSet, type FixtureSet } from '../../fixtures/images.js';
import { ferry } from '../helpers/cli.js';
import { startContainerd, type ContainerdPeer } from '../helpers/containerd.js';
import { execFileP, startRegistry, tmpdir, type RegistryPeer } from '../helpers/peers.js';
import { startFaultProxy, type FaultProxy } from '../helpers/proxy.js';

let work: string;
let fx: FixtureSet;
let reg: RegistryPeer;
let ctd: ContainerdPeer;
let proxy: FaultProxy;

beforeAll(async () => {
  work = await tmpdir();
  fx = await buildFixtureSet(path.join(work, 'store'), 0.5);
  fx.images['tools/busybox:1'] = await buildBusyboxImage(fx.store, 'tools/busybox:1');
  reg = await startRegistry();
  ctd = await startContainerd();
  proxy = await startFaultProxy(reg.host);
});
afterAll(async () => {
  await ctd?.stop();
  await proxy?.close();
  await reg?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

const rawDigest = async (ref: string) => {
  const { stdout } = await execFileP('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`], { encoding: 'buffer' });
  return `sha256:${createHash('sha256').update(stdout).digest('hex')}`;
};

describe('ferry images push into a site registry', () => {
  it('loads every image of a store under a prefix, and containerd pulls and runs them', async () => {
    const r = await ferry(['images', 'push', '--store', fx.store.dir, '--to', `${reg.host}/site`, '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { images: { source: string; target: string; digest: string }[] };
    expect(out.images.map((i) => i.target).sort()).toEqual(Object.keys(fx.images).map((n) => `${reg.host}/site/${n}`).sort());
    for (const [name, desc] of Object.entries(fx.images)) expect(await rawDigest(`${reg.host}/site/${name}`)).toBe(desc.digest);

    // containerd pulls Docker and OCI, single and multi-arch, and runs the busybox image.
    for (const name of ['docker:v1', 'dockerlist:v1', 'multi:v1', 'single:v1', 'tools/busybox:1']) {
      await ctd.ctr(['images', 'pull', '--plain-http', `${reg.host}/site/${name}`]);
    }
    const listed = await ctd.ctr(['images', 'ls', '-q']);
    expect(listed.split('\n').filter(Boolean).sort()).toEqual(Object.keys(fx.images).map((n) => `${reg.host}/site/${n}`).sort());
    const run = await ctd.ctr(['run', '--rm', `${reg.host}/site/tools/busybox:1`, `t-${process.pid}`]);
    expect(run.trim()).toBe('hello from ferry');
  });

  it('containerd imports a pulled store as is, Docker-typed images included', async () => {
    const tarFile = path.join(work, 'store.tar');
    await execFileP('tar', ['-C', fx.store.dir, '-cf', tarFile, 'oci-layout', 'index.json', 'blobs']);
    await ctd.ctr(['-n', 'imported', 'images', 'import', '--all-platforms', tarFile]);
    const listed = await ctd.ctr(['-n', 'imported', 'images', 'ls']);
    for (const [name, desc] of Object.entries(fx.images)) expect(listed).toMatch(new RegExp(`^${name.replace(/[/.]/g, '\\$&')}\\s+\\S+\\s+${desc.digest}`, 'm'));
  });

  it('mounts blobs across repositories and uploads large blobs in chunks', async () => {
    const client = new RegistryClient({ retries: 2, backoffMs: 5, monolithicMax: 64 << 10, chunkSize: 48 << 10, mirrors: { [proxy.host]: `http://${proxy.host}` } });
    const before = proxy.requests.length;
    const r = await pushStore({ client, store: fx.store }, `${proxy.host}/chunked`);
    const reqs = proxy.requests.slice(before);
    expect(reqs.filter((q) => q.method === 'PATCH').length).toBeGreaterThan(2);
    // The shared base layer goes up once; later images mount it.
    expect(reqs.filter((q) => q.method === 'POST' && q.url.includes('mount=')).length).toBeGreaterThan(0);
    for (const i of r.images) expect(await rawDigest(`${reg.host}/${i.target.slice(proxy.host.length + 1)}`)).toBe(fx.images[i.source]!.digest);
    // Pushing again moves no bytes: every blob is already there.
    const again = proxy.requests.length;
    await pushStore({ client, store: fx.store }, `${proxy.host}/chunked`);
    expect(proxy.requests.slice(again).filter((q) => q.method === 'PATCH' || q.method === 'POST')).toEqual([]);
  });

  it('pushes an index of only the platforms a store holds, and says so', async () => {
    const partial = await Layout.open(path.join(work, 'partial'));
    const src = fx.images['multi:v1']!;
    const idx = JSON.parse((await fx.store.readBlob(src.digest)).toString()) as { manifests: { digest: string; size: number; mediaType: string; platform: { architecture: string } }[] };
    const amd = idx.manifests.find((m) => m.platform.architecture === 'amd64')!;
    const man = JSON.parse((await fx.store.readBlob(amd.digest)).toString()) as { config: { digest: string; size: number }; layers: { digest: string; size: number }[] };
    for (const d of [{ digest: src.digest, size: src.size }, amd, man.config, ...man.layers]) await partial.adopt(fx.store, { mediaType: 'x', ...d });
    await partial.addRefs([{ name: 'multi:v1', descriptor: src }]);
    const r = await ferry(['images', 'push', '--store', partial.dir, '--to', `${reg.host}/partial`]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/holds 1 of the index's platforms/);
    const got = JSON.parse((await execFileP('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.host}/partial/multi:v1`])).stdout) as { manifests: { digest: string }[] };
    expect(got.manifests.map((m) => m.digest)).toEqual([amd.digest]);
  });
});
