import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../../src/oci/client.js';
import { Pusher } from '../../src/oci/copy.js';
import { Layout } from '../../src/oci/layout.js';
import { parseSpecText } from '../../src/spec/spec.js';
import { buildFixtureSet, randomLayer, writeImage, type FixtureSet } from '../../fixtures/images.js';
import { ferry, ROOT } from '../helpers/cli.js';
import { pushFixtures, skopeoInspect, startRegistry, tmpdir, type RegistryPeer } from '../helpers/peers.js';
import { writeSpec } from '../helpers/spec.js';

let work: string;
let reg: RegistryPeer;
let fx: FixtureSet;

beforeAll(async () => {
  work = await tmpdir();
  reg = await startRegistry();
  fx = await buildFixtureSet(path.join(work, 'fx'), 0.2);
  await pushFixtures(fx, reg.host, 'fx');
  await pushFixtures(fx, reg.host, 'library');
});
afterAll(async () => {
  await reg?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

const env = (dir: string) => ({ FERRY_CACHE_DIR: path.join(dir, 'cache') });

describe('ferry lock', () => {
  it('writes a stable lock, passes --check, and fails --check with exit 3 when a tag moves', async () => {
    const dir = await tmpdir();
    const spec = await writeSpec(dir, [`${reg.host}/fx/multi:v1`, `${reg.host}/fx/dockerlist:v1`, { ref: `${reg.host}/fx/moving:v1`, platforms: ['linux/amd64'] }]);
    await new Pusher({ client: new RegistryClient(), store: fx.store }).push(fx.images['single:v1']!, { repo: { registry: reg.host, repository: 'fx/moving' }, tag: 'v1' });
    const lockFile = path.join(dir, 'images.lock');
    const r1 = await ferry(['lock', spec]);
    expect(r1.stderr).toMatch(/resolving 3 images/);
    expect(r1.code).toBe(0);
    const first = await fs.readFile(lockFile, 'utf8');
    expect(first).toContain(fx.images['multi:v1']!.digest);
    expect(first).toContain(fx.images['single:v1']!.digest);
    expect((await ferry(['lock', spec])).code).toBe(0);
    expect(await fs.readFile(lockFile, 'utf8')).toBe(first);

    const ok = await ferry(['lock', spec, '--check', '--json']);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ upToDate: true, moved: [] });

    // Move the tag to a different image.
    const other = await writeImage(fx.store, { platform: 'linux/amd64', layers: [await randomLayer(fx.store, 'moved', 1000)], label: 'moved' });
    const { platform: _p, ...desc } = other;
    await new Pusher({ client: new RegistryClient(), store: fx.store }).push(desc, { repo: { registry: reg.host, repository: 'fx/moving' }, tag: 'v1' });
    const moved = await ferry(['lock', spec, '--check']);
    expect(moved.code).toBe(3);
    expect(moved.stdout).toContain(`${reg.host}/fx/moving:v1 moved from ${fx.images['single:v1']!.digest} to ${desc.digest}`);
    expect(moved.stderr).toMatch(/^error\[LOCK_DRIFT\]: 1 of 3 images differ/m);
    expect(moved.stderr).toMatch(/hint: .*ferry lock/);
    // --check never writes.
    expect(await fs.readFile(lockFile, 'utf8')).toBe(first);
  });
});

