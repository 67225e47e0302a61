import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { signedTable, tarOf } from '../../fixtures/hostile.js';
import { partsSigningBytes, type PartsManifest } from '../../src/bundle/format.js';
import { readTar } from '../../src/bundle/tarread.js';
import { MediaType } from '../../src/oci/media.js';
import { fingerprint, signBytes } from '../../src/sign/keys.js';
import { kubeadmImages } from '../../src/spec/kubernetes.js';
import { sha256Hex } from '../../src/util/digest.js';
import { ferry } from '../helpers/cli.js';
import { BOOTSTRAP_CHART_DIR, helm, helmArchive } from '../helpers/helm.js';
import { execFileP, tmpdir } from '../helpers/peers.js';

/*
 * ferry install --dry-run and ferry join --dry-run, against small signed bundles whose bundle.json
 * says what they carry (the dry run reads the table, and verifies every entry it lists). They carry
 * real charts (a small CNI chart and charts/ferry-bootstrap) as OCI artifacts and the real helm,
 * which the dry run renders them with.
 */
let work: string;
let key: KeyObject;
let pub: string;
let answers: string;
const REPO = 'registry.site-upstream.test/k8s';
const arch = process.arch === 'arm64' ? 'arm64' : 'amd64';

function bin(name: string, archive = false) {
  return { name, version: 'v1.37.2', platform: `linux/${arch}`, path: `files/${name}/v1.37.2/linux-${arch}/${name}`, sha256: '0'.repeat(64), size: 1, archive, url: `https://example.test/${name}` };
}

const FLANNEL_IMAGE = 'registry.site-upstream.test/flannel/flannel:v0.26.1';
const COREDNS_IMAGE = 'registry.site-upstream.test/coredns/coredns:v1.14.6';
const HAPROXY_IMAGE = 'registry.site-upstream.test/library/haproxy:3.0';
const held = (ref: string) => ({ ref, digest: `sha256:${'1'.repeat(64)}`, mediaType: 'application/vnd.oci.image.index.v1+json', platforms: [`linux/${arch}`] });

/** Built once: the entries of the CNI chart, the bootstrap chart and helm, and what bundle.json says of them. */
let extras: { entries: { path: string; data: Buffer }[]; charts: { name: string; version: string; ref: string; digest: string }[]; helm: Record<string, unknown> };
/** A containerd archive as upstream ships one (bin/containerd, bin/ctr), for the binaries step. */
let containerdTgz: Buffer;

/**
 * The entries a bundle needs for the real run's steps to run on it (which the dry run runs,
 * recorded): each binary bundle.json lists, ferry itself, and the image index, which names the
 * registries containerd gets a hosts.toml for.
 */
function stepEntries(files: { name: string; path: string; archive?: boolean }[], images: { ref: string; digest: string; mediaType: string }[]): { path: string; data: Buffer }[] {
  const index = { schemaVersion: 2, manifests: images.map((i) => ({ mediaType: i.mediaType, digest: i.digest, size: 1, annotations: { 'org.opencontainers.image.ref.name': i.ref } })) };
  return [
    ...files.filter((f) => f.name !== 'helm').map((f) => ({ path: f.path, data: f.archive ? containerdTgz : Buffer.from(`#!/bin/sh\necho ${f.name}\n`) })),
    { path: 'ferry/ferry.mjs', data: Buffer.from('// ferry\n') },
    { path: 'images/index.json', data: Buffer.from(JSON.stringify(index)) },
  ];
}

/** A chart .tgz as an OCI artifact in the bundle's store: its manifest, config and layer blobs. */
function chartEntries(tgz: Buffer): { digest: string; entries: { path: string; data: Buffer }[] } {
  const config = Buffer.from('{}');
  const blob = (b: Buffer) => ({ path: `images/blobs/sha256/${sha256Hex(b)}`, data: b });
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: MediaType.helmConfig, digest: `sha256:${sha256Hex(config)}`, size: config.length },
      layers: [{ mediaType: MediaType.helmChart, digest: `sha256:${sha256Hex(tgz)}`, size: tgz.length }],
    }),
  );
  return { digest: `sha256:${sha256Hex(manifest)}`, entries: [blob(manifest), blob(config), blob(tgz)] };
}

