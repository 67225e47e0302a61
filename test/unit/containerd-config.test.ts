import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { normaliseMirror, renderConfigSnippets, renderHostsToml, writeContainerdConfig } from '../../src/install/containerd.js';
import { containerdConfig, containerdConfigVersion } from '../../src/install/system-files.js';
import { Layout } from '../../src/oci/layout.js';
import { MediaType } from '../../src/oci/media.js';
import { tmpdir } from '../helpers/peers.js';

const desc = { mediaType: MediaType.ociManifest, digest: `sha256:${'a'.repeat(64)}`, size: 2 };

async function bundleNaming(names: string[]): Promise<string> {
  const dir = await tmpdir();
  const store = await Layout.open(path.join(dir, 'images'));
  await store.addRefs(names.map((name) => ({ name, descriptor: desc })));
  return dir;
}

describe("containerd's config.toml", () => {
  it('is config version 3 for containerd 2.x and version 2 for 1.x or an unknown containerd', () => {
    expect(['v2.2.9', '2.0.0', 'v3.0.1'].map(containerdConfigVersion)).toEqual([3, 3, 3]);
    expect(['v1.7.23', '1.6.20~ds1', undefined, ''].map(containerdConfigVersion)).toEqual([2, 2, 2, 2]);
  });

  it('writes version 3 with the CRI images plugin (pause pinned, certs.d) and the runtime plugin (runc, cgroup driver)', () => {
    expect(containerdConfig({ pauseImage: 'registry.k8s.io/pause:3.10.2', cgroupDriver: 'cgroupfs', configVersion: 3 })).toBe(
      [
        '# Written by ferry (containerd 2.x).',
        'version = 3',
        '[plugins."io.containerd.cri.v1.images".pinned_images]',
        '  sandbox = "registry.k8s.io/pause:3.10.2"',
        '[plugins."io.containerd.cri.v1.images".registry]',
        '  config_path = "/etc/containerd/certs.d"',
        '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]',
        '  runtime_type = "io.containerd.runc.v2"',
        '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]',
        '  SystemdCgroup = false',
        '',
      ].join('\n'),
    );
  });

  it('keeps version 2 free of the version 3 plugin ids, and the other way round', () => {
    const v2 = containerdConfig({ pauseImage: 'p:1', cgroupDriver: 'systemd', configVersion: 2 });
    const v3 = containerdConfig({ pauseImage: 'p:1', cgroupDriver: 'systemd', configVersion: 3 });
    expect(v2).toMatch(/^version = 2$/m);
    expect(v2).toContain('sandbox_image = "p:1"');
    expect(v2).not.toContain('io.containerd.cri.v1');
    expect(v3).not.toMatch(/io\.containerd\.grpc\.v1\.cri|sandbox_image/);
  });
});