describe('ferry images pull', () => {
  it('fills a store, then a re-run downloads nothing', async () => {
    const dir = await tmpdir();
    const spec = await writeSpec(dir, [`${reg.host}/fx/multi:v1`, { ref: `${reg.host}/fx/single:v1`, platforms: ['linux/amd64'] }]);
    expect((await ferry(['lock', spec], { env: env(dir) })).code).toBe(0);
    const out = path.join(dir, 'store');
    const r1 = await ferry(['images', 'pull', spec, '--out', out, '--json'], { env: env(dir) });
    expect(r1.code).toBe(0);
    const j1 = JSON.parse(r1.stdout) as { stats: { blobsFetched: number } };
    expect(j1.stats.blobsFetched).toBeGreaterThan(5);
    const r2 = await ferry(['images', 'pull', spec, '--out', out, '--json'], { env: env(dir) });
    expect((JSON.parse(r2.stdout) as { stats: { blobsFetched: number; bytesFetched: number } }).stats).toMatchObject({ blobsFetched: 0, bytesFetched: 0 });
    expect((await skopeoInspect([`oci:${out}:${reg.host}/fx/single:v1`])).Digest).toBe(fx.images['single:v1']!.digest);
    // The cache is an OCI layout too, and the store's blobs are hard links into it.
    const man = JSON.parse((await fx.store.readBlob(fx.images['single:v1']!.digest)).toString()) as { layers: { digest: string }[] };
    const blob = man.layers[1]!.digest.slice(7);
    expect((await fs.stat(path.join(out, 'blobs/sha256', blob))).ino).toBe((await fs.stat(path.join(dir, 'cache/oci/blobs/sha256', blob))).ino);
  });

  it('keeps upstream names while --registry-mirror fetches the bytes elsewhere', async () => {
    const dir = await tmpdir();
    const spec = await writeSpec(dir, ['docker.io/library/multi:v1']);
    const mirror = ['--registry-mirror', `docker.io=http://${reg.host}`];
    expect((await ferry(['lock', spec, ...mirror], { env: env(dir) })).code).toBe(0);
    const out = path.join(dir, 'store');
    const r = await ferry(['images', 'pull', spec, '--out', out, ...mirror], { env: env(dir) });
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    const info = await skopeoInspect([`oci:${out}:docker.io/library/multi:v1`]);
    expect(info.Digest).toBe(fx.images['multi:v1']!.digest);
  });

  it('refuses a plain-HTTP mirror that is not on loopback, before connecting', async () => {
    const dir = await tmpdir();
    const spec = await writeSpec(dir, ['docker.io/library/multi:v1']);
    const r = await ferry(['lock', spec, '--registry-mirror', 'docker.io=http://mirror.invalid']);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/^error\[REGISTRY_INSECURE\]: mirror http:\/\/mirror\.invalid\/ for docker\.io uses plain HTTP/m);
    expect(r.stderr).toMatch(/--insecure-registry mirror\.invalid/);
  });

  it('lets two pulls write one store at once without losing either', async () => {
    const dir = await tmpdir();
    const a = await writeSpec(dir, [`${reg.host}/fx/multi:v1`], { name: 'a' });
    const b = await writeSpec(dir, [`${reg.host}/fx/dockerlist:v1`, { ref: `${reg.host}/fx/docker:v1`, platforms: ['linux/amd64'] }], { name: 'b' });
    await ferry(['lock', a, '--lock', path.join(dir, 'a.lock')]);
    await ferry(['lock', b, '--lock', path.join(dir, 'b.lock')]);
    const out = path.join(dir, 'store');
    const [ra, rb] = await Promise.all([
      ferry(['images', 'pull', a, '--lock', path.join(dir, 'a.lock'), '--out', out], { env: { FERRY_CACHE_DIR: path.join(dir, 'ca') } }),
      ferry(['images', 'pull', b, '--lock', path.join(dir, 'b.lock'), '--out', out], { env: { FERRY_CACHE_DIR: path.join(dir, 'cb') } }),
    ]);
    expect([ra.code, rb.code]).toEqual([0, 0]);
    const names = (await (await Layout.open(out)).readIndex()).manifests.map((m) => m.annotations?.['org.opencontainers.image.ref.name']).sort();
    expect(names).toEqual([`${reg.host}/fx/docker:v1`, `${reg.host}/fx/dockerlist:v1`, `${reg.host}/fx/multi:v1`]);
    const left = (await fs.readdir(path.join(out, 'blobs/sha256'))).filter((f) => f.startsWith('.'));
    expect(left).toEqual([]);
  });
});

