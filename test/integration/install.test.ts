import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { buildBusyboxImage, buildFixtureSet } from '../../fixtures/images.js';
import { ferry, FERRY, ROOT } from '../helpers/cli.js';
import { execFileP, pushFixtures, startRegistry, tmpdir, type RegistryPeer } from '../helpers/peers.js';
import { kubeadmImages } from '../../src/spec/kubernetes.js';
import { standinCalls, writeStandins } from '../helpers/standins.js';
import { helmArchive } from '../helpers/helm.js';
import { writeBundleSpec, type SpecBinary } from '../../fixtures/spec.js';

let work: string;
let reg: RegistryPeer;
let bundle: string;
let pub: string;
let answers: string;
let specPath: string;
let cacheEnv: NodeJS.ProcessEnv;
/** The bootstrap chart's defaults name upstream images, so the spec bundles them through mirrors of the test registry. */
let mirrors: string[];
/** kubeadm v1.37.2's images, as names below the test registry's k8s/ prefix (the spec's imageRepository). */
const KUBEADM_NAMES = kubeadmImages('v1.37.2', 'r.invalid').map((r) => r.slice('r.invalid/'.length));

async function write(p: string, data: string | Buffer, mode = 0o644) {
  await fs.mkdir(path.dirname(p), { recursive: true });
  await fs.writeFile(p, data, { mode });
}

/**
 * Runs bin/ferry with no route beyond this machine: in a fresh network namespace with only
 * loopback (unshare -n), or in a lab host's namespace (no route beyond the test bridge). Stand-ins
 * come first on PATH, and the fake API server (test/helpers/fake-apiserver.mjs) runs in the same
 * namespace, recording its requests in `record` (default `<standins>/api.jsonl`).
 */