async function buildExtras(): Promise<void> {
  const home = path.join(work, 'helm-home');
  // A CNI chart in flannel's shape: one DaemonSet whose image comes from values, its podCidr from --set.
  const cni = path.join(work, 'cni-chart');
  await fs.mkdir(path.join(cni, 'templates'), { recursive: true });
  await fs.writeFile(path.join(cni, 'Chart.yaml'), 'apiVersion: v2\nname: flannel\nversion: 0.26.1\n');
  await fs.writeFile(path.join(cni, 'values.yaml'), `image: ${FLANNEL_IMAGE}\npodCidr: ""\n`);
  await fs.writeFile(
    path.join(cni, 'templates', 'daemonset.yaml'),
    'apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: kube-flannel-ds}\nspec:\n  template:\n    spec:\n      containers:\n        - name: kube-flannel\n          image: {{ .Values.image }}\n          args: ["--pod-cidr={{ required "podCidr" .Values.podCidr }}"]\n',
  );
  const pkg = path.join(work, 'charts');
  await helm(['package', cni, '-d', pkg], home);
  await helm(['package', BOOTSTRAP_CHART_DIR, '-d', pkg], home);
  const tgzs = await fs.readdir(pkg);
  const cniTgz = await fs.readFile(path.join(pkg, tgzs.find((f) => f.startsWith('flannel-'))!));
  const bootName = tgzs.find((f) => f.startsWith('ferry-bootstrap-'))!;
  const bootTgz = await fs.readFile(path.join(pkg, bootName));
  const a = chartEntries(cniTgz);
  const b = chartEntries(bootTgz);
  const h = await helmArchive();
  const helmPath = `files/helm/${h.version}/linux-${arch}/helm-${h.version}-linux-${arch}.tar.gz`;
  const bootVersion = bootName.replace(/^ferry-bootstrap-|\.tgz$/g, '');
  extras = {
    // The charts share their empty config blob: one entry.
    entries: [...new Map([...a.entries, ...b.entries].map((e) => [e.path, e])).values(), { path: helmPath, data: await fs.readFile(h.path) }],
    charts: [
      { name: 'flannel', version: '0.26.1', ref: 'charts.test/flannel:0.26.1', digest: a.digest },
      { name: 'ferry-bootstrap', version: bootVersion, ref: `charts.test/ferry-bootstrap:${bootVersion}`, digest: b.digest },
    ],
    helm: { ...bin('helm', true), version: h.version, path: helmPath, sha256: h.sha256 },
  };
}

/**
 * A signed bundle whose bundle.json says it carries kubeadm's images and the charts', flannel and
 * ferry-bootstrap (real charts and helm), kubeadm, kubelet and containerd, with `over` on top.
 */
async function bundleWith(name: string, over: Record<string, unknown>, signer = key): Promise<string> {
  const carried = {
    name: 'dry',
    kubernetes: { version: 'v1.37.2', imageRepository: REPO },
    images: [...kubeadmImages('v1.37.2', REPO), FLANNEL_IMAGE, COREDNS_IMAGE, HAPROXY_IMAGE].map(held),
    charts: extras.charts,
    files: [bin('kubeadm'), bin('kubelet'), bin('containerd', true), extras.helm],
    platforms: [`linux/${arch}`],
  };
  const m = { ...carried, ...over } as typeof carried;
  // Sorted, as ferry writes them: a chart's layer may come before or after its manifest.
  const content = [{ path: 'install.sh', data: Buffer.from('#!/bin/sh\n') }, ...extras.entries, ...stepEntries(m.files as { name: string; path: string; archive?: boolean }[], m.images)].sort((x, y) => (x.path < y.path ? -1 : 1));
  const file = path.join(work, `${name}.ferry.tar`);
  await fs.writeFile(file, tarOf([...signedTable(signer, content, [], { ...carried, ...over }), ...content.map((c) => ({ name: c.path, data: c.data }))]));
  return file;
}

