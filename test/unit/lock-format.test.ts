import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { formatLock, movedTags, specLockDrift, type ImagesLock } from '../../src/spec/lock.js';
import { parseSpecText } from '../../src/spec/spec.js';

const d = (c: string) => `sha256:${c.repeat(64)}`;
const lock: ImagesLock = {
  apiVersion: 'ferry.dev/v1alpha1',
  kind: 'ImagesLock',
  spec: { name: 'demo', version: '0.1.0' },
  images: [
    { name: 'registry.k8s.io/pause:3.10', digest: d('a'), mediaType: 'application/vnd.oci.image.index.v1+json', size: 100, platforms: [
      { platform: 'linux/arm64', digest: d('c'), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 5 },
      { platform: 'linux/amd64', digest: d('b'), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 5 },
    ] },
    { name: 'docker.io/library/haproxy:2.9', digest: d('d'), mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json', size: 200, platforms: [
      { platform: 'linux/amd64', digest: d('e'), mediaType: 'application/vnd.docker.distribution.manifest.v2+json', size: 6 },
    ] },
  ],
};

describe('the lock file', () => {
  it('is sorted by image and platform, whatever order it was built in', () => {
    const text = formatLock(lock);
    const shuffled = formatLock({ ...lock, images: [...lock.images].reverse().map((i) => ({ ...i, platforms: [...i.platforms].reverse() })) });
    expect(shuffled).toBe(text);
    const back = parse(text) as ImagesLock;
    expect(back.images.map((i) => i.name)).toEqual(['docker.io/library/haproxy:2.9', 'registry.k8s.io/pause:3.10']);
    expect(back.images[1]!.platforms.map((p) => p.platform)).toEqual(['linux/amd64', 'linux/arm64']);
  });

  it('changes by exactly the moved digest line when one tag moves', () => {
    const moved = formatLock({ ...lock, images: lock.images.map((i) => (i.name.includes('haproxy') ? { ...i, digest: d('f') } : i)) });
    const a = formatLock(lock).split('\n');
    const b = moved.split('\n');
    expect(a.length).toBe(b.length);
    expect(a.filter((l, i) => l !== b[i])).toEqual([`    digest: ${d('d')}`]);
  });

  it('names the moved tag when compared with a fresh resolution', () => {
    const fresh = { ...lock, images: lock.images.map((i) => (i.name.includes('pause') ? { ...i, digest: d('9') } : i)) };
    expect(movedTags(lock, fresh)).toEqual([{ name: 'registry.k8s.io/pause:3.10', problem: `moved from ${d('a')} to ${d('9')}` }]);
    expect(movedTags(lock, lock)).toEqual([]);
  });

  it('detects a spec that drifted from its lock', () => {
    const spec = parseSpecText(`apiVersion: ferry.dev/v1alpha1\nkind: BundleSpec\nmetadata: {name: demo, version: 0.1.0}\nspec:\n  platforms: [linux/amd64, linux/arm64]\n  images: [registry.k8s.io/pause:3.10, registry.k8s.io/etcd:3.5.15-0]\n`);
    const drift = specLockDrift(spec, lock).map((x) => `${x.name} ${x.problem}`);
    expect(drift).toEqual([
      'registry.k8s.io/etcd:3.5.15-0 is in the spec but not in the lock',
      'docker.io/library/haproxy:2.9 is in the lock but no longer in the spec',
    ]);
  });
});

describe('a lock belongs to one spec (issue 22 item 4)', () => {
  it('is refused for a spec of another name, even when every image matches', () => {
    const text = (name: string) => `apiVersion: ferry.dev/v1alpha1\nkind: BundleSpec\nmetadata: {name: ${name}, version: 0.1.0}\nspec:\n  platforms: [linux/amd64, linux/arm64]\n  images: [registry.k8s.io/pause:3.10, docker.io/library/haproxy:2.9]\n`;
    const narrowLock = { ...lock, images: lock.images.map((i) => (i.name.includes('haproxy') ? { ...i, platforms: [...i.platforms, { ...i.platforms[0]!, platform: 'linux/arm64' }] } : i)) };
    expect(specLockDrift(parseSpecText(text('demo')), narrowLock)).toEqual([]);
    expect(specLockDrift(parseSpecText(text('other')), narrowLock)).toEqual([{ name: 'metadata.name', problem: 'is "other" in the spec, but the lock was written for spec "demo"' }]);
  });
});

describe('the shipped images.lock', () => {
  it('parses, pins nothing yet, and makes pulls name every image it lacks', async () => {
    const { readLock } = await import('../../src/spec/lock.js');
    const { loadSpec } = await import('../../src/spec/spec.js');
    const { ROOT } = await import('../helpers/cli.js');
    const lock = await readLock(`${ROOT}/images.lock`);
    const spec = await loadSpec(`${ROOT}/bundle-spec/kubernetes.yaml`);
    expect(lock.spec.name).toBe(spec.spec.metadata.name);
    const drift = specLockDrift(spec, lock);
    expect(drift.map((d) => d.name).sort()).toEqual(spec.images.map((i) => i.name).sort());
    expect(drift.every((d) => d.problem === 'is in the spec but not in the lock')).toBe(true);
  });
});
