import { promises as fs } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { bundleSpecSchema } from '../../src/spec/schema.js';
import { parseSpecText } from '../../src/spec/spec.js';
import { ROOT } from '../helpers/cli.js';

const good = `apiVersion: ferry.dev/v1alpha1
kind: BundleSpec
metadata: {name: demo, version: 0.1.0}
spec:
  platforms: [linux/amd64, linux/arm64]
  kubernetes: {version: v1.37.2}
  images:
    - registry.k8s.io/pause:3.10
    - {ref: docker.io/library/haproxy:2.9, platforms: [linux/amd64]}
    - nginx
`;

function errorOf(text: string): { code: string; message: string; hint: string } {
  try {
    parseSpecText(text, 'bundle-spec/demo.yaml');
  } catch (e) {
    return e as { code: string; message: string; hint: string };
  }
  throw new Error('expected the spec to be refused');
}

describe('bundle spec validation', () => {
  it('accepts the documented shape and normalises image names and platforms', () => {
    const s = parseSpecText(good);
    expect(s.images.map((i) => i.name)).toEqual(['docker.io/library/haproxy:2.9', 'docker.io/library/nginx:latest', 'registry.k8s.io/pause:3.10']);
    expect(s.images.find((i) => i.name.includes('haproxy'))!.platforms).toEqual([{ os: 'linux', architecture: 'amd64' }]);
    expect(s.images.find((i) => i.name.includes('pause'))!.platforms).toHaveLength(2);
  });

  it('names file:line:column and the expected shape for a bad field', () => {
    const e = errorOf(good.replace('platforms: [linux/amd64]}', 'platforms: [windows/amd64]}'));
    expect(e.code).toBe('SPEC_INVALID');
    expect(e.message).toMatch(/bundle-spec\/demo\.yaml:9:\d+: spec\.images\[1\]\.platforms\[0\] must match pattern/);
    expect(e.message).toContain('expected: A target platform');
    expect(e.hint).toContain('bundle-spec.schema.json');
  });

  it('points at an unknown field', () => {
    const e = errorOf(good.replace('  kubernetes:', '  kubernets: {version: v1}\n  kubernetes:'));
    expect(e.message).toMatch(/demo\.yaml:6:3: spec\.kubernets is not a known field/);
  });

  it('names a missing required field', () => {
    const e = errorOf(good.replace('metadata: {name: demo, version: 0.1.0}', 'metadata: {name: demo}'));
    expect(e.message).toMatch(/demo\.yaml:3:11: metadata is missing required field "version"/);
  });

  it('refuses a bad image reference with its position', () => {
    const e = errorOf(good.replace('    - nginx', '    - Not_A/Valid Ref'));
    expect(e.message).toMatch(/demo\.yaml:10:7: spec\.images\[2\] invalid image reference/);
  });

  it('refuses the same image listed twice under different spellings', () => {
    const e = errorOf(good.replace('    - nginx', '    - index.docker.io/library/haproxy:2.9'));
    expect(e.message).toMatch(/demo\.yaml:10:7: .* is the same image as bundle-spec\/demo\.yaml:9:\d+/);
  });

  it('refuses a Kubernetes release outside v1.35 to v1.37 with its position, the range and what to set', () => {
    for (const v of ['v1.31.2', 'v1.34.9', 'v1.38.0', 'v2.0.0']) {
      const e = errorOf(good.replace('{version: v1.37.2}', `{version: ${v}}`));
      expect(e.code, v).toBe('KUBERNETES_VERSION_UNSUPPORTED');
      expect(e.message).toBe(`bundle-spec/demo.yaml:6:25: spec.kubernetes.version: Kubernetes ${v} is not supported; ferry installs Kubernetes v1.35 to v1.37 (kubeadm config kubeadm.k8s.io/v1beta4)`);
      expect(e.hint).toMatch(/^Set spec\.kubernetes\.version in bundle-spec\/demo\.yaml to a release from v1\.35\.0 to v1\.37\.x, such as v1\.37\.2/);
    }
    expect(errorOf(good.replace('{version: v1.37.2}', '{version: v1.38.0}')).hint).toContain('or use a ferry release that supports v1.38');
    for (const v of ['v1.35.0', 'v1.36.3', 'v1.37.2']) expect(() => parseSpecText(good.replace('{version: v1.37.2}', `{version: ${v}}`))).not.toThrow();
  });

  it('reports YAML syntax errors with their position', () => {
    const e = errorOf('apiVersion: ferry.dev/v1alpha1\nkind: [BundleSpec\n');
    expect(e.code).toBe('SPEC_PARSE');
    expect(e.message).toMatch(/bundle-spec\/demo\.yaml:\d+:\d+: spec is not valid YAML/);
  });

  it('publishes the same JSON Schema that it validates with', async () => {
    const onDisk = JSON.parse(await fs.readFile(`${ROOT}/bundle-spec/bundle-spec.schema.json`, 'utf8')) as unknown;
    expect(onDisk).toEqual(JSON.parse(JSON.stringify(bundleSpecSchema)));
  });

  it('accepts every spec shipped in bundle-spec/', async () => {
    const files = (await fs.readdir(`${ROOT}/bundle-spec`)).filter((f) => f.endsWith('.yaml'));
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) {
      const s = parseSpecText(await fs.readFile(`${ROOT}/bundle-spec/${f}`, 'utf8'), f);
      expect(s.images.length).toBeGreaterThan(0);
      for (const i of s.images) expect(i.ref.digest).toBeUndefined(); // never invent a digest: the lock pins them
    }
  });
});