async function answersWith(name: string, extra = ''): Promise<string> {
  const f = path.join(work, `${name}.yaml`);
  await fs.writeFile(f, `apiVersion: ferry.dev/v1alpha1\nkind: InstallAnswers\ndomain: site.test\nnode: {name: k8s-server-01, ip: 127.0.0.1}\npodCidr: 10.244.0.0/16\nserviceCidr: 10.96.0.0/12\n${extra}`);
  return f;
}

beforeAll(async () => {
  work = await tmpdir('ferry-dry-');
  key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
  pub = path.join(work, 'ferry.pub');
  await fs.writeFile(pub, createPublicKey(key).export({ type: 'spki', format: 'pem' }));
  answers = await answersWith('answers', 'cni: flannel\n');
  const ctd = path.join(work, 'containerd');
  await fs.mkdir(path.join(ctd, 'bin'), { recursive: true });
  for (const b of ['containerd', 'ctr']) await fs.writeFile(path.join(ctd, 'bin', b), '#!/bin/sh\n', { mode: 0o755 });
  await execFileP('tar', ['-czf', path.join(work, 'containerd.tgz'), '-C', ctd, 'bin']);
  containerdTgz = await fs.readFile(path.join(work, 'containerd.tgz'));
  await buildExtras();
});

describe('ferry install --dry-run checks what a real run would', () => {
  it('refuses a bundle path that does not exist (it used to exit 0)', async () => {
    const root = path.join(work, 'r-missing');
    const r = await ferry(['install', path.join(work, 'nope.ferry.tar'), '--trust', pub, '--answers', answers, '--root', root, '--dry-run']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/error\[BUNDLE_(READ|NOT_FOUND)\]: .*nope\.ferry\.tar/);
  });

  it('verifies the signature: a bundle signed by another key is refused', async () => {
    const other = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
    const b = await bundleWith('other-signer', {}, other);
    const r = await ferry(['install', b, '--trust', pub, '--answers', answers, '--root', path.join(work, 'r-sig'), '--dry-run']);
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/error\[BUNDLE_(SIGNATURE_INVALID|UNTRUSTED)\]/);
  });

  it('refuses a CNI the bundle does not carry', async () => {
    const b = await bundleWith('no-calico', {});
    const r = await ferry(['install', b, '--trust', pub, '--answers', await answersWith('calico', 'cni: calico\n'), '--root', path.join(work, 'r-cni'), '--dry-run']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/error\[CHART_NOT_FOUND\]: the answers choose the CNI calico, but the bundle carries no chart of that name/);
    expect(r.stderr).toMatch(/hint: Choose one of: flannel/);
  });

  it('lists every reason at once: missing kubeadm images, a unit without its binary, another architecture', async () => {
    const b = await bundleWith('lacking', { images: [], files: [bin('kubeadm')] });
    const r = await ferry(['install', b, '--trust', pub, '--answers', answers, '--root', path.join(work, 'r-lack'), '--dry-run', '--json']);
    expect(r.code).toBe(2);
    const doc = JSON.parse(r.stdout) as { ok: boolean; error: { code: string; message: string; details: { problems: { code: string }[] } } };
    expect(doc.ok).toBe(false);
    expect(doc.error.code).toBe('INSTALL_REFUSED');
    expect(doc.error.details.problems.map((p) => p.code).sort()).toEqual(['BUNDLE_BINARY_MISSING', 'BUNDLE_IMAGE_MISSING']);
    expect(doc.error.message).toMatch(/kubeadm v1\.37\.2 asks for registry\.site-upstream\.test\/k8s\/kube-apiserver:v1\.37\.2, which the bundle does not carry/);
    expect(doc.error.message).toMatch(/the bundle carries no containerd \(for containerd\.service\), runc \(for containerd\.service\), kubelet \(for kubelet\.service\)/);

    const other = arch === 'amd64' ? 'arm64' : 'amd64';
    const foreign = await bundleWith('foreign', { platforms: [`linux/${other}`] });
    const f = await ferry(['install', foreign, '--trust', pub, '--answers', answers, '--root', path.join(work, 'r-arch'), '--dry-run']);
    expect(f.code).toBe(2);
    expect(f.stderr).toContain(`this machine is linux/${arch}, the bundle carries linux/${other}`);
  });

  it('renders the CNI and bootstrap charts with the answers and names every image they ask for that the bundle lacks, at once', async () => {
    const images = [...kubeadmImages('v1.37.2', REPO), COREDNS_IMAGE].map(held);
    // Without kubelet too: the images are one of the refusal's reasons, all named in it.
    const b = await bundleWith('chart-images', { images, files: [bin('kubeadm'), bin('containerd', true), extras.helm] });
    const r = await ferry(['install', b, '--trust', pub, '--answers', answers, '--root', path.join(work, 'r-chart'), '--dry-run', '--json']);
    expect(r.code, r.stderr).toBe(2);
    const doc = JSON.parse(r.stdout) as { error: { code: string; message: string; details: { problems: { code: string }[] } } };
    expect(doc.error.code).toBe('INSTALL_REFUSED');
    expect(doc.error.details.problems.map((p) => p.code)).toEqual(['BUNDLE_BINARY_MISSING', 'BUNDLE_IMAGE_MISSING']);
    expect(doc.error.message).toContain('2 images would be missing on the site');
    expect(doc.error.message).toContain(`chart flannel 0.26.1 (templates/daemonset.yaml) asks for ${FLANNEL_IMAGE}, which the bundle does not carry`);
    // Without a haproxy in the bundle the chart keeps its own default, which the bundle lacks too.
    expect(doc.error.message).toContain('ferry-bootstrap (the DNS and LB DaemonSets) asks for docker.io/library/haproxy:3.0, which the bundle does not carry');
    expect(doc.error.message).not.toContain('coredns');
  });

  it('records every file the real run\'s steps write, shows the rendered ones with --show-files and into --out DIR, and writes nothing else', async () => {
    const b = await bundleWith('good', {});
    const root = path.join(work, 'r-good');
    await fs.mkdir(root);
    // The charts and helm are copied out of the bundle into TMPDIR only, and removed after.
    const tmp = path.join(work, 'tmp-good');
    await fs.mkdir(tmp);
    const r = await ferry(['install', b, '--trust', pub, '--answers', answers, '--root', root, '--dry-run', '--show-files', '--json'], { env: { TMPDIR: tmp } });
    expect(r.code, r.stderr).toBe(0);
    expect(await fs.readdir(tmp)).toEqual([]);
    const doc = JSON.parse(r.stdout) as { ok: boolean; dryRun: boolean; signer: string; steps: { id: string; status: string }[]; files: { path: string; content?: string; from?: string }[]; unpacked: { into: string; files: string[] }; actions: string[] };
    expect(doc).toMatchObject({ ok: true, dryRun: true, signer: fingerprint(createPublicKey(key)) });
    expect(doc.steps.find((s) => s.id === 'kubeadm-init')).toMatchObject({ status: 'todo' });
    const byPath = new Map(doc.files.filter((f) => f.content !== undefined).map((f) => [f.path, f.content!]));
    // Every file the steps write, from the steps themselves: the state markers, the PKI, nodes.json
    // and resolv.conf too; binaries, ferry and charts copied out of the bundle (by their source).
    const paths = doc.files.map((f) => f.path);
    expect(paths.filter((p) => !p.startsWith('/var/lib/ferry/charts/') && !p.startsWith('/var/lib/ferry/state/') && !p.startsWith('/etc/ferry/pki/'))).toEqual(
      [
        '/etc/containerd/certs.d/registry.site-upstream.test/hosts.toml',
        '/etc/containerd/config.toml',
        '/etc/containerd/containerd-v2-registry.toml',
        '/etc/containerd/containerd-v3-registry.toml',
        '/etc/ferry/backup.key',
        '/etc/ferry/kubeadm.yaml',
        '/etc/hosts',
        '/etc/modules-load.d/ferry-kubernetes.conf',
        '/etc/resolv.conf',
        '/etc/sysctl.d/99-ferry-kubernetes.conf',
        '/etc/systemd/system/containerd.service',
        '/etc/systemd/system/ferry-backup.service',
        '/etc/systemd/system/ferry-backup.timer',
        '/etc/systemd/system/ferry-certs.service',
        '/etc/systemd/system/ferry-certs.timer',
        '/etc/systemd/system/ferry-serve.service',
        '/etc/systemd/system/ferry-state-mirror.service',
        '/etc/systemd/system/ferry-state-mirror.timer',
        '/etc/systemd/system/kubelet.service',
        '/etc/systemd/system/kubelet.service.d/10-kubeadm.conf',
        '/usr/local/bin/containerd',
        '/usr/local/bin/ctr',
        '/usr/local/bin/helm',
        '/usr/local/bin/kubeadm',
        '/usr/local/bin/kubelet',
        '/var/lib/ferry/ferry/ferry.mjs',
      ].sort(),
    );
    expect(paths.filter((p) => p.startsWith('/etc/ferry/pki/'))).toEqual(['ca.crt', 'ca.key', 'registry.crt', 'registry.key'].map((f) => `/etc/ferry/pki/${f}`));
    expect(paths.filter((p) => p.startsWith('/var/lib/ferry/charts/'))).toHaveLength(2);
    // No step writes bootstrap-values.json: the old, separate dry run invented it.
    expect(paths).not.toContain('/var/lib/ferry/state/bootstrap-values.json');
    expect(paths).toContain('/var/lib/ferry/state/bootstrap');
    expect(doc.files.find((f) => f.path === '/usr/local/bin/kubeadm')?.from).toBe(`bundle:files/kubeadm/v1.37.2/linux-${arch}/kubeadm`);
    // The keys the dry run made for itself are never shown.
    expect(doc.files.find((f) => f.path === '/etc/ferry/pki/ca.key')).not.toHaveProperty('content');
    expect(doc.files.find((f) => f.path === '/etc/ferry/backup.key')).not.toHaveProperty('content');
    // The unpack is recorded with the tree it would leave: every entry, the signed table and the marker.
    expect(doc.unpacked.into).toBe('/var/lib/ferry/bundle');
    expect(doc.unpacked.files).toEqual(expect.arrayContaining(['bundle.json', 'checksums.txt', 'checksums.txt.sig', '.ferry-unpacked', 'install.sh', 'images/index.json']));
    // Commands and applies in the real run's order, the bootstrap objects as the bundle's helm renders them.
    expect(doc.actions.indexOf('kubeadm init --config /etc/ferry/kubeadm.yaml --upload-certs')).toBeGreaterThan(doc.actions.indexOf('systemctl enable containerd.service kubelet.service ferry-serve.service'));
    expect(doc.actions).toEqual(expect.arrayContaining(['apply DaemonSet/ferry-system/ferry-dns', 'apply DaemonSet/ferry-system/ferry-lb', 'wait for k8s-server-01 Ready']));
    // The site state goes to the cluster, recorded as one action; no nodes.json is written any more.
    expect(doc.actions).toEqual(expect.arrayContaining(['apply ConfigMap/ferry-system/ferry-site (the site state)']));
    expect(byPath.has('/etc/ferry/nodes.json')).toBe(false);
    expect(byPath.get('/etc/ferry/kubeadm.yaml')).toMatch(/controlPlaneEndpoint: k8s-cluster\.site\.test:6443/);
    expect(byPath.get('/etc/ferry/kubeadm.yaml')).toMatch(/kubernetesVersion: v1\.37\.2/);
    expect(byPath.get('/etc/containerd/certs.d/registry.site-upstream.test/hosts.toml')).toMatch(/^server = "https:\/\/registry\.site\.test:5443"$/m);
    expect(byPath.get('/etc/containerd/config.toml')).toContain(`sandbox_image = "${REPO}/pause:`);
    expect(byPath.get('/etc/hosts')).toMatch(/^127\.0\.0\.1\tk8s-cluster\.site\.test registry\.site\.test /m);

    const human = await ferry(['install', b, '--trust', pub, '--answers', answers, '--root', root, '--dry-run', '--show-files']);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^--- \/etc\/ferry\/kubeadm\.yaml$/m);
    expect(human.stdout).toMatch(/signed by sha256:[a-f0-9]{64}/);

    const out = path.join(work, 'rendered');
    const o = await ferry(['install', b, '--trust', pub, '--answers', answers, '--root', root, '--dry-run', '--out', out]);
    expect(o.code, o.stderr).toBe(0);
    expect(o.stdout).toContain(`${byPath.size} files rendered under ${out}`);
    // Each dry run makes a fresh site CA and certificate: every other file is the same run to run.
    for (const [p, content] of byPath) if (!p.startsWith('/etc/ferry/pki/')) expect(await fs.readFile(path.join(out, p), 'utf8'), p).toBe(content);
    expect(await fs.readFile(path.join(out, 'etc/ferry/pki/ca.crt'), 'utf8')).toMatch(/^-----BEGIN CERTIFICATE-----/);
    await expect(fs.access(path.join(out, 'etc/ferry/pki/ca.key'))).rejects.toThrow();
    expect(await fs.readdir(root)).toEqual([]);
  });

  it('copies the charts and helm out of a split bundle across its parts, as out of one file', async () => {
    const whole = await fs.readFile(path.join(work, 'chart-images.ferry.tar'));
    const dir = path.join(work, 'split');
    await fs.mkdir(dir);
    // Parts of 5 MiB: helm's archive (and maybe a chart) straddles a cut.
    const size = 5 << 20;
    const parts = [];
    for (let i = 0, n = 1; i < whole.length; i += size, n++) {
      const name = `chart-images.ferry.tar.part${String(n).padStart(3, '0')}`;
      const data = whole.subarray(i, i + size);
      await fs.writeFile(path.join(dir, name), data);
      parts.push({ name, size: data.length, sha256: sha256Hex(data) });
    }
    expect(parts.length).toBeGreaterThan(2);
    let sums: Buffer | undefined;
    for await (const e of readTar((async function* () { yield whole; })())) {
      const chunks: Buffer[] = [];
      for await (const c of e.data) chunks.push(c);
      if (e.path === 'checksums.txt') {
        sums = Buffer.concat(chunks);
        break;
      }
    }
    const pubKey = createPublicKey(key);
    const m: PartsManifest = { formatVersion: 1, bundle: 'dry-0.0.1', checksums: sha256Hex(sums!), size: whole.length, parts, signer: { fingerprint: fingerprint(pubKey), publicKey: pubKey.export({ type: 'spki', format: 'pem' }) as string } };
    m.signature = signBytes(key, partsSigningBytes(m));
    const file = path.join(dir, 'chart-images.ferry.tar.parts.json');
    await fs.writeFile(file, JSON.stringify(m));
    const r = await ferry(['install', file, '--trust', pub, '--answers', answers, '--root', path.join(work, 'r-split'), '--dry-run', '--json']);
    expect(r.code, r.stderr).toBe(2);
    const doc = JSON.parse(r.stdout) as { error: { message: string } };
    expect(doc.error.message).toContain(`chart flannel 0.26.1 (templates/daemonset.yaml) asks for ${FLANNEL_IMAGE}`);
    expect(doc.error.message).toContain('ferry-bootstrap (the DNS and LB DaemonSets) asks for docker.io/library/haproxy:3.0');
  });

  it('--root says in its help that it is no sandbox, and --yes that the question defaults to No', async () => {
    const help = (await ferry(['install', '--help'])).stdout.replace(/\s+/g, ' ');
    expect(help).toContain('Not a sandbox: modprobe, sysctl, systemctl and kubeadm still run on THIS host');
    expect(help).toContain('the question defaults to No');
  });

  it('--show-files and --out go with --dry-run only', async () => {
    const r = await ferry(['install', path.join(work, 'good.ferry.tar'), '--answers', answers, '--out', path.join(work, 'x'), '--ignore-preflight', 'root']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/error\[USAGE\]: --out goes with --dry-run/);
  });
});

