import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { packageChartDir } from '../../src/bundle/charts.js';
import { checkBundleImages, imagesInManifests, imagesInValues, missingImages } from '../../src/bundle/image-check.js';
import { kubeadmImages } from '../../src/spec/kubernetes.js';
import { tmpdir } from '../helpers/peers.js';

// The images chart flannel v0.28.10's values.yaml names, in its shape (netpol is off by default).
const flannelValues = `podCidr: "10.244.0.0/16"
flannel:
  image:
    repository: ghcr.io/flannel-io/flannel
    tag: v0.28.10
  flannel_cni:
    image:
      repository: ghcr.io/flannel-io/flannel-cni-plugin
      tag: v1.9.1-flannel3
  args: ["--ip-masq", "--kube-subnet-mgr"]
netpol:
  enabled: false
  image:
    repository: registry.k8s.io/networking/kube-network-policies
    tag: v1.0.0
`;

const rendered = `---
# Source: flannel/templates/config.yaml
kind: ConfigMap
apiVersion: v1
metadata: {name: kube-flannel-cfg}
data: {image: "not/a-container:image"}
---
# Source: flannel/templates/daemonset.yaml
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: kube-flannel-ds}
spec:
  template:
    spec:
      initContainers:
        - {name: install-cni-plugin, image: ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3}
        - {name: install-cni, image: ghcr.io/flannel-io/flannel:v0.28.10}
      containers:
        - {name: kube-flannel, image: ghcr.io/flannel-io/flannel:v0.28.10}
`;

async function chart(dir: string, name: string, version: string, values: string): Promise<string> {
  await fs.mkdir(path.join(dir, name, 'templates'), { recursive: true });
  await fs.writeFile(path.join(dir, name, 'Chart.yaml'), `apiVersion: v2\nname: ${name}\nversion: ${version}\nappVersion: ${version}\n`);
  await fs.writeFile(path.join(dir, name, 'values.yaml'), values);
  const tgz = path.join(dir, `${name}-${version}.tgz`);
  await packageChartDir(path.join(dir, name), tgz);
  return tgz;
}

describe('the build-side images check', () => {
  it('reads every container image of rendered manifests with the template that asks for it', () => {
    expect(imagesInManifests(rendered, 'chart flannel v0.28.10')).toEqual([
      { ref: 'ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3', by: 'chart flannel v0.28.10 (templates/daemonset.yaml)' },
      { ref: 'ghcr.io/flannel-io/flannel:v0.28.10', by: 'chart flannel v0.28.10 (templates/daemonset.yaml)' },
      { ref: 'ghcr.io/flannel-io/flannel:v0.28.10', by: 'chart flannel v0.28.10 (templates/daemonset.yaml)' },
    ]);
  });

  it('without helm, reads repository/tag pairs, image strings and image maps from values.yaml, skipping disabled parts', () => {
    expect(imagesInValues(flannelValues, 'chart flannel v0.28.10').map((n) => n.ref)).toEqual(['ghcr.io/flannel-io/flannel:v0.28.10', 'ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3']);
    const other = imagesInValues('image: {registry: quay.io, repository: team/app}\nimages: {lb: haproxy:3.0}\nsidecarImage: busybox:1.37\nname: not-an-image\n', 'chart x 1.0.0', '2.1.0');
    expect(other).toEqual([
      { ref: 'quay.io/team/app:2.1.0', by: 'chart x 1.0.0 (values.yaml image)' },
      { ref: 'haproxy:3.0', by: 'chart x 1.0.0 (values.yaml images.lb)' },
      { ref: 'busybox:1.37', by: 'chart x 1.0.0 (values.yaml sidecarImage)' },
    ]);
  });

  it('compares names normalised, and a pinned digest by digest', () => {
    const held = [{ ref: 'docker.io/library/haproxy:3.0' }, { ref: 'registry.k8s.io/pause:3.10.2', digest: `sha256:${'a'.repeat(64)}` }];
    expect(missingImages([{ ref: 'haproxy:3.0', by: 'x' }, { ref: `registry.k8s.io/pause@sha256:${'a'.repeat(64)}`, by: 'y' }], held)).toEqual([]);
    expect(missingImages([{ ref: 'haproxy:3.1', by: 'x' }, { ref: `registry.k8s.io/pause@sha256:${'b'.repeat(64)}`, by: 'y' }], held).map((m) => m.ref)).toEqual(['docker.io/library/haproxy:3.1', `registry.k8s.io/pause@sha256:${'b'.repeat(64)}`]);
  });

  it('refuses a spec that lacks images, naming each image and who asks for it, all at once', async () => {
    const dir = await tmpdir();
    const tgz = await chart(dir, 'flannel', '0.28.10', flannelValues);
    const warnings: string[] = [];
    const held = kubeadmImages('v1.37.2').filter((r) => !r.includes('/etcd:')).map((ref) => ({ ref }));
    held.push({ ref: 'ghcr.io/flannel-io/flannel:v0.28.10' });
    let err: { code?: string; exit?: string; message?: string; hint?: string } | undefined;
    try {
      await checkBundleImages({ kubernetes: { version: 'v1.37.2' }, charts: [{ name: 'flannel', version: 'v0.28.10', tgz }], held, reporter: { warn: (m) => warnings.push(m) } });
    } catch (e) {
      err = e as typeof err;
    }
    expect(err).toMatchObject({ code: 'BUNDLE_IMAGE_MISSING', exit: 'usage' });
    expect(err!.message).toBe(
      '2 images would be missing on the site:\n' +
        '  kubeadm v1.37.2 asks for registry.k8s.io/etcd:3.7.0-0, which the spec does not bundle\n' +
        '  chart flannel v0.28.10 (values.yaml flannel.flannel_cni.image) asks for ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3, which the spec does not bundle',
    );
    expect(err!.hint).toMatch(/^Add each image to spec\.images and run `ferry lock` again/);
    // Without helm the check is partial, and says so.
    expect(warnings).toEqual([expect.stringMatching(/read only values\.yaml of chart flannel: no helm found \(set FERRY_HELM/)]);

    held.push({ ref: 'registry.k8s.io/etcd:3.7.0-0' }, { ref: 'ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3' });
    const needs = await checkBundleImages({ kubernetes: { version: 'v1.37.2' }, charts: [{ name: 'flannel', version: 'v0.28.10', tgz }], held });
    expect(needs).toHaveLength(9);
  });
});
