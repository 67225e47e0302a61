import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildFixtureSet } from '../../fixtures/images.js';
import { packageChartDir } from '../../src/bundle/charts.js';
import { checkBundleImages } from '../../src/bundle/image-check.js';
import { kubeadmImages } from '../../src/spec/kubernetes.js';
import { loadSpec } from '../../src/spec/spec.js';
import { ferry, ROOT } from '../helpers/cli.js';
import { helmBinary } from '../helpers/helm.js';
import { writeBundleSpec } from '../../fixtures/spec.js';
import { pushFixtures, startRegistry, tmpdir, type RegistryPeer } from '../helpers/peers.js';

let work: string;
let reg: RegistryPeer;
let env: NodeJS.ProcessEnv;
let key: string;

async function write(p: string, data: string) {
  await fs.mkdir(path.dirname(p), { recursive: true });
  await fs.writeFile(p, data);
}

/** kubeadm's images for v1.37.2, as repo:tag names below the test registry's k8s/ prefix. */
const kubeadmNames = () => kubeadmImages('v1.37.2', 'r.invalid/k8s').map((r) => r.slice('r.invalid/k8s/'.length));
const FLANNEL = 'flannel-io/flannel:v0.28.10';
const FLANNEL_CNI = 'flannel-io/flannel-cni-plugin:v1.9.1-flannel3';

async function spec(name: string, images: string[]): Promise<string> {
  const file = await writeBundleSpec(work, {
    name,
    platforms: ['linux/amd64'],
    kubernetes: { version: 'v1.37.2', imageRepository: `${reg.host}/k8s` },
    images: images.map((i) => `${reg.host}/k8s/${i}`),
    charts: [{ name: 'flannel', path: 'charts/flannel' }],
    runtime: { 'linux/amd64': process.execPath },
  });
  expect((await ferry(['lock', file, '--lock', path.join(work, `${name}.lock`)], { env })).code).toBe(0);
  return file;
}

beforeAll(async () => {
  work = await tmpdir('ferry-imgcheck-');
  reg = await startRegistry();
  const fx = await buildFixtureSet(path.join(work, 'fx'), 0.02);
  // One small image under every name a spec here bundles: the check is about names.
  const one = fx.images['single:v1']!;
  fx.images = Object.fromEntries([...kubeadmNames(), FLANNEL, FLANNEL_CNI].map((n) => [n, one]));
  await pushFixtures(fx, reg.host, 'k8s');
  // A CNI chart shaped like flannel's: its DaemonSet names two images from values.yaml.
  await write(path.join(work, 'charts/flannel/Chart.yaml'), 'apiVersion: v2\nname: flannel\nversion: v0.28.10\nappVersion: v0.28.10\n');
  await write(
    path.join(work, 'charts/flannel/values.yaml'),
    `flannel:\n  image: {repository: ${reg.host}/k8s/flannel-io/flannel, tag: v0.28.10}\n  flannel_cni: {image: {repository: ${reg.host}/k8s/flannel-io/flannel-cni-plugin, tag: v1.9.1-flannel3}}\n`,
  );
  await write(
    path.join(work, 'charts/flannel/templates/daemonset.yaml'),
    `apiVersion: apps/v1
kind: DaemonSet
metadata: {name: kube-flannel-ds, namespace: {{ .Release.Namespace }}}
spec:
  selector: {matchLabels: {app: flannel}}
  template:
    metadata: {labels: {app: flannel}}
    spec:
      initContainers:
        - name: install-cni-plugin
          image: {{ .Values.flannel.flannel_cni.image.repository }}:{{ .Values.flannel.flannel_cni.image.tag }}
      containers:
        - name: kube-flannel
          image: {{ .Values.flannel.image.repository }}:{{ .Values.flannel.image.tag }}
`,
  );
  env = { FERRY_CACHE_DIR: path.join(work, 'cache'), FERRY_HELM: await helmBinary() };
  expect((await ferry(['key', 'generate', '--out', path.join(work, 'keys')])).code).toBe(0);
  key = path.join(work, 'keys', 'ferry.key');
}, 90_000);