describe('ferry join --dry-run', () => {
  it('exists, says once what is wrong with an unknown option, and checks this is an installed server', async () => {
    const bogus = await ferry(['join', '--bogus']);
    expect(bogus.code).toBe(2);
    expect(bogus.stderr.match(/unknown option '--bogus'/g)).toHaveLength(1);

    const a = await answersWith('join', 'join: [{host: 10.0.0.21, name: k8s-agent-01, role: agent}, {host: 10.0.0.12, name: k8s-server-02, role: server}]\n');
    const root = path.join(work, 'join-root');
    const missing = await ferry(['join', '--answers', a, '--root', root, '--dry-run', '--json']);
    expect(missing.code).toBe(2);
    expect(JSON.parse(missing.stdout)).toMatchObject({ ok: false, error: { code: 'INSTALL_MISSING' } });

    await fs.mkdir(path.join(root, 'etc/kubernetes'), { recursive: true });
    await fs.writeFile(path.join(root, 'etc/kubernetes/admin.conf'), 'apiVersion: v1\n');
    await fs.mkdir(path.join(root, 'var/lib/ferry/bundle'), { recursive: true });
    await fs.writeFile(path.join(root, 'var/lib/ferry/bundle/bundle.json'), '{}');
    const ok = await ferry(['join', '--answers', a, '--root', root, '--dry-run', '--json', '--only', 'k8s-agent-01']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual({ ok: true, dryRun: true, nodes: [{ name: 'k8s-agent-01', host: '10.0.0.21', role: 'agent', ok: true, seconds: 0 }] });
    const human = await ferry(['join', '--answers', a, '--root', root, '--dry-run', '--only', 'k8s-agent-01']);
    expect(human.stdout).toMatch(/nothing was contacted/);
    expect(human.stdout).toMatch(/^k8s-agent-01\s+10\.0\.0\.21\s+agent/m);
    // A joining server needs the bundle: the dry run refuses what the real run would.
    const noBundle = await ferry(['join', '--answers', a, '--root', root, '--dry-run']);
    expect(noBundle.code).toBe(2);
    expect(noBundle.stderr).toMatch(/joining server k8s-server-02 needs the bundle file/);
    expect(noBundle.stderr).toMatch(/--bundle FILE/);
    const typo = await ferry(['join', '--answers', a, '--root', root, '--dry-run', '--only', 'k8s-agent-1']);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toMatch(/--only names k8s-agent-1, which the answers do not list/);
  });

  it('prints exactly one JSON document when it fails', async () => {
    const r = await ferry(['join', '--answers', path.join(work, 'nope.yaml'), '--json']);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: false, error: { code: 'SPEC_READ' } });
  });
});

