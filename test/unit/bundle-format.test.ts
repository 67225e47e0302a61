import { describe, expect, it } from 'vitest';
import { binaryPath, bundleFileOf, parseBinaryPath, parseBundleManifest, parseVersionsJson, versionsJson, type BundleFile } from '../../src/bundle/format.js';

const kubeadm: BundleFile = { name: 'kubeadm', version: 'v1.37.2', platform: 'linux/amd64', path: 'files/kubeadm/v1.37.2/linux-amd64/kubeadm', sha256: 'a'.repeat(64), size: 3, archive: false, url: 'https://dl.k8s.io/kubeadm' };
const manifest = { formatVersion: 1, name: 'b', version: '1', created: '1970-01-01T00:00:00.000Z', ferryVersion: '0.1.0', platforms: ['linux/amd64'], images: [], charts: [], files: [kubeadm], runtime: [], signer: { fingerprint: 'sha256:x', publicKey: 'pem' }, contentSize: 10, entries: 5 };

describe('the files/ layout', () => {
  it('names a binary files/<name>/<version>/linux-<arch>/<file>, and reads the name back', () => {
    const c = { name: 'cni-plugins', version: 'v1.5.1', arch: 'arm64', file: 'cni-plugins-linux-arm64-v1.5.1.tgz' };
    expect(binaryPath(c)).toBe('files/cni-plugins/v1.5.1/linux-arm64/cni-plugins-linux-arm64-v1.5.1.tgz');
    expect(parseBinaryPath(binaryPath(c))).toEqual(c);
  });

  it.each(['files/versions.json', 'files/kubeadm/v1/amd64/kubeadm', 'files/kubeadm/../linux-amd64/kubeadm', 'files/a/b/linux-amd64/c/d', 'runtime/linux-amd64/node'])('does not read %s as a binary', (p) => {
    expect(parseBinaryPath(p)).toBeUndefined();
  });
});

describe('versions.json', () => {
  it('lists the bundle files with paths below files/, and reads back to the same files', () => {
    const text = versionsJson([kubeadm]).toString();
    expect(JSON.parse(text)).toEqual([{ ...kubeadm, path: 'kubeadm/v1.37.2/linux-amd64/kubeadm' }]);
    expect(parseVersionsJson(text).map(bundleFileOf)).toEqual([kubeadm]);
  });

  it('refuses an entry whose path leaves the layout, so no reader writes outside its files/', () => {
    const text = JSON.stringify([{ ...kubeadm, path: '../../../etc/cron.d/x' }]);
    expect(() => parseVersionsJson(text, 'https://registry.site.example/files/versions.json')).toThrow(expect.objectContaining({ code: 'BUNDLE_FORMAT', message: expect.stringContaining('versions.json lists a file') }));
  });
});

describe('bundle.json is checked when it is read', () => {
  it('accepts what the builder writes', () => {
    expect(parseBundleManifest(JSON.stringify(manifest), 'b.ferry.tar')).toEqual(manifest);
  });

  it('refuses another format version, pointing at the bundle’s own ferry', () => {
    expect(() => parseBundleManifest(JSON.stringify({ ...manifest, formatVersion: 2 }), 'b.ferry.tar')).toThrow(expect.objectContaining({ code: 'BUNDLE_FORMAT', message: 'bundle format 2 is not supported by this ferry (format 1)', hint: expect.stringContaining('install.sh') }));
  });

  it.each([
    ['files', { files: 'x' }],
    ['contentSize', { contentSize: -1 }],
    ['signer', { signer: null }],
    ['images', { images: [{ ref: 1 }] }],
  ])('refuses a manifest whose %s has the wrong shape', (field, patch) => {
    expect(() => parseBundleManifest(JSON.stringify({ ...manifest, ...patch }), 'b.ferry.tar')).toThrow(expect.objectContaining({ code: 'BUNDLE_FORMAT', message: expect.stringContaining(field) }));
  });

  it('refuses bytes that are not JSON', () => {
    expect(() => parseBundleManifest('{"formatVersion": 1,', 'b.ferry.tar')).toThrow(expect.objectContaining({ code: 'BUNDLE_FORMAT', message: 'bundle.json of b.ferry.tar is not JSON' }));
  });
});