afterAll(async () => {
  await reg?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

describe('ferry bundle build checks that the bundle holds every image kubeadm and the charts ask for', () => {
  it('refuses a spec without etcd and the flannel CNI plugin image, naming both and who asks, before pulling any image', async () => {
    const file = await spec('short', [...kubeadmNames().filter((n) => !n.startsWith('etcd:')), FLANNEL]);
    const r = await ferry(['bundle', 'build', file, '--lock', path.join(work, 'short.lock'), '--key', key, '--out', path.join(work, 'short.tar')], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      `error[BUNDLE_IMAGE_MISSING]: 2 images would be missing on the site:\n` +
        `  kubeadm v1.37.2 asks for ${reg.host}/k8s/etcd:3.7.0-0, which the spec does not bundle\n` +
        `  chart flannel v0.28.10 (templates/daemonset.yaml) asks for ${reg.host}/k8s/${FLANNEL_CNI}, which the spec does not bundle`,
    );
    expect(r.stderr).toMatch(/hint: Add each image to spec\.images and run `ferry lock` again/);
    await expect(fs.access(path.join(work, 'short.tar'))).rejects.toThrow();
    // Refused before any image was pulled into the cache.
    const pinned = (await fs.readFile(path.join(work, 'short.lock'), 'utf8')).match(/digest: sha256:([a-f0-9]{64})/)![1]!;
    expect(await fs.readdir(path.join(work, 'cache', 'oci', 'blobs', 'sha256')).catch(() => [] as string[])).not.toContain(pinned);
  }, 60_000);

  it('builds a spec that bundles them all, with helm rendering the charts (no partial-check warning)', async () => {
    const file = await spec('full', [...kubeadmNames(), FLANNEL, FLANNEL_CNI]);
    const r = await ferry(['bundle', 'build', file, '--lock', path.join(work, 'full.lock'), '--key', key, '--out', path.join(work, 'full.tar')], { env });
    expect(r.stderr).not.toMatch(/error\[|read only values\.yaml/);
    expect(r.code).toBe(0);
  }, 60_000);

  it('without helm falls back to values.yaml and warns that the check was partial', async () => {
    const file = path.join(work, 'bundle-spec', 'full.yaml');
    const { FERRY_HELM: _h, ...noHelm } = env;
    const r = await ferry(['bundle', 'build', file, '--lock', path.join(work, 'full.lock'), '--key', key, '--out', path.join(work, 'full2.tar')], { env: { ...noHelm, FERRY_HELM: '', PATH: '/usr/bin:/bin' } });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/warning: the image check read only values\.yaml of chart flannel: no helm found \(set FERRY_HELM or put helm on PATH/);
  }, 60_000);

  it('passes the default spec for kubeadm v1.37.2 and charts/ferry-bootstrap rendered by helm (flannel needs its repository)', async () => {
    const spec = await loadSpec(path.join(ROOT, 'bundle-spec', 'kubernetes.yaml'));
    const tgz = path.join(work, 'ferry-bootstrap.tgz');
    const pkg = await packageChartDir(path.join(ROOT, 'charts', 'ferry-bootstrap'), tgz);
    const needs = await checkBundleImages({
      kubernetes: spec.spec.spec.kubernetes,
      charts: [{ name: 'ferry-bootstrap', version: String(pkg.meta.version), tgz }],
      held: spec.images.map((i) => ({ ref: i.name })),
      helm: env.FERRY_HELM,
    });
    expect(needs.map((n) => n.by)).toContain('chart ferry-bootstrap 0.1.0 (templates/lb.yaml)');
    expect([...new Set(needs.map((n) => n.ref))].sort()).toEqual([
      'docker.io/library/haproxy:3.0',
      ...kubeadmImages('v1.37.2'),
    ].sort());
  });
});