/**
 * The dry run never passes where the real run refuses: each of the real run's refusals, run both
 * ways on this machine (root, the host files under a fresh --root). The real run stops at its first
 * step, preflight; in case one did not, the host tools its later steps run are stand-ins that fail,
 * so the test never loads modules or starts units here.
 */
describe('ferry install refuses in a dry run what the real run refuses', () => {
  /** The refusal's own words, without the real run's `step "…" failed: ` before them. */
  const firstLine = (s: string) => (/error\[[A-Z_0-9]+\]: (.*)/.exec(s)?.[1] ?? '').replace(/^step ".*?" failed: /, '').trim();
  /** The real run's refusal and the dry run's outcome, with the same bundle, answers and machine. */
  async function bothWays(bundle: string, answersFile: string) {
    const stubs = path.join(work, 'stub-tools');
    await fs.mkdir(stubs, { recursive: true });
    for (const t of ['modprobe', 'sysctl', 'systemctl', 'kubeadm']) await fs.writeFile(path.join(stubs, t), '#!/bin/sh\necho stand-in: not run by this test >&2\nexit 1\n', { mode: 0o755 });
    const env = { PATH: `${stubs}:${process.env.PATH}` };
    const real = await ferry(['install', bundle, '--trust', pub, '--answers', answersFile, '--root', await tmpdir('ferry-real-')], { env });
    const dry = await ferry(['install', bundle, '--trust', pub, '--answers', answersFile, '--root', await tmpdir('ferry-dry-root-'), '--dry-run'], { env });
    return { real, dry };
  }
  const realRefusals = (process.getuid?.() === 0 ? it : it.skip);

  realRefusals.each([
    { name: 'cgroup v1 with cgroupV1: refuse', code: 'CGROUP_V1_REFUSED', over: {}, extra: 'cgroupV1: refuse\n', want: /runs cgroup v1 .* cgroupV1: refuse/ },
    { name: 'node.ip not on this machine', code: 'PREFLIGHT_FAILED', over: {}, node: '10.254.3.7', want: /address: 10\.254\.3\.7 \(node\.ip\) is not an address of this machine/ },
    { name: 'a bundle made in the future (the clock)', code: 'PREFLIGHT_FAILED', over: { created: '2999-01-01T00:00:00.000Z' }, want: /clock: the clock says .* before the bundle was made/ },
    { name: 'a bundle for another architecture', code: 'PREFLIGHT_FAILED', over: { platforms: ['linux/s390x'] }, want: /arch: this machine is linux\/\w+, the bundle carries linux\/s390x/ },
  ])('$name: both refuse, for the same reason', async ({ code, over, extra, node, want }) => {
    const bundle = await bundleWith(`refuse-${code}-${Object.keys(over).join('-') || node || 'x'}`, over);
    const a = await answersWith(`refuse-${node ?? 'local'}`, `cni: flannel\n${extra ?? ''}`);
    if (node) await fs.writeFile(a, (await fs.readFile(a, 'utf8')).replace('127.0.0.1', node));
    const { real, dry } = await bothWays(bundle, a);
    expect(real.stderr).toContain(`error[${code}]`);
    expect(real.stderr).toMatch(want);
    expect(real.code).not.toBe(0);
    // The dry run names the very refusal, and exits as a refusal.
    expect(dry.code).not.toBe(0);
    expect(dry.stderr).toMatch(want);
    expect(firstLine(real.stderr)).not.toBe('');
    expect(dry.stderr).toContain(firstLine(real.stderr));
  }, 180_000);

  realRefusals('a port the control plane needs in use: both refuse', async () => {
    const net = await import('node:net');
    const server = net.createServer();
    await new Promise<void>((resolve) => server.once('error', () => resolve()).listen(6443, '127.0.0.1', () => resolve()));
    try {
      const { real, dry } = await bothWays(await bundleWith('refuse-port', {}), await answersWith('refuse-port', 'cni: flannel\n'));
      expect(real.stderr).toMatch(/error\[PREFLIGHT_FAILED\][\s\S]*ports: port 6443 on 127\.0\.0\.1 is in use/);
      expect(dry.code).not.toBe(0);
      expect(dry.stderr).toMatch(/ports: port 6443 on 127\.0\.0\.1 is in use/);
    } finally {
      server.close();
    }
  }, 180_000);

  it('the loud cgroup v1 warning shows in a dry run as in the real run', async () => {
    const r = await ferry(['install', await bundleWith('cg-warn', {}), '--trust', pub, '--answers', answers, '--root', await tmpdir('ferry-cg-'), '--dry-run']);
    expect(r.stderr).toMatch(/CGROUP V1 ON K8S-SERVER-01/);
  }, 120_000);
});
