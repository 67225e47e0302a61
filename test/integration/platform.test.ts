import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { buildFixtureSet, type FixtureSet } from '../../fixtures/images.js';
import type { BundleManifest } from '../../src/bundle/format.js';
import { sha256Hex } from '../../src/util/digest.js';
import { ferry } from '../helpers/cli.js';
import { execFileP, pushFixtures, startRegistry, tmpdir, type RegistryPeer } from '../helpers/peers.js';
import { elfStandin } from '../../fixtures/elf.js';
import { writeBundleSpec, type SpecImage } from '../../fixtures/spec.js';

let work: string;
let reg: RegistryPeer;
let fx: FixtureSet;
let env: NodeJS.ProcessEnv;
let key: string;


async function write(p: string, data: string | Buffer) {
  await fs.mkdir(path.dirname(p), { recursive: true });
  await fs.writeFile(p, data);
}

async function bundleOf(file: string): Promise<{ manifest: BundleManifest; entries: string[] }> {
  const { stdout } = await execFileP('tar', ['-xOf', file, 'bundle.json'], { maxBuffer: 16 << 20 });
  const { stdout: list } = await execFileP('tar', ['-tf', file], { maxBuffer: 16 << 20 });
  return { manifest: JSON.parse(stdout) as BundleManifest, entries: list.trim().split('\n') };
}

/** The digests of the children of a fixture index, by platform. */
async function children(name: string): Promise<Record<string, string>> {
  const idx = JSON.parse((await fx.store.readBlob(fx.images[name]!.digest)).toString('utf8')) as { manifests: { digest: string; platform: { architecture: string } }[] };
  return Object.fromEntries(idx.manifests.map((m) => [`linux/${m.platform.architecture}`, m.digest]));
}

async function writeSpec(name: string, images: SpecImage[]): Promise<string> {
  const bin = randomBytes(10_000);
  await write(path.join(work, 'vendor', `tool-${name}`), bin);
  return writeBundleSpec(work, {
    name,
    platforms: ['linux/amd64', 'linux/arm64'],
    images,
    binaries: [{ name: 'tool', version: 'v1.0.0', url: `vendor/tool-${name}`, sha256: { 'linux/amd64': sha256Hex(bin), 'linux/arm64': sha256Hex(bin) } }],
    runtime: { 'linux/amd64': 'vendor/node-amd64', 'linux/arm64': 'vendor/node-arm64' },
  });
}

beforeAll(async () => {
  work = await tmpdir('ferry-platform-');
  reg = await startRegistry();
  fx = await buildFixtureSet(path.join(work, 'fx'), 0.05);
  await pushFixtures(fx, reg.host, 'fx');
  await write(path.join(work, 'vendor', 'node-amd64'), elfStandin('amd64', 'amd64\n'));
  await write(path.join(work, 'vendor', 'node-arm64'), elfStandin('arm64', 'arm64\n'));
  env = { FERRY_CACHE_DIR: path.join(work, 'cache') };
  expect((await ferry(['key', 'generate', '--out', path.join(work, 'keys')])).code).toBe(0);
  key = path.join(work, 'keys', 'ferry.key');
}, 60_000);