describe('the CLI boundary', () => {
  it('prints error[CODE], the message and a hint for a bad spec, and exits 2', async () => {
    const dir = await tmpdir();
    const spec = path.join(dir, 'bad.yaml');
    await fs.writeFile(spec, 'apiVersion: ferry.dev/v1alpha1\nkind: BundleSpec\nmetadata: {name: Bad_Name, version: 1}\nspec: {platforms: [linux/amd64], images: []}\n');
    const r = await ferry(['spec', 'validate', spec]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error\[SPEC_INVALID\]: .*bad\.yaml is not a valid bundle spec/m);
    expect(r.stderr).toMatch(/bad\.yaml:3:18: metadata\.name must match pattern/);
    expect(r.stderr).toMatch(/^  hint: /m);
    expect(r.stdout).toBe('');
  });

  it("reports a bad spec as Ajv compiled from the current schema does, though the bundle carries the validator's code pregenerated", async () => {
    const dir = await tmpdir();
    const spec = path.join(dir, 'bad.yaml');
    // One error of each kind schemaProblems words differently: pattern (with expected), required, unknown key, type, const.
    const text = 'apiVersion: ferry.dev/v1alpha2\nkind: BundleSpec\nmetadata: {name: ok, version: 1}\nspec:\n  platforms: [linux/amd65]\n  imagez: []\n  binaries: [{name: b, version: v1}]\n';
    await fs.writeFile(spec, text);
    const r = await ferry(['spec', 'validate', spec, '--json']);
    expect(r.code).toBe(2);
    const inProcess = (() => {
      try {
        parseSpecText(text, spec);
      } catch (e) {
        return (e as Error).message;
      }
      return 'valid';
    })();
    expect(inProcess).toMatch(/apiVersion must be "ferry\.dev\/v1alpha1"/);
    expect(JSON.parse(r.stdout).error.message).toBe(inProcess);
  });

  it('gives errors as JSON on stdout with --json', async () => {
    const r = await ferry(['images', 'pull', 'missing.yaml', '--json']);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout)).toMatchObject({ error: { code: 'SPEC_READ', hint: expect.any(String) } });
  });

  it('turns unknown options into a usage error with exit 2', async () => {
    const r = await ferry(['lock', 'x.yaml', '--frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown option '--frobnicate'/);
    expect(r.stderr).toMatch(/^error\[USAGE\]/m);
  });

  it('an unknown command is one error line and its hint, not the whole help first', async () => {
    const r = await ferry(['instal', 'x.tar']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error\[USAGE\]: unknown command 'instal'/);
    expect(r.stderr).toMatch(/Did you mean install\?/);
    expect(r.stderr).not.toMatch(/Usage:|Commands:/);
    expect(r.stderr.trim().split('\n').length).toBeLessThanOrEqual(3);
  });

  it("each command's help gives the concurrency it uses, as the README does (4 for pushes, 6 for pulls)", async () => {
    const push = await ferry(['images', 'push', '--help']);
    expect(push.stdout).toMatch(/--concurrency <n>\s+parallel blob transfers \(default: "4"\)/);
    const pull = await ferry(['images', 'pull', '--help']);
    expect(pull.stdout).toMatch(/--concurrency <n>\s+parallel blob transfers \(default: "6"\)/);
    const readme = await fs.readFile(path.join(ROOT, 'README.md'), 'utf8');
    expect(readme).toMatch(/`--concurrency N` \| parallel blob transfers \(default 6 for pulls, 4 for pushes\)/);
  });

  it('shows examples in the help of every command', async () => {
    for (const cmd of [[], ['lock'], ['images', 'pull'], ['images', 'push'], ['spec', 'validate'], ['spec', 'schema']]) {
      const r = await ferry([...cmd, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/Examples:\n  \$ ferry /);
    }
  });
});