describe('containerd hosts.toml for the site', () => {
  it('writes one hosts.toml per registry the bundle names, server the first mirror, hosts in order', async () => {
    const bundle = await bundleNaming(['registry.k8s.io/pause:3.10', 'docker.io/library/haproxy:3.0', 'nginx:1.27', 'quay.io/a/b@' + desc.digest, 'ghcr.io/x/y:1', '10.0.0.9:5000/z:1']);
    const out = path.join(bundle, 'out');
    const r = await writeContainerdConfig({ bundleDir: bundle, mirrors: ['https://registry.site.example:5443/', 'https://10.0.0.12:5443'], caFile: '/etc/ferry/pki/ca.crt', outDir: out });
    expect(r.registries).toEqual(['10.0.0.9:5000', 'docker.io', 'ghcr.io', 'quay.io', 'registry.k8s.io']);
    expect((await fs.readdir(path.join(out, 'certs.d'))).sort()).toEqual(r.registries);
    const toml = await fs.readFile(path.join(out, 'certs.d', 'docker.io', 'hosts.toml'), 'utf8');
    expect(toml).toBe(
      [
        '# docker.io: written by ferry. Pulls go to the site service only; there is no fallback upstream.',
        'server = "https://registry.site.example:5443"',
        'capabilities = ["pull", "resolve"]',
        'ca = "/etc/ferry/pki/ca.crt"',
        '',
        '[host."https://registry.site.example:5443"]',
        '  capabilities = ["pull", "resolve"]',
        '  ca = "/etc/ferry/pki/ca.crt"',
        '',
        '[host."https://10.0.0.12:5443"]',
        '  capabilities = ["pull", "resolve"]',
        '  ca = "/etc/ferry/pki/ca.crt"',
        '',
      ].join('\n'),
    );
    for (const reg of r.registries) {
      const t = await fs.readFile(path.join(out, 'certs.d', reg, 'hosts.toml'), 'utf8');
      expect(t).not.toMatch(new RegExp(`server = "https?://${reg.replace(/\./g, '\\.')}`));
      expect(t).not.toMatch(/registry-1\.docker\.io|"push"/);
    }
    const v2 = await fs.readFile(r.snippets.v2, 'utf8');
    expect(v2).toContain(`version = 2\n\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "${path.join(out, 'certs.d')}"\n`);
    const v3 = await fs.readFile(r.snippets.v3, 'utf8');
    expect(v3).toContain(`version = 3\n\n[plugins."io.containerd.cri.v1.images".registry]\n  config_path = "${path.join(out, 'certs.d')}"\n`);
  });

  it('skips registries that hold only Helm charts: containerd never pulls them', async () => {
    const dir = await tmpdir();
    const store = await Layout.open(path.join(dir, 'images'));
    await store.addRefs([
      { name: 'charts.ferry.local/charts/demo:0.2.0', descriptor: { ...desc, artifactType: MediaType.helmConfig } },
      { name: 'registry.k8s.io/pause:3.10', descriptor: desc },
    ]);
    const r = await writeContainerdConfig({ bundleDir: dir, mirrors: ['https://m:1'], caFile: '/ca.crt', outDir: path.join(dir, 'o') });
    expect(r.registries).toEqual(['registry.k8s.io']);
  });

  it('uses the given config_path and escapes TOML strings', () => {
    expect(renderConfigSnippets('/etc/containerd/certs.d').v3).toContain('config_path = "/etc/containerd/certs.d"');
    expect(renderHostsToml('quay.io', ['https://m:1'], '/odd "dir"\\ca.crt')).toContain('ca = "/odd \\"dir\\"\\\\ca.crt"');
  });

  it('refuses mirrors with credentials, paths, other schemes, and an empty list', async () => {
    expect(normaliseMirror('https://Registry.Site.Example:5443/')).toBe('https://registry.site.example:5443');
    for (const bad of ['ftp://x', 'https://u:p@x', 'https://x/v2/prefix', 'https://x?q=1', 'not a url']) expect(() => normaliseMirror(bad), bad).toThrow(expect.objectContaining({ code: 'MIRROR_INVALID' }));
    const bundle = await bundleNaming(['registry.k8s.io/pause:3.10']);
    await expect(writeContainerdConfig({ bundleDir: bundle, mirrors: [], caFile: '/ca.crt', outDir: path.join(bundle, 'o') })).rejects.toMatchObject({ code: 'MIRROR_INVALID' });
    await expect(writeContainerdConfig({ bundleDir: bundle, mirrors: ['https://m:1'], caFile: 'ca.crt', outDir: path.join(bundle, 'o') })).rejects.toMatchObject({ code: 'USAGE', hint: expect.stringContaining('/etc/ferry/pki/ca.crt') });
    await expect(writeContainerdConfig({ bundleDir: path.join(bundle, 'nope'), mirrors: ['https://m:1'], caFile: '/ca.crt', outDir: path.join(bundle, 'o') })).rejects.toMatchObject({ code: 'SERVE_BUNDLE' });
  });
});