afterAll(async () => {
  await reg?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

describe('--platform narrows a run to some of the spec platforms', () => {
  it('locks a single-arch image for the one platform asked for, builds only that platform, and counts a wider build as drift', async () => {
    const spec = await writeSpec('amd', [`${reg.host}/fx/multi:v1`, `${reg.host}/fx/single:v1`, { ref: `${reg.host}/fx/dockerlist:v1`, platforms: ['linux/arm64'] }]);
    const lock = path.join(work, 'amd.lock');
    // The single-arch image cannot serve arm64, so a full lock is refused.
    const full = await ferry(['lock', spec, '--lock', lock], { env });
    expect(full.code).toBe(3);
    expect(full.stderr).toMatch(/error\[PLATFORM_MISSING\]: .*single:v1 is a single-platform image for linux\/amd64/);

    const l = await ferry(['lock', spec, '--lock', lock, '--platform', 'linux/amd64'], { env });
    expect(l.stderr).not.toMatch(/error\[/);
    expect(l.code).toBe(0);
    const locked = parseYaml(await fs.readFile(lock, 'utf8')) as { images: { name: string; platforms: { platform: string }[] }[] };
    // dockerlist wants only arm64, so an amd64 run leaves it out.
    expect(locked.images.map((i) => [i.name, i.platforms.map((p) => p.platform)])).toEqual([
      [`${reg.host}/fx/multi:v1`, ['linux/amd64']],
      [`${reg.host}/fx/single:v1`, ['linux/amd64']],
    ]);
    expect((await ferry(['lock', spec, '--lock', lock, '--platform', 'linux/amd64', '--check'], { env })).code).toBe(0);

    const out = path.join(work, 'amd.ferry.tar');
    const b = await ferry(['bundle', 'build', spec, '--lock', lock, '--key', key, '--out', out, '--platform', 'linux/amd64'], { env });
    expect(b.stderr).not.toMatch(/error\[/);
    expect(b.code).toBe(0);
    const { manifest, entries } = await bundleOf(out);
    expect(manifest.platforms).toEqual(['linux/amd64']);
    expect(manifest.images.map((i) => [i.ref, i.platforms])).toEqual([
      [`${reg.host}/fx/multi:v1`, ['linux/amd64']],
      [`${reg.host}/fx/single:v1`, ['linux/amd64']],
    ]);
    expect(manifest.files.map((f) => f.platform)).toEqual(['linux/amd64']);
    expect(manifest.runtime.map((r) => r.platform)).toEqual(['linux/amd64']);
    expect(entries).toContain('runtime/linux-amd64/node');
    expect(entries).not.toContain('runtime/linux-arm64/node');

    // Without --platform the spec wants arm64 too, which this lock does not hold.
    const wide = await ferry(['bundle', 'build', spec, '--lock', lock, '--key', key, '--out', path.join(work, 'wide.tar')], { env });
    expect(wide.code).toBe(3);
    expect(wide.stderr).toMatch(/error\[LOCK_DRIFT\]: [\s\S]*multi:v1 wants platforms \[linux\/amd64, linux\/arm64\] but the lock has \[linux\/amd64\]/);
    // A build is re-run, not a pull.
    expect(wide.stderr).toMatch(/hint: Run `ferry lock .*` to re-pin, review the diff, then run this command again\./);
    expect(wide.stderr).not.toMatch(/pull again/);
  }, 90_000);

  it('builds and pulls one platform from a full lock without drift, carrying none of the other platform even when the cache has it', async () => {
    const spec = await writeSpec('arm', [`${reg.host}/fx/multi:v1`, `${reg.host}/fx/dockerlist:v1`]);
    const lock = path.join(work, 'arm.lock');
    expect((await ferry(['lock', spec, '--lock', lock], { env })).code).toBe(0);
    // A full build first, so the cache holds both platforms.
    const fullOut = path.join(work, 'arm-full.ferry.tar');
    expect((await ferry(['bundle', 'build', spec, '--lock', lock, '--key', key, '--out', fullOut], { env })).code).toBe(0);
    const multi = await children('multi:v1');
    const dlist = await children('dockerlist:v1');
    expect((await bundleOf(fullOut)).entries).toContain(`images/blobs/sha256/${multi['linux/amd64']!.slice(7)}`);

    const out = path.join(work, 'arm.ferry.tar');
    const b = await ferry(['bundle', 'build', spec, '--lock', lock, '--key', key, '--out', out, '--platform', 'linux/arm64'], { env });
    expect(b.stderr).not.toMatch(/error\[/);
    expect(b.code).toBe(0);
    const { manifest, entries } = await bundleOf(out);
    expect(manifest.platforms).toEqual(['linux/arm64']);
    expect(manifest.images.every((i) => JSON.stringify(i.platforms) === '["linux/arm64"]')).toBe(true);
    for (const d of [multi['linux/arm64']!, dlist['linux/arm64']!, fx.images['multi:v1']!.digest]) expect(entries).toContain(`images/blobs/sha256/${d.slice(7)}`);
    for (const d of [multi['linux/amd64']!, dlist['linux/amd64']!]) expect(entries).not.toContain(`images/blobs/sha256/${d.slice(7)}`);

    const store = path.join(work, 'arm-store');
    const p = await ferry(['images', 'pull', spec, '--lock', lock, '--out', store, '--platform', 'linux/arm64', '--json'], { env });
    expect(p.code).toBe(0);
    expect((JSON.parse(p.stdout) as { images: { platforms: string[] }[] }).images.map((i) => i.platforms)).toEqual([['linux/arm64'], ['linux/arm64']]);
    const blobs = await fs.readdir(path.join(store, 'blobs', 'sha256'));
    expect(blobs).toContain(multi['linux/arm64']!.slice(7));
    expect(blobs).not.toContain(multi['linux/amd64']!.slice(7));
  }, 90_000);

  it('refuses a platform the spec does not list, naming the ones it does', async () => {
    const spec = path.join(work, 'bundle-spec', 'arm.yaml');
    for (const args of [
      ['bundle', 'build', spec, '--lock', path.join(work, 'arm.lock'), '--key', key, '--platform', 'linux/amd64,windows/amd64'],
      ['lock', spec, '--lock', path.join(work, 'arm.lock'), '--platform', 'linux/s390x'],
      ['images', 'pull', spec, '--lock', path.join(work, 'arm.lock'), '--platform', 'amd64'],
    ]) {
      const r = await ferry(args, { env });
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/error\[USAGE\]: --platform (windows\/amd64|linux\/s390x|amd64) is not in the platforms of .*arm\.yaml: linux\/amd64, linux\/arm64/);
      expect(r.stderr).toMatch(/hint: Choose from linux\/amd64, linux\/arm64, or add the platform to spec\.platforms/);
    }
  });
});