function runFerry(o: { args: string[]; standins: string; apiMode?: string; netns?: string; apiPort?: number; record?: string }): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const portFile = path.join(o.standins, `api-port-${Math.random().toString(36).slice(2)}`);
    const api = `"${process.execPath}" "${ROOT}/test/helpers/fake-apiserver.mjs" "${portFile}" "${o.record ?? `${o.standins}/api.jsonl`}" ${o.apiMode ?? 'ready'} ${o.apiPort ?? 0} & api=$!; while [ ! -s "${portFile}" ]; do sleep 0.05; done`;
    const cmd = `ip link set lo up && ${api}; "${process.execPath}" "${FERRY}" ${o.args.map((a) => `'${a}'`).join(' ')}; rc=$?; kill $api; exit $rc`;
    const argv = o.netns ? ['ip', ['netns', 'exec', o.netns, 'sh', '-c', cmd]] as const : ['unshare', ['-n', 'sh', '-c', cmd]] as const;
    execFile(argv[0], [...argv[1]], { cwd: ROOT, env: { ...process.env, PATH: `${o.standins}:${process.env.PATH}`, FAKE_API_PORT_FILE: portFile, FAKE_API_STORE: path.join(o.standins, 'api-store.json') }, timeout: 170_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

// Each run has a namespace of its own, so the API keeps one port across runs, as a real one does:
// a re-run finds the cluster where admin.conf says it is.
const ferryOffline = (args: string[], standins: string, apiMode = '') => runFerry({ args, standins, apiMode: apiMode || 'ready', apiPort: 16443 });

async function apiRequests(standins: string): Promise<{ method: string; path: string; query: Record<string, string>; contentType?: string; body: string }[]> {
  return (await fs.readFile(path.join(standins, 'api.jsonl'), 'utf8').catch(() => '')).split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

beforeAll(async () => {
  work = await tmpdir('ferry-install-');
  reg = await startRegistry();
  const fx = await buildFixtureSet(path.join(work, 'fx'), 0.05);
  await buildBusyboxImage(fx.store, 'pause:3.10.2');
  fx.images['pause:3.10.2'] = (await fx.store.resolve('pause:3.10.2'))!;
  // Every other image kubeadm v1.37.2 and the DNS and LB DaemonSets ask for, as small stand-ins.
  for (const n of [...KUBEADM_NAMES, 'haproxy:3.0']) fx.images[n] ??= fx.images['multi:v1']!;
  await pushFixtures(fx, reg.host, 'k8s');
  await pushFixtures({ ...fx, images: { 'coredns/coredns:v1.14.6': fx.images['multi:v1']! } }, reg.host, 'registry.k8s.io');
  await pushFixtures({ ...fx, images: { 'library/haproxy:3.0': fx.images['multi:v1']! } }, reg.host, 'docker.io');
  mirrors = ['registry.k8s.io', 'docker.io'].flatMap((r) => ['--registry-mirror', `${r}=http://${reg.host}/${r}`]);
  // The real helm, as upstream ships it: it renders the DNS and LB chart on the site.
  const helm = await helmArchive();
  // Node binaries and archives the way upstream ships them.
  const v = path.join(work, 'vendor');
  await write(`${v}/kubeadm`, '#!/bin/sh\necho real-kubeadm\n', 0o755);
  await write(`${v}/kubelet`, '#!/bin/sh\necho real-kubelet\n', 0o755);
  await write(`${v}/ctd/bin/containerd`, '#!/bin/sh\necho containerd\n', 0o755);
  await write(`${v}/ctd/bin/ctr`, '#!/bin/sh\necho ctr\n', 0o755);
  await write(`${v}/cni/bridge`, '#!/bin/sh\n', 0o755);
  await write(`${v}/cni/loopback`, '#!/bin/sh\n', 0o755);
  await execFileP('tar', ['-czf', `${v}/containerd-1.7.23-linux-amd64.tar.gz`, '-C', `${v}/ctd`, 'bin']);
  await execFileP('tar', ['-czf', `${v}/cni-plugins-linux-amd64-v1.5.1.tgz`, '-C', `${v}/cni`, 'bridge', 'loopback']);
  const sha = async (f: string) => createHash('sha256').update(await fs.readFile(f)).digest('hex');
  // A CNI chart in the bundle, the way flannel's would be.
  await write(path.join(work, 'charts/flannel/Chart.yaml'), 'apiVersion: v2\nname: flannel\nversion: 0.26.1\n');
  await write(path.join(work, 'charts/flannel/values.yaml'), 'podCidr: 10.244.0.0/16\n');
  const vendor = (name: string, version: string, url: string, sha: string, extract = false): SpecBinary => ({ name, version, url, sha256: { 'linux/amd64': sha }, ...(extract ? { extract } : {}) });
  const spec = await writeBundleSpec(work, {
    name: 'k8s',
    platforms: ['linux/amd64'],
    kubernetes: { version: 'v1.37.2', imageRepository: `${reg.host}/k8s` },
    images: [...[...KUBEADM_NAMES, 'haproxy:3.0', 'multi:v1'].map((n) => `${reg.host}/k8s/${n}`), 'registry.k8s.io/coredns/coredns:v1.14.6', 'docker.io/library/haproxy:3.0'],
    binaries: [
      vendor('kubeadm', 'v1.37.2', 'vendor/kubeadm', await sha(`${v}/kubeadm`)),
      vendor('kubelet', 'v1.37.2', 'vendor/kubelet', await sha(`${v}/kubelet`)),
      vendor('containerd', 'v1.7.23', 'vendor/containerd-{semver}-{os}-{arch}.tar.gz', await sha(`${v}/containerd-1.7.23-linux-amd64.tar.gz`), true),
      vendor('cni-plugins', 'v1.5.1', 'vendor/cni-plugins-{os}-{arch}-{version}.tgz', await sha(`${v}/cni-plugins-linux-amd64-v1.5.1.tgz`), true),
      { name: 'helm', version: helm.version, url: helm.path, sha256: { 'linux/amd64': helm.sha256 }, extract: true },
    ],
    charts: [
      { name: 'flannel', path: 'charts/flannel' },
      { name: 'ferry-bootstrap', path: path.join(ROOT, 'charts', 'ferry-bootstrap') },
    ],
    runtime: { 'linux/amd64': process.execPath },
  });
  const env = { FERRY_CACHE_DIR: path.join(work, 'cache') };
  specPath = spec;
  cacheEnv = env;
  expect((await ferry(['key', 'generate', '--out', path.join(work, 'keys')])).code).toBe(0);
  expect((await ferry(['lock', spec, ...mirrors], { env })).code).toBe(0);
  bundle = path.join(work, 'k8s.ferry.tar');
  const b = await ferry(['bundle', 'build', spec, '--key', path.join(work, 'keys', 'ferry.key'), '--out', bundle, ...mirrors], { env });
  expect(b.stderr).not.toMatch(/error/);
  pub = path.join(work, 'keys', 'ferry.pub');
  answers = path.join(work, 'answers.yaml');
  await write(
    answers,
    `apiVersion: ferry.dev/v1alpha1
kind: InstallAnswers
domain: site.test
node: {name: k8s-server-01, ip: 127.0.0.1}
podCidr: 10.244.0.0/16
serviceCidr: 10.96.0.0/12
cni: flannel
records: [{name: gitlab.site.test, ip: 10.0.0.50}]
`,
  );
}, 120_000);

afterAll(async () => {
  await reg?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

describe('ferry install on the first server (kubeadm, systemctl, modprobe, sysctl are stand-ins)', () => {
  it('prints its plan with --dry-run and changes nothing', async () => {
    const root = path.join(work, 'dry');
    await fs.mkdir(root);
    const r = await ferry(['install', bundle, '--trust', pub, '--answers', answers, '--root', root, '--dry-run', '--json']);
    expect(r.code).toBe(0);
    const plan = JSON.parse(r.stdout) as { steps: { id: string; done: boolean }[] };
    expect(plan.steps.map((s) => s.id)).toEqual(['preflight', 'unpack', 'binaries', 'kernel', 'service-route', 'pki', 'hosts', 'resolver', 'containerd-config', 'units', 'services', 'kubeadm-config', 'images-check', 'kubeadm-init', 'site-state', 'cni', 'bootstrap', 'ready', 'backup-timer']);
    // service-route reads the live routing table, which the machine running the test already has.
    expect(plan.steps.filter((s) => s.id !== 'service-route').every((s) => !s.done)).toBe(true);
    expect(await fs.readdir(root)).toEqual([]);
  });

  it('brings up the first server with no network, and a re-run does nothing twice', async () => {
    const root = path.join(work, 'node1');
    // systemd is PID 1 on this node: kubelet and runc take the systemd cgroup driver.
    await fs.mkdir(path.join(root, 'run/systemd/system'), { recursive: true });
    const standins = await writeStandins(path.join(work, 'standins1'));
    const r = await ferryOffline(['install', bundle, '--trust', pub, '--answers', answers, '--root', root], standins);
    expect(r.stderr).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
    // Honest steps (issue 12 item 4): what the bundle carries, each step's time, and what to do next.
    expect(r.stderr).toMatch(/^\[3\/19\] install the bundle's binaries \(cni-plugins v1\.5\.1, containerd v1\.7\.23, helm v\S+, kubeadm v1\.37\.2, kubelet v1\.37\.2\)$/m);
    expect(r.stderr).toMatch(/^\s+done in \d+\.\ds$/m);
    expect(r.stdout).toMatch(/^  kubeadm-init\s+applied\s+\d+\.\ds$/m);
    expect(r.stdout).toContain(`admin kubeconfig: ${root}/etc/kubernetes/admin.conf`);
    expect(r.stdout).toContain(`kubectl --kubeconfig ${root}/etc/kubernetes/admin.conf get nodes -o wide`);
    expect(r.stdout).toMatch(/then run: +ferry join --answers \S+answers\.yaml --bundle \S+k8s\.ferry\.tar$/m);
    expect(r.stdout).toMatch(/^ +- \{host: 10\.0\.0\.21, name: k8s-agent-01, role: agent\}$/m);
    const installLog = (await fs.readdir(path.join(root, 'var/log/ferry'))).find((f) => f.startsWith('install-'))!;
    const logText = await fs.readFile(path.join(root, 'var/log/ferry', installLog), 'utf8');
    expect(logText).toMatch(/\(Kubernetes v1\.37\.2\)/);
    expect(logText).not.toMatch(/undefined/);
    // The node directory has no /sys/fs/cgroup/cgroup.controllers: cgroup v1, allowed by default, loudly.
    expect(r.stderr).toMatch(/warning: CGROUP V1 ON K8S-SERVER-01: .*systemd\.unified_cgroup_hierarchy=1/);
    const calls = await standinCalls(root);
    expect(calls).toContain('kubeadm init --config /etc/ferry/kubeadm.yaml --upload-certs');
    // Before init, the installed kubeadm and helm said which images they will ask for.
    expect(calls.indexOf('kubeadm config images list --config /etc/ferry/kubeadm.yaml')).toBeLessThan(calls.indexOf('kubeadm init --config /etc/ferry/kubeadm.yaml --upload-certs'));
    expect(calls).toContainEqual(expect.stringMatching(/^helm template flannel \S+\.tgz --namespace kube-flannel --set podCidr=10\.244\.0\.0\/16$/));
    expect(calls).toContain('systemctl enable containerd.service kubelet.service ferry-serve.service ferry-state-mirror.timer ferry-certs.timer');
    expect(calls).toContain('modprobe br_netfilter');
    // The CNI chart from the bundle goes in through the bundled helm (a stand-in here).
    const helmCall = calls.find((c) => c.startsWith('helm upgrade --install flannel '))!;
    expect(helmCall).toMatch(new RegExp(`^helm upgrade --install flannel (\\S+\\.tgz) --namespace kube-flannel --create-namespace --kubeconfig ${root}/etc/kubernetes/admin\\.conf --set podCidr=10\\.244\\.0\\.0/16 --wait --timeout 10m$`));
    const { stdout: chartFiles } = await execFileP('tar', ['-tzf', helmCall.split(' ')[4]!]);
    expect(chartFiles).toContain('flannel/Chart.yaml');
    // Binaries from the bundle, archives unpacked.
    expect(await fs.readFile(path.join(root, 'usr/local/bin/kubeadm'), 'utf8')).toContain('real-kubeadm');
    expect(await fs.readFile(path.join(root, 'usr/local/bin/containerd'), 'utf8')).toContain('containerd');
    expect((await fs.readdir(path.join(root, 'opt/cni/bin'))).sort()).toEqual(['bridge', 'loopback']);
    expect((await fs.stat(path.join(root, 'usr/local/bin/kubelet'))).mode & 0o777).toBe(0o755);
    // The FQDN resolves to this server from /etc/hosts.
    expect(await fs.readFile(path.join(root, 'etc/hosts'), 'utf8')).toMatch(/^127\.0\.0\.1\tk8s-cluster\.site\.test registry\.site\.test /m);
    // kubeadm v1beta4, endpoint by FQDN, SANs, CIDRs, systemd cgroups.
    const docs = parseAllDocuments(await fs.readFile(path.join(root, 'etc/ferry/kubeadm.yaml'), 'utf8')).map((d) => d.toJS() as Record<string, any>);
    const cluster = docs.find((d) => d.kind === 'ClusterConfiguration')!;
    expect(cluster.apiVersion).toBe('kubeadm.k8s.io/v1beta4');
    expect(cluster.controlPlaneEndpoint).toBe('k8s-cluster.site.test:6443');
    expect(cluster.kubernetesVersion).toBe('v1.37.2');
    expect(cluster.apiServer.certSANs).toContain('k8s-cluster.site.test');
    expect(cluster.networking).toMatchObject({ podSubnet: '10.244.0.0/16', serviceSubnet: '10.96.0.0/12' });
    expect(docs.find((d) => d.kind === 'KubeletConfiguration')!.cgroupDriver).toBe('systemd');
    expect(docs.find((d) => d.kind === 'InitConfiguration')!.nodeRegistration.kubeletExtraArgs).toEqual([{ name: 'node-ip', value: '127.0.0.1' }]);
    // containerd mirrors point only at the site service, with the site CA.
    const toml = await fs.readFile(path.join(root, 'etc/containerd/certs.d', reg.host, 'hosts.toml'), 'utf8');
    expect(toml).toMatch(/^server = "https:\/\/registry\.site\.test:5443/m);
    expect(toml).toContain('ca = "/etc/ferry/pki/ca.crt"');
    expect(await fs.readFile(path.join(root, 'etc/containerd/config.toml'), 'utf8')).toContain(`sandbox_image = "${reg.host}/k8s/pause:3.10.2"`);
    expect(await fs.readFile(path.join(root, 'etc/containerd/config.toml'), 'utf8')).toMatch(/^  SystemdCgroup = true$/m);
    // The bundle carries containerd 1.7: config version 2, which it reads.
    expect(await fs.readFile(path.join(root, 'etc/containerd/config.toml'), 'utf8')).toMatch(/^version = 2$/m);
    expect((await fs.stat(path.join(root, 'etc/ferry/pki/ca.key'))).mode & 0o777).toBe(0o600);
    expect(await fs.readFile(path.join(root, 'etc/systemd/system/ferry-serve.service'), 'utf8')).toMatch(/ExecStart=\/var\/lib\/ferry\/runtime\/node --disable-warning=DEP0040 --disable-warning=DEP0169 \/var\/lib\/ferry\/ferry\/ferry\.mjs serve/);
    expect((await fs.readdir(path.join(root, 'var/log/ferry'))).some((f) => f.startsWith('install-'))).toBe(true);
    // The DNS and LB DaemonSets went in by server-side apply, field manager ferry, then rolled out.
    const api = await apiRequests(standins);
    const applies = api.filter((q) => q.method === 'PATCH');
    expect(applies.map((q) => q.path)).toEqual(expect.arrayContaining(['/api/v1/namespaces/ferry-system', '/apis/apps/v1/namespaces/ferry-system/daemonsets/ferry-dns', '/apis/apps/v1/namespaces/ferry-system/daemonsets/ferry-lb']));
    expect(applies.every((q) => q.contentType === 'application/apply-patch+yaml' && q.query.fieldManager === 'ferry' && q.query.force === 'true')).toBe(true);
    // flannel takes the answers' node IP, not the default route's interface (a site may have none).
    const nodePatch = applies.find((q) => q.path === '/api/v1/nodes/k8s-server-01');
    expect(JSON.parse(nodePatch!.body).metadata.annotations).toEqual({ 'flannel.alpha.coreos.com/node-public-ip': '127.0.0.1' });
    const corefile = applies.map((q) => JSON.parse(q.body) as { kind: string; data?: Record<string, string> }).find((o) => o.kind === 'ConfigMap' && o.data?.Corefile);
    expect(corefile?.data?.Corefile).toContain('{$HOST_IP}');
    // What went in is exactly `helm template` of the bundle's chart by the bundle's helm, with the values the step recorded.
    const charts = path.join(root, 'var/lib/ferry/charts');
    const tgzs = await Promise.all((await fs.readdir(charts)).map(async (f) => ({ f: path.join(charts, f), files: (await execFileP('tar', ['-tzf', path.join(charts, f)])).stdout })));
    const bootChart = tgzs.find((t) => t.files.includes('ferry-bootstrap/templates/_helpers.tpl'))!.f;
    // The bootstrap step's marker is the chart's digest, then the values it applied.
    const marker = await fs.readFile(path.join(root, 'var/lib/ferry/state/bootstrap'), 'utf8');
    expect(marker).toMatch(/^sha256:[0-9a-f]{64} \{/);
    const valuesFile = path.join(root, 'values-recorded.json');
    await fs.writeFile(valuesFile, marker.slice(marker.indexOf(' ') + 1));
    const { stdout: rendered } = await execFileP(path.join(root, 'usr/local/bin/helm'), ['template', 'ferry-bootstrap', bootChart, '--namespace', 'ferry-system', '-f', valuesFile]);
    const appliedBootstrap = applies.map((q) => JSON.parse(q.body) as { kind: string; metadata: { name: string; namespace?: string } }).filter((o) => o.metadata.namespace === 'ferry-system' || (o.kind === 'Namespace' && o.metadata.name === 'ferry-system'));
    expect(appliedBootstrap).toEqual(parseAllDocuments(rendered).map((d) => d.toJS() as unknown).filter(Boolean));
    expect(appliedBootstrap).toHaveLength(5);
    expect(api.some((q) => q.method === 'GET' && q.path.endsWith('/daemonsets/ferry-dns'))).toBe(true);

    const again = await ferryOffline(['install', bundle, '--trust', pub, '--answers', answers, '--root', root, '--json'], standins);
    expect(again.code, again.stderr).toBe(0);
    expect((JSON.parse(again.stdout) as { skipped: string[] }).skipped).toContain('kubeadm-init');
    // One shape with the dry run's: ok, steps with their status (and here their time), and what comes next.
    expect(JSON.parse(again.stdout)).toMatchObject({ ok: true, dryRun: false, steps: expect.arrayContaining([expect.objectContaining({ id: 'kubeadm-init', status: 'skipped', done: true, seconds: expect.any(Number) })]), next: { adminKubeconfig: `${root}/etc/kubernetes/admin.conf` } });
    // Each run gets a fresh network namespace, so the Service route is gone as after a reboot
    // (the stand-in systemctl never runs its unit): the only step that applies again.
    expect((JSON.parse(again.stdout) as { applied: string[] }).applied).toEqual(['service-route']);
    expect((await standinCalls(root)).filter((c) => c.startsWith('kubeadm init'))).toHaveLength(1);
  });

  it('a dry run records exactly the files a real install writes, both ways', async () => {
    // Two fresh roots, the same node (systemd as PID 1), each run in a namespace of its own.
    const real = path.join(work, 'plan-real');
    const dry = path.join(work, 'plan-dry');
    for (const r of [real, dry]) await fs.mkdir(path.join(r, 'run/systemd/system'), { recursive: true });
    const standins = await writeStandins(path.join(work, 'standins-plan'));
    const r = await ferryOffline(['install', bundle, '--trust', pub, '--answers', answers, '--root', real], standins);
    expect(r.code, r.stderr).toBe(0);
    const d = await ferryOffline(['install', bundle, '--trust', pub, '--answers', answers, '--root', dry, '--dry-run', '--json'], standins);
    expect(d.code, d.stderr).toBe(0);
    const doc = JSON.parse(d.stdout) as { files: { path: string }[]; unpacked: { into: string; files: string[] } };
    // Two more, each recorded as one action rather than as files: the site store's add (the real run
    // lays out var/lib/ferry/store and links var/lib/ferry/bundle to its current bundle; the dry run
    // records the bundle's entries under that view), and the site state's mirror (written from the
    // cluster's answer to a write the dry run records).
    const store = (p: string) => p === 'var/lib/ferry/bundle' || p.startsWith('var/lib/ferry/bundle/') || p.startsWith('var/lib/ferry/store/');
    const excluded = (p: string) => p.startsWith('var/log/ferry/') || store(p) || ['standins.log', 'etc/kubernetes/admin.conf', 'etc/kubernetes/pki/ca.crt', 'etc/kubernetes/pki/ca.key', 'var/lib/ferry/site/state.json'].includes(p);
    const recorded = [...doc.files.map((f) => f.path), ...doc.unpacked.files.map((f) => `${doc.unpacked.into}/${f}`)].map((p) => p.slice(1)).filter((p) => !store(p)).sort();
    const written: string[] = [];
    const walk = async (rel: string): Promise<void> => {
      for (const e of await fs.readdir(path.join(real, rel), { withFileTypes: true })) {
        const p = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) await walk(p);
        else written.push(p);
      }
    };
    await walk('');
    // The only exclusions: the run's own log (runPlan writes it, no step does), and what the
    // stand-in commands leave, which the dry run records as the commands themselves (kubeadm init's
    // admin.conf and cluster CA, and the stand-ins' call log).
    const real_ = written.filter((p) => !excluded(p)).sort();
    expect(real_.length).toBeGreaterThan(40);
    expect(real_.filter((p) => !recorded.includes(p)), 'written by the real run, not recorded by the dry run').toEqual([]);
    expect(recorded.filter((p) => !real_.includes(p)), 'recorded by the dry run, not written by the real run').toEqual([]);
    expect(recorded).toContain(`etc/containerd/certs.d/${reg.host}/hosts.toml`);
    // The dry run wrote nothing under its root.
    expect(await fs.readdir(dry)).toEqual(['run']);
  }, 240_000);

  it('stops at preflight on a cgroup v1 node when the answers refuse cgroup v1, and goes on with cgroup v2', async () => {
    const refusing = path.join(work, 'answers-refuse-v1.yaml');
    await write(refusing, `${await fs.readFile(answers, 'utf8')}cgroupV1: refuse\n`);
    const v1 = path.join(work, 'node-v1');
    const r = await ferryOffline(['install', bundle, '--trust', pub, '--answers', refusing, '--root', v1], await writeStandins(path.join(work, 'standins-v1')));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/error\[CGROUP_V1_REFUSED\]: step "check this machine .*" failed: k8s-server-01 runs cgroup v1 .* cgroupV1: refuse/);
    expect(r.stderr).toMatch(/hint: Move the node to cgroup v2: add systemd\.unified_cgroup_hierarchy=1 to the kernel command line/);
    expect(await standinCalls(v1)).toEqual([]);
    const v2 = path.join(work, 'node-v2');
    await write(path.join(v2, 'sys/fs/cgroup/cgroup.controllers'), 'cpu memory pids\n');
    const ok = await ferryOffline(['install', bundle, '--trust', pub, '--answers', refusing, '--root', v2], await writeStandins(path.join(work, 'standins-v2')));
    expect(ok.stderr).not.toMatch(/CGROUP V1/);
    expect(ok.code).toBe(0);
    // No /run/systemd/system: the cgroupfs driver, for kubelet and runc alike.
    const kubelet = parseAllDocuments(await fs.readFile(path.join(v2, 'etc/ferry/kubeadm.yaml'), 'utf8')).map((d) => d.toJS() as Record<string, any>).find((d) => d.kind === 'KubeletConfiguration')!;
    expect(kubelet.cgroupDriver).toBe('cgroupfs');
    expect(kubelet).not.toHaveProperty('failCgroupV1');
    expect(await fs.readFile(path.join(v2, 'etc/containerd/config.toml'), 'utf8')).toMatch(/^  SystemdCgroup = false$/m);
  });

  it('continues where it stopped after a failed step', async () => {
    const root = path.join(work, 'node2');
    const standins = await writeStandins(path.join(work, 'standins2'), { failOnce: 'kubeadm' });
    const first = await ferryOffline(['install', bundle, '--trust', pub, '--answers', answers, '--root', root], standins);
    expect(first.code).toBe(6);
    expect(first.stderr).toMatch(/error\[INSTALL_STEP_FAILED\]: step "kubeadm init .*" failed: kubeadm init .* failed \(exit 1\): kubeadm: stand-in failing once/);
    expect(first.stderr).toMatch(/hint: .*re-run/i);
    const second = await ferryOffline(['install', bundle, '--trust', pub, '--answers', answers, '--root', root], standins);
    expect(second.code).toBe(0);
    for (const s of ['verify and unpack', "install the bundle's binaries \\(cni-plugins", 'site CA', 'configure containerd']) expect(second.stderr).toMatch(new RegExp(`${s}.*: already done`));
    expect((await standinCalls(root)).filter((c) => c.startsWith('kubeadm init'))).toHaveLength(2);
  });

  it('refuses before kubeadm init when the installed kubeadm asks for an image the bundle lacks', async () => {
    const root = path.join(work, 'node-missing');
    // A kubeadm whose etcd is newer than the one ferry's table (and so the bundle) has.
    const standins = await writeStandins(path.join(work, 'standins-missing'), { etcdTag: '3.7.1-0' });
    const r = await ferryOffline(['install', bundle, '--trust', pub, '--answers', answers, '--root', root], standins);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      `error[BUNDLE_IMAGE_MISSING]: step "check that the bundle holds every image kubeadm and the charts will ask for" failed: 1 image would be missing on the site:\n` +
        `  kubeadm config images list asks for ${reg.host}/k8s/etcd:3.7.1-0, which the bundle does not carry`,
    );
    expect(r.stderr).toMatch(/hint: kubeadm init has not run\. Add each image to spec\.images/);
    const calls = await standinCalls(root);
    expect(calls).toContain('kubeadm config images list --config /etc/ferry/kubeadm.yaml');
    expect(calls.filter((c) => c.startsWith('kubeadm init'))).toEqual([]);
  });

  it('ends a rollout that never completes with a clear timeout', async () => {
    const root = path.join(work, 'node3');
    const standins = await writeStandins(path.join(work, 'standins3'));
    const r = await ferryOffline(['install', bundle, '--trust', pub, '--answers', answers, '--root', root, '--rollout-timeout', '3'], standins, 'never-ready');
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/error\[ROLLOUT_TIMEOUT\]: step "apply the DNS .*" failed: timed out waiting for ferry-system\/ferry-dns \(0 of 1 ready\)/);
    expect(r.stderr).toMatch(/hint: Look at the pods: kubectl -n ferry-system get pods/);
    expect(r.stderr).toMatch(/rollout: ferry-dns 0\/1/);
  });

  it('stops without a terminal and without --answers, naming --answers', async () => {
    const r = await ferry(['install', bundle, '--trust', pub]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/error\[PROMPT_NO_TTY\]: ferry install needs answers/);
    expect(r.stderr).toMatch(/hint: Pass --answers FILE/);
  });

  it('refuses an answers file with bad fields, naming each with its position', async () => {
    const bad = path.join(work, 'bad-answers.yaml');
    await write(bad, 'apiVersion: ferry.dev/v1alpha1\nkind: InstallAnswers\ndomain: site.test\nnode: {name: Bad_Name, ip: 300.1.1.1}\npodCidr: 10.96.0.0/16\nserviceCidr: 10.96.0.0/12\n');
    const r = await ferry(['install', bundle, '--trust', pub, '--answers', bad, '--dry-run']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/bad-answers\.yaml:4:\d+: node\.name "Bad_Name" is not valid \(expected: A node name/);
    expect(r.stderr).toMatch(/node\.ip "300\.1\.1\.1" is not an IP address \(an IPv4 address such as/);
    expect(r.stderr).toMatch(/bad-answers\.yaml:6:\d+: serviceCidr overlaps podCidr 10\.96\.0\.0\/16/);
  });
});

describe('ferry join over SSH to hosts in network namespaces (kubeadm and systemctl are stand-ins)', () => {
  it('joins an agent and a server by FQDN, with fresh tokens, and never logs a secret', async () => {
    const { startLab, knownHostsLine } = await import('../helpers/netns.js');
    const { startNamed } = await import('../helpers/dns.js');
    const labDir = path.join(work, 'lab');
    await fs.mkdir(labDir);
    // Three hosts, each a network namespace on a bridge with its own sshd: nothing routes further.
    const lab = await startLab(labDir, ['k8s-server-01', 'k8s-agent-01', 'k8s-server-02']);
    const stops: (() => Promise<void>)[] = [lab.down];
    try {
      const [first1, agent, server2] = lab.hosts as [typeof lab.hosts[0], typeof lab.hosts[0], typeof lab.hosts[0]];
      const ip = first1.ip;
      const apiPort = 16443;
      // The first server: a real ferry install in its namespace, under --root.
      const root = path.join(work, 'first');
      const standins = await writeStandins(path.join(work, 'standins-join'));
      const ans = path.join(work, 'join-answers.yaml');
      await write(
        ans,
        `apiVersion: ferry.dev/v1alpha1
kind: InstallAnswers
domain: site.test
node: {name: k8s-server-01, ip: ${ip}}
podCidr: 10.244.0.0/16
serviceCidr: 10.96.0.0/12
ssh: {user: root, identityFile: ${lab.identity}, knownHosts: ${lab.knownHosts}}
join:
  - {host: ${agent.ip}, name: k8s-agent-01, role: agent}
  - {host: ${server2.ip}, name: k8s-server-02, role: server}
ignoreKubeadmPreflight: [NumCPU]
patches:
  kubelet: {failSwapOn: false}
  joinConfiguration: {nodeRegistration: {imagePullSerial: false}}
`,
      );
      const inst = await runFerry({ args: ['install', bundle, '--trust', pub, '--answers', ans, '--root', root], standins, netns: first1.ns, apiPort });
      expect(inst.stderr).not.toMatch(/error\[/);
      expect(inst.code, inst.stderr).toBe(0);
      // What systemd does on a real server: start the site service and serve the site DNS.
      const serve = (await import('node:child_process')).spawn('ip', ['netns', 'exec', first1.ns, process.execPath, FERRY, 'serve', '--bundle', path.join(root, 'var/lib/ferry/bundle'), '--listen', `${ip}:5443`, '--tls-cert', path.join(root, 'etc/ferry/pki/registry.crt'), '--tls-key', path.join(root, 'etc/ferry/pki/registry.key')], { stdio: 'ignore' });
      stops.push(async () => void serve.kill('SIGTERM'));
      const dns = await startNamed(path.join(work, 'named'), { ip, port: 53 }, 'site.test', [
        { name: 'registry.site.test', ip },
        { name: 'k8s-cluster.site.test', ip },
      ], first1.ns);
      stops.push(dns.stop);
      // The agent's key is known; the new server's is not yet, and is accepted explicitly.
      await fs.writeFile(lab.knownHosts, `${knownHostsLine(agent)}\n`);
      const remoteRoot = path.join(work, 'nodes', '{name}');
      // k8s-server-02 boots cgroup v2 under systemd; k8s-agent-01 is a cgroup v1 host without systemd.
      await write(path.join(work, 'nodes', 'k8s-server-02', 'sys/fs/cgroup/cgroup.controllers'), 'cpu memory pids\n');
      await fs.mkdir(path.join(work, 'nodes', 'k8s-server-02', 'run/systemd/system'), { recursive: true });
      // The joining server gets the bundle as FAT32-sized parts (here 1 MiB) with their manifest.
      const split = path.join(work, 'split', 'k8s.ferry.tar');
      expect((await ferry(['bundle', 'build', specPath, '--key', path.join(work, 'keys', 'ferry.key'), '--out', split, '--split-size', '1MiB', ...mirrors], { env: cacheEnv })).code).toBe(0);
      // ferry join runs on the first server, in its namespace, with the (fake) API on the same port.
      const j = await runFerry({ args: ['join', '--answers', ans, '--bundle', `${split}.parts.json`, '--root', root, '--remote-root', remoteRoot, '--remote-path', standins, '--accept-new-host-keys'], standins, netns: first1.ns, apiPort, record: path.join(work, 'join-api.jsonl') });
      expect(j.stderr).not.toMatch(/error\[/);
      expect(j.code).toBe(0);
      expect(j.stdout).toMatch(/^NODE\s+HOST\s+ROLE\s+RESULT/m);
      expect(j.stdout).toMatch(/^k8s-agent-01\s+\S+\s+agent\s+joined/m);
      expect(j.stdout).toMatch(/^k8s-server-02\s+\S+\s+server\s+joined/m);
      // Each node's own preflight found cgroup v1 (its directory has no cgroup.controllers); the warning reaches the operator.
      expect(j.stderr).toMatch(/^warning: k8s-agent-01: CGROUP V1 ON K8S-AGENT-01: /m);
      expect(j.stderr).not.toMatch(/CGROUP V1 ON K8S-SERVER-02/);
      expect(await fs.readFile(lab.knownHosts, 'utf8')).toContain(server2.hostKeyPub.split(' ')[1]!);
      // The DNS records and LB backends now list the joined nodes.
      const applied = (await fs.readFile(path.join(work, 'join-api.jsonl'), 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as { method: string; body: string }).filter((q) => q.method === 'PATCH').map((q) => JSON.parse(q.body) as { kind: string; metadata: { name: string }; data?: Record<string, string> });
      const lbCfg = applied.filter((x) => x.kind === 'ConfigMap').map((x) => Object.values(x.data ?? {}).join('\n')).join('\n');
      expect(lbCfg).toContain(`${server2.ip}:6443`);
      expect(lbCfg).toContain(`${ip}:6443`);
      expect(lbCfg).not.toContain(`${agent.ip}:6443`);
      expect(lbCfg).toMatch(/k8s-agent-01/);
      // The site state records them (its mirror on this server shows it), with what each runs.
      const site = JSON.parse(await fs.readFile(path.join(root, 'var/lib/ferry/site/state.json'), 'utf8')) as { state: { nodes: { name: string; role: string; platform: string; bundle: string }[] } };
      expect(site.state.nodes.map((n) => n.name)).toEqual(['k8s-server-01', 'k8s-agent-01', 'k8s-server-02']);
      expect(site.state.nodes.every((n) => /^linux\/(amd64|arm64)$/.test(n.platform) && n.bundle.length > 0)).toBe(true);
      await expect(fs.access(path.join(root, 'etc/ferry/nodes.json'))).rejects.toThrow();

      const first = await standinCalls(root);
      expect(first).toContain('kubeadm token create --ttl 1h');
      const caHash = `sha256:${createHash('sha256').update(new (await import('node:crypto')).X509Certificate(await fs.readFile(path.join(root, 'etc/kubernetes/pki/ca.crt'))).publicKey.export({ type: 'spki', format: 'der' })).digest('hex')}`;
      const agentRoot = path.join(work, 'nodes', 'k8s-agent-01');
      const serverRoot = path.join(work, 'nodes', 'k8s-server-02');
      // kubeadm join reads a JoinConfiguration (0600, removed afterwards): no secret on a command line.
      const joinConfig = async (r: string) => {
        expect((await standinCalls(r)).filter((c) => c.startsWith('kubeadm join'))).toEqual(['kubeadm join --config /etc/ferry/kubeadm-join.yaml']);
        expect((await fs.readFile(path.join(r, 'kubeadm-join.seen.mode'), 'utf8')).trim()).toBe('600');
        await expect(fs.access(path.join(r, 'etc/ferry/kubeadm-join.yaml'))).rejects.toThrow();
        return parseAllDocuments(await fs.readFile(path.join(r, 'kubeadm-join.seen.yaml'), 'utf8')).map((d) => d.toJS() as Record<string, any>);
      };
      const discovery = { bootstrapToken: { apiServerEndpoint: 'k8s-cluster.site.test:6443', token: 'abcdef.0123456789abcdef', caCertHashes: [caHash] } };
      const cri = 'unix:///run/containerd/containerd.sock';
      const patches = { directory: '/etc/ferry/kubeadm-patches' };
      // A cgroup v1 node opts kubelet and kubeadm in from Kubernetes 1.35: the bundle's version decides.
      const k8s = (parseAllDocuments(await fs.readFile(path.join(root, 'etc/ferry/kubeadm.yaml'), 'utf8')).map((d) => d.toJS() as Record<string, any>).find((d) => d.kind === 'ClusterConfiguration')!.kubernetesVersion as string);
      const v1OptIn = Number(k8s.split('.')[1]) >= 35;
      expect(await joinConfig(agentRoot)).toEqual([
        {
          apiVersion: 'kubeadm.k8s.io/v1beta4',
          kind: 'JoinConfiguration',
          discovery,
          nodeRegistration: { name: 'k8s-agent-01', criSocket: cri, kubeletExtraArgs: [{ name: 'node-ip', value: agent.ip }], ignorePreflightErrors: [...(v1OptIn ? ['SystemVerification'] : []), 'NumCPU'], imagePullSerial: false },
          patches,
        },
      ]);
      expect(await joinConfig(serverRoot)).toEqual([
        {
          apiVersion: 'kubeadm.k8s.io/v1beta4',
          kind: 'JoinConfiguration',
          discovery,
          nodeRegistration: { name: 'k8s-server-02', criSocket: cri, kubeletExtraArgs: [{ name: 'node-ip', value: server2.ip }], ignorePreflightErrors: ['NumCPU'], imagePullSerial: false },
          controlPlane: { localAPIEndpoint: { advertiseAddress: server2.ip, bindPort: 6443 }, certificateKey: '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef' },
          patches,
        },
      ]);
      // Each node's kubelet and runc take that node's cgroup driver, whatever the cluster's kubelet-config
      // says; the answers' kubelet patch comes on top, here as on the first server.
      const kubeletPatch = async (r: string) => parseAllDocuments(await fs.readFile(path.join(r, 'etc/ferry/kubeadm-patches/kubeletconfiguration+merge.yaml'), 'utf8'))[0]!.toJS();
      expect(await kubeletPatch(agentRoot)).toEqual({ cgroupDriver: 'cgroupfs', ...(v1OptIn ? { failCgroupV1: false } : {}), failSwapOn: false });
      expect(await kubeletPatch(serverRoot)).toEqual({ cgroupDriver: 'systemd', failSwapOn: false });
      const initDocs = parseAllDocuments(await fs.readFile(path.join(root, 'etc/ferry/kubeadm.yaml'), 'utf8')).map((d) => d.toJS() as Record<string, any>);
      expect(initDocs.find((d) => d.kind === 'KubeletConfiguration')!.failSwapOn).toBe(false);
      expect(initDocs.find((d) => d.kind === 'InitConfiguration')!.nodeRegistration.ignorePreflightErrors).toEqual([...(v1OptIn ? ['SystemVerification'] : []), 'NumCPU']);
      expect(await fs.readFile(path.join(agentRoot, 'etc/containerd/config.toml'), 'utf8')).toMatch(/^  SystemdCgroup = false$/m);
      expect(await fs.readFile(path.join(serverRoot, 'etc/containerd/config.toml'), 'utf8')).toMatch(/^  SystemdCgroup = true$/m);
      // One backup key for the site: made by the install, carried to the new server (0600), not to the agent; both servers back up every 6 hours.
      const siteKey = await fs.readFile(path.join(root, 'etc/ferry/backup.key'));
      expect(siteKey).toHaveLength(32);
      expect(await fs.readFile(path.join(serverRoot, 'etc/ferry/backup.key'))).toEqual(siteKey);
      expect((await fs.stat(path.join(serverRoot, 'etc/ferry/backup.key'))).mode & 0o777).toBe(0o600);
      await expect(fs.access(path.join(agentRoot, 'etc/ferry/backup.key'))).rejects.toThrow();
      for (const r of [root, serverRoot]) expect(await standinCalls(r)).toContain('systemctl enable --now ferry-backup.timer');
      expect(await standinCalls(agentRoot)).not.toContain('systemctl enable --now ferry-backup.timer');
      // Binaries came from the site service by FQDN, checksums checked.
      for (const r of [agentRoot, serverRoot]) {
        expect(await fs.readFile(path.join(r, 'usr/local/bin/kubeadm'), 'utf8')).toContain('real-kubeadm');
        expect((await fs.readdir(path.join(r, 'opt/cni/bin'))).sort()).toEqual(['bridge', 'loopback']);
        expect(await fs.readFile(path.join(r, 'etc/containerd/certs.d', reg.host, 'hosts.toml'), 'utf8')).toMatch(/^server = "https:\/\/registry\.site\.test:5443/m);
      }
      expect(await fs.readFile(path.join(agentRoot, 'etc/resolv.conf'), 'utf8')).toMatch(new RegExp(`nameserver ${agent.ip}\\nnameserver ${ip}`));
      // Every node asks its own site DNS first, then the servers': a server too, so losing another server costs it nothing.
      expect(await fs.readFile(path.join(serverRoot, 'etc/resolv.conf'), 'utf8')).toMatch(new RegExp(`nameserver ${server2.ip}\\nnameserver ${ip}`));
      expect((await fs.readFile(path.join(root, 'etc/resolv.conf'), 'utf8')).split('\n').find((l) => l.startsWith('nameserver '))).toBe(`nameserver ${ip}`);
      // From inside each host's namespace, the site DNS its resolver lists answers the cluster FQDN.
      for (const [h, r] of [[agent, agentRoot], [server2, serverRoot]] as const) {
        const servers = (await fs.readFile(path.join(r, 'etc/resolv.conf'), 'utf8')).split('\n').filter((l) => l.startsWith('nameserver ')).map((l) => l.slice(11));
        expect(servers).toContain(ip);
        const { stdout } = await execFileP('ip', ['netns', 'exec', h.ns, 'dig', '+short', '+time=2', '+tries=1', `@${ip}`, 'k8s-cluster.site.test']);
        expect(stdout.trim()).toBe(ip);
      }
      // The new server serves the bundle too, with its own registry certificate, and maps the FQDN to itself.
      expect(JSON.parse(await fs.readFile(path.join(serverRoot, 'var/lib/ferry/bundle/bundle.json'), 'utf8')).name).toBe('k8s');
      // The uploaded parts are gone once they are unpacked.
      expect(await fs.readdir(path.join(serverRoot, 'var/lib/ferry/incoming'))).toEqual([]);
      await execFileP('openssl', ['verify', '-CAfile', path.join(root, 'etc/ferry/pki/ca.crt'), path.join(serverRoot, 'etc/ferry/pki/registry.crt')]);
      expect(await fs.readFile(path.join(serverRoot, 'etc/hosts'), 'utf8')).toMatch(new RegExp(`^${server2.ip.replace(/\./g, '\\.')}\\tk8s-cluster\\.site\\.test`, 'm'));
      // Tokens and certificate keys never reach a log, here or there.
      const logs = (await execFileP('sh', ['-c', `cat ${root}/var/log/ferry/* ${agentRoot}/var/log/ferry/* ${serverRoot}/var/log/ferry/*`])).stdout;
      expect(logs.length).toBeGreaterThan(100);
      expect(logs).not.toContain('abcdef.0123456789abcdef');
      expect(logs).not.toContain('0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef');
      expect(j.stdout + j.stderr).not.toContain('abcdef.0123456789abcdef');

      // containerd on the joined agent, with the files ferry wrote there (resolver, site CA,
      // hosts.toml), pulls by upstream name from the site service, which it finds by FQDN.
      const ctd = path.join(work, 'agent-containerd');
      await write(path.join(ctd, 'config.toml'), `version = 2\nroot = "${ctd}/root"\nstate = "${ctd}/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "${ctd}/sock"\n[ttrpc]\n  address = "${ctd}/sock.ttrpc"\n`);
      const inAgent = [
        `mount --bind ${agentRoot}/etc/resolv.conf /etc/resolv.conf`,
        // The mount point is made on the real /etc (a mount namespace shares the filesystem), so it goes again on exit.
        'made=; [ -d /etc/ferry ] || { mkdir /etc/ferry && made=1; }',
        `trap 'umount /etc/ferry 2>/dev/null; [ -z "$made" ] || rmdir /etc/ferry' EXIT`,
        `mount --bind ${agentRoot}/etc/ferry /etc/ferry`,
        `containerd --config ${ctd}/config.toml > ${ctd}/containerd.log 2>&1 & c=$!`,
        `for i in $(seq 100); do ctr -a ${ctd}/sock version >/dev/null 2>&1 && break; sleep 0.1; done`,
        `ctr -a ${ctd}/sock images pull --hosts-dir ${agentRoot}/etc/containerd/certs.d ${reg.host}/k8s/pause:3.10.2; rc=$?`,
        `ctr -a ${ctd}/sock images ls -q`,
        'kill $c; wait $c; exit $rc',
      ].join('\n');
      const pulled = await execFileP('ip', ['netns', 'exec', agent.ns, 'unshare', '-m', '--propagation', 'private', 'sh', '-c', inAgent], { timeout: 90_000 });
      expect(pulled.stdout).toContain(`${reg.host}/k8s/pause:3.10.2`);
      await execFileP('sh', ['-c', `grep -o '${ctd}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l`]).catch(() => {});

      // A changed host key is refused before anything runs on that host.
      await fs.writeFile(lab.knownHosts, `${agent.ip} ${server2.hostKeyPub.split(' ').slice(0, 2).join(' ')}\n`);
      const fresh = path.join(work, 'nodes-mismatch', '{name}');
      const bad = await runFerry({ args: ['join', '--answers', ans, '--root', root, '--only', 'k8s-agent-01', '--remote-root', fresh, '--remote-path', standins], standins, netns: first1.ns, apiPort, record: path.join(work, 'join-api-2.jsonl') });
      expect(bad.code).toBe(4);
      expect(bad.stdout).toMatch(/^k8s-agent-01\s+\S+\s+agent\s+FAILED SSH_HOST_KEY_MISMATCH/m);
      expect(bad.stderr).toMatch(/does not match .*known_hosts/);
      // With --json, the failure is one document that carries the rows (issue 12 item 6).
      const badJson = await runFerry({ args: ['join', '--json', '--answers', ans, '--root', root, '--only', 'k8s-agent-01', '--remote-root', fresh, '--remote-path', standins], standins, netns: first1.ns, apiPort, record: path.join(work, 'join-api-3.jsonl') });
      expect(badJson.code).toBe(4);
      expect(JSON.parse(badJson.stdout)).toMatchObject({ ok: false, error: { code: 'JOIN_FAILED', details: { nodes: [{ name: 'k8s-agent-01', ok: false, error: { code: 'SSH_HOST_KEY_MISMATCH' } }] } } });
      await expect(fs.access(path.join(work, 'nodes-mismatch'))).rejects.toThrow();
    } finally {
      for (const s of stops.reverse()) await s().catch(() => {});
    }
  }, 180_000);
});
