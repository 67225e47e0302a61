import { describe, expect, it } from 'vitest';
import { movedTags, specLockDrift, type ImagesLock, type LockedImage } from '../../src/spec/lock.js';
import { narrowPlatforms, parseSpecText } from '../../src/spec/spec.js';

const spec = parseSpecText(
  `apiVersion: ferry.dev/v1alpha1
kind: BundleSpec
metadata: {name: demo, version: 0.1.0}
spec:
  platforms: [linux/amd64, linux/arm64]
  images:
    - registry.k8s.io/pause:3.10.2
    - {ref: docker.io/library/haproxy:3.0, platforms: [linux/amd64]}
`,
  'bundle-spec/demo.yaml',
);

const d = (c: string) => `sha256:${c.repeat(64)}`;
const img = (name: string, platforms: string[], digest = d('a')): LockedImage => ({
  name,
  digest,
  mediaType: 'application/vnd.oci.image.index.v1+json',
  size: 100,
  platforms: platforms.map((platform, i) => ({ platform, digest: d(String(i + 1)), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 10 })),
});
const lockOf = (images: LockedImage[]): ImagesLock => ({ apiVersion: 'ferry.dev/v1alpha1', kind: 'ImagesLock', spec: { name: 'demo', version: '0.1.0' }, images });
const fullLock = lockOf([img('docker.io/library/haproxy:3.0', ['linux/amd64']), img('registry.k8s.io/pause:3.10.2', ['linux/amd64', 'linux/arm64'])]);

describe('--platform narrowing', () => {
  it('keeps only the chosen platforms, intersects per-image platforms and skips an image left with none', () => {
    const arm = narrowPlatforms(spec, ['linux/arm64']);
    expect(arm.spec.spec.platforms).toEqual(['linux/arm64']);
    expect(arm.images.map((i) => [i.name, i.platforms])).toEqual([['registry.k8s.io/pause:3.10.2', [{ os: 'linux', architecture: 'arm64' }]]]);
    expect(arm.narrowed).toEqual({ platforms: ['linux/arm64'], skipped: ['docker.io/library/haproxy:3.0'] });
    // The loaded spec itself is untouched.
    expect(spec.spec.spec.platforms).toEqual(['linux/amd64', 'linux/arm64']);
    expect(narrowPlatforms(spec, undefined)).toBe(spec);
  });

  it('refuses a platform that is not in the spec, naming the spec platforms', () => {
    expect(() => narrowPlatforms(spec, ['linux/amd64', 'linux/riscv64'])).toThrowError(
      expect.objectContaining({ code: 'USAGE', exit: 'usage', message: '--platform linux/riscv64 is not in the platforms of bundle-spec/demo.yaml: linux/amd64, linux/arm64' }),
    );
  });

  it('finds no drift between a narrowed spec and a lock that holds more platforms, but does for the full spec against a narrowed lock', () => {
    expect(specLockDrift(narrowPlatforms(spec, ['linux/arm64']), fullLock)).toEqual([]);
    expect(specLockDrift(narrowPlatforms(spec, ['linux/amd64']), fullLock)).toEqual([]);
    const amdLock = lockOf([img('docker.io/library/haproxy:3.0', ['linux/amd64']), img('registry.k8s.io/pause:3.10.2', ['linux/amd64'])]);
    expect(specLockDrift(narrowPlatforms(spec, ['linux/amd64']), amdLock)).toEqual([]);
    expect(specLockDrift(spec, amdLock)).toEqual([{ name: 'registry.k8s.io/pause:3.10.2', problem: 'wants platforms [linux/amd64, linux/arm64] but the lock has [linux/amd64]' }]);
    // A narrowed spec still needs its own platforms in the lock.
    const armOnly = lockOf([img('registry.k8s.io/pause:3.10.2', ['linux/arm64'])]);
    expect(specLockDrift(narrowPlatforms(spec, ['linux/amd64']), armOnly).map((x) => x.name)).toEqual(['docker.io/library/haproxy:3.0', 'registry.k8s.io/pause:3.10.2']);
  });

  it('lock --check with --platform compares only the narrowed platforms and images', () => {
    const arm = narrowPlatforms(spec, ['linux/arm64']);
    const fresh = lockOf([{ ...img('registry.k8s.io/pause:3.10.2', ['linux/arm64']), platforms: [fullLock.images[1]!.platforms[1]!] }]);
    expect(movedTags(fullLock, fresh, arm.narrowed)).toEqual([]);
    expect(movedTags(fullLock, fresh).map((m) => m.problem)).toEqual(['platform manifests changed', 'is in the lock but not in the spec']);
  });
});
