import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ferry, ROOT } from '../helpers/cli.js';
import { knownHostsLine, startLab, type Lab } from '../helpers/netns.js';
import { execFileP, tmpdir } from '../helpers/peers.js';
import type { SiteState } from '../../src/cluster/state.js';

/*
 * Issue 22 item 6: `ferry support-bundle` on a server, with one agent reached over real SSH (sshd in
 * a network namespace) and one that does not answer. Secrets are planted in this server's logs,
 * kubeconfigs, answers and join config, in the journal, in kubectl's output and in the agent's logs;
 * the archive is unpacked and searched for every one of them, and for the ordinary content beside them.
 * STAND-INS: journalctl and kubectl (scripts on PATH, here and on the agent) and the site state
 * (test/helpers/site-standin.mjs, a file); sshd, tar, find, df and the archive are real.
 */

const SITE_STANDIN = path.join(ROOT, 'test/helpers/site-standin.mjs');
const hex = (n: number) => randomBytes(n).toString('hex');
/** Every secret planted, by where it was planted: each must be absent from the archive. */
const S = {
  adminClientKey: Buffer.from(`admin-client-key-${hex(8)}`).toString('base64'),
  adminToken: `admin-token-${hex(12)}`,
  kubeletKeyBody: `MHcCAQEEI${hex(24)}`,
  bootstrapToken: `${hex(3)}.${hex(8)}`,
  certificateKey: hex(32),
  answersPassword: `answers-pass-${hex(6)}`,
  registryAuth: Buffer.from(`admin:${hex(6)}`).toString('base64'),
  journalBearer: `eyJ${hex(20)}`,
  configMapToken: `cm-token-${hex(10)}`,
  caKeyBody: `MIIEvQIBADANBg${hex(24)}`,
  remoteToken: `${hex(3)}.${hex(8)}`,
  remotePassword: `remote-pass-${hex(6)}`,
};

let work: string;
let lab: Lab;
let root: string;
let bin: string;

const pem = (body: string) => `-----BEGIN EC PRIVATE KEY-----\n${body}\n${hex(30)}\n-----END EC PRIVATE KEY-----\n`;

async function put(file: string, text: string, mode = 0o600): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, text, { mode });
}

async function listTree(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(path.join(dir, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await listTree(dir, r)));
    else out.push(r);
  }
  return out.sort();
}

beforeAll(async () => {
  work = await tmpdir('ferry-support-');
  lab = await startLab(path.join(work, 'lab'), ['agent']);
  const agent = lab.hosts[0]!;
  root = path.join(work, 'server');
  bin = path.join(work, 'bin');
  // STAND-INS for journalctl and kubectl: each prints ordinary lines and a planted secret.
  await put(
    path.join(bin, 'journalctl'),
    `#!/bin/sh
u=""; prev=""; for a in "$@"; do [ "$prev" = -u ] && u="$a"; prev="$a"; done
echo "Dec 03 10:00:00 node $u[1]: ORDINARY-JOURNAL-$u started"
echo "Dec 03 10:00:01 node $u[1]: GET /api Authorization: Bearer ${S.journalBearer}"
`,
    0o755,
  );
  await put(
    path.join(bin, 'kubectl'),
    `#!/bin/sh
case "$*" in
  *configmaps*) printf 'apiVersion: v1\\nitems:\\n- data:\\n    haproxy.cfg: |\\n      backend api\\n        server ORDINARY-HAPROXY-BACKEND 10.0.0.11:6443 check\\n    token: ${S.configMapToken}\\n  kind: ConfigMap\\n' ;;
  *) echo "ORDINARY-KUBECTL $*" ;;
esac
`,
    0o755,
  );
  await put(
    path.join(root, 'etc/kubernetes/admin.conf'),
    `apiVersion: v1
kind: Config
clusters:
- cluster:
    server: https://ORDINARY-ADMIN-SERVER:6443
  name: k
users:
- name: admin
  user:
    client-certificate-data: ORDINARYCERTDATA
    client-key-data: ${S.adminClientKey}
    token: ${S.adminToken}
`,
  );
  await put(path.join(root, 'etc/kubernetes/kubelet.conf'), `apiVersion: v1\nkind: Config\n# ORDINARY-KUBELET-CONF\nusers:\n- name: kubelet\n  user:\n    client-key: |\n${pem(S.kubeletKeyBody).split('\n').map((l) => `      ${l}`).join('\n')}\n`);
  await put(
    path.join(root, 'var/log/ferry/install-20261203T100000.log'),
    `step binaries: ORDINARY-INSTALL-LOG
kubeadm init phase upload-certs --upload-certs
[upload-certs] Using certificate key:
${S.certificateKey}
kubeadm join k8s-cluster.site.test:6443 --token ${S.bootstrapToken} --discovery-token-ca-cert-hash sha256:${hex(32)}
registry config {"auths":{"registry.site.test:5443":{"auth":"${S.registryAuth}"}}}
${pem(S.caKeyBody)}step done: ORDINARY-AFTER-KEY
`,
  );
  await put(path.join(root, 'var/lib/ferry/state/binaries.json'), '{"step":"binaries","ORDINARY":"STEP-MARKER"}\n');
  await put(path.join(root, 'etc/ferry/answers.yaml'), `domain: site.test\n# ORDINARY-ANSWERS\npatches:\n  kubelet:\n    registryPassword: ${S.answersPassword}\n`);
  await put(path.join(root, 'etc/ferry/kubeadm-join.yaml'), `kind: JoinConfiguration\ndiscovery:\n  bootstrapToken:\n    token: ${S.bootstrapToken}\ncontrolPlane:\n  certificateKey: ${S.certificateKey}\n`);
  await put(path.join(root, 'var/lib/ferry/bundle/bundle.json'), JSON.stringify({ name: 'k8s', version: '0.1.0', created: '2026-01-01T00:00:00Z', kubernetes: { version: 'v1.37.2' }, signer: { fingerprint: 'SHA256:ORDINARY-SIGNER' } }));
  // The agent, as its root prefix on this filesystem.
  const agentRoot = path.join(work, 'remote', 'k8s-agent-01');
  await put(path.join(agentRoot, 'var/log/ferry/node-join-20261203T100500.log'), `ORDINARY-AGENT-LOG\nkubeadm join --token ${S.remoteToken}\npassword=${S.remotePassword}\n`);
  const knownHosts = path.join(work, 'known_hosts');
  await fs.writeFile(knownHosts, `${knownHostsLine(agent)}\n`);
  const subnet = lab.gatewayIp.replace(/\.1$/, '');
  const state: SiteState = {
    apiVersion: 'ferry.dev/v1alpha1',
    kind: 'SiteState',
    answers: { domain: 'site.test', clusterFqdn: 'k8s-cluster.site.test', podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12', ssh: { user: 'root', identityFile: lab.identity, knownHosts, port: 22 } },
    nodes: [
      { name: 'k8s-server-01', ip: '127.0.0.1', role: 'server', platform: 'linux/amd64', kubernetesVersion: 'v1.37.2', bundle: 'k8s-0.1.0', joinedAt: '2026-01-01T00:00:00Z' },
      { name: 'k8s-agent-01', ip: agent.ip, role: 'agent', platform: 'linux/amd64', kubernetesVersion: 'v1.37.2', bundle: 'k8s-0.1.0', joinedAt: '2026-01-01T00:00:00Z' },
      // No host has this address: it never answers.
      { name: 'k8s-agent-02', ip: `${subnet}.250`, role: 'agent', platform: 'linux/amd64', kubernetesVersion: 'v1.37.2', bundle: 'k8s-0.1.0', joinedAt: '2026-01-01T00:00:00Z' },
    ],
    bundles: [],
    current: 'k8s-0.1.0',
    operation: { id: 'join-ORDINARY-OP', kind: 'join', holder: 'k8s-server-01/1', startedAt: '2026-12-03T10:00:00Z', args: {}, journal: [{ key: 'k8s-agent-01/node-join', at: '2026-12-03T10:01:00Z' }] },
  };
  await put(path.join(work, 'state.json'), JSON.stringify(state));
}, 120_000);

afterAll(async () => {
  await lab?.down();
});

describe('ferry support-bundle', () => {
  it('collects this server and an agent over SSH into one archive, lists the agent that does not answer, and leaves no planted secret in it', async () => {
    const out = path.join(work, 'out', 'support.tar.gz');
    const r = await ferry(
      ['support-bundle', '--out', out, '--json', '--timeout', '30s', '--root', root, '--site-standin', SITE_STANDIN, '--remote-root', path.join(work, 'remote', '{name}'), '--remote-path', bin],
      { env: { PATH: `${bin}:${process.env.PATH}`, FERRY_SITE_STANDIN_FILE: path.join(work, 'state.json') }, timeout: 180_000 },
    );
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as { out: string; nodes: { name: string; collected: boolean; where: string; error?: string; files: number }[] };
    expect(doc.out).toBe(out);
    const by = Object.fromEntries(doc.nodes.map((n) => [n.name, n]));
    expect(by['k8s-server-01']).toMatchObject({ collected: true, where: 'here' });
    expect(by['k8s-agent-01']).toMatchObject({ collected: true, where: 'ssh' });
    expect(by['k8s-agent-02']).toMatchObject({ collected: false, where: 'ssh' });
    expect(by['k8s-agent-02']!.error).toBeTruthy();
    expect(r.stderr).toMatch(/k8s-agent-02: not collected/);
    expect((await fs.stat(out)).mode & 0o777).toBe(0o600);

    const x = path.join(work, 'x');
    await fs.mkdir(x);
    await execFileP('tar', ['-xzf', out, '-C', x]);
    const [top] = await fs.readdir(x);
    expect(top).toMatch(/^ferry-support-\d{8}T\d{6}Z$/);
    const dir = path.join(x, top!);
    const files = await listTree(dir);
    const all = new Map<string, string>();
    for (const f of files) all.set(f, await fs.readFile(path.join(dir, f), 'utf8'));
    const text = (f: string) => all.get(f) ?? `(missing ${f}; have ${files.join(', ')})`;

    // No planted secret anywhere: not in a file, not in a file's name.
    for (const [where, secret] of Object.entries(S)) {
      expect([...all].filter(([, t]) => t.includes(secret)).map(([f]) => f), where).toEqual([]);
      expect(files.filter((f) => f.includes(secret)), where).toEqual([]);
    }
    expect([...all].filter(([, t]) => /-----BEGIN [A-Z ]*PRIVATE KEY-----\n(?!<redacted>)/.test(t)).map(([f]) => f)).toEqual([]);

    // The ordinary content beside them is all there, each where it belongs.
    const n1 = 'nodes/k8s-server-01';
    expect(text(`${n1}/files/var/log/ferry/install-20261203T100000.log`)).toContain('ORDINARY-INSTALL-LOG');
    expect(text(`${n1}/files/var/log/ferry/install-20261203T100000.log`)).toContain('ORDINARY-AFTER-KEY');
    expect(text(`${n1}/files/var/log/ferry/install-20261203T100000.log`)).toContain('--discovery-token-ca-cert-hash');
    expect(text(`${n1}/files/var/lib/ferry/state/binaries.json`)).toContain('STEP-MARKER');
    expect(text(`${n1}/files/etc/kubernetes/admin.conf`)).toContain('server: https://ORDINARY-ADMIN-SERVER:6443');
    expect(text(`${n1}/files/etc/kubernetes/admin.conf`)).toContain('client-certificate-data: ORDINARYCERTDATA');
    expect(text(`${n1}/files/etc/kubernetes/kubelet.conf`)).toContain('ORDINARY-KUBELET-CONF');
    expect(text(`${n1}/files/etc/ferry/answers.yaml`)).toContain('ORDINARY-ANSWERS');
    expect(text(`${n1}/journal/kubelet.log`)).toContain('ORDINARY-JOURNAL-kubelet started');
    expect(text(`${n1}/journal/containerd.log`)).toContain('ORDINARY-JOURNAL-containerd');
    expect(text(`${n1}/journal/ferry-serve.log`)).toContain('ORDINARY-JOURNAL-ferry-serve');
    expect(text(`${n1}/df.txt`)).toMatch(/Filesystem/);
    expect(text('nodes/k8s-agent-01/files/var/log/ferry/node-join-20261203T100500.log')).toContain('ORDINARY-AGENT-LOG');
    expect(text('nodes/k8s-agent-01/journal/kubelet.log')).toContain('ORDINARY-JOURNAL-kubelet');
    expect(files.some((f) => f.startsWith('nodes/k8s-agent-02/'))).toBe(false);
    expect(text('cluster/nodes-pods.txt')).toContain('ORDINARY-KUBECTL');
    expect(text('cluster/nodes-pods.txt')).toContain('get nodes,pods -A -o wide');
    expect(text('cluster/events.txt')).toContain('get events -A');
    expect(text('cluster/ferry-system-configmaps.yaml')).toContain('ORDINARY-HAPROXY-BACKEND');
    expect(text('cluster/dns.json')).toContain('k8s-cluster.site.test');
    expect(text('site/state.json')).toContain('k8s-agent-02');
    expect(text('site/operation.json')).toContain('k8s-agent-01/node-join');
    expect(text('bundle-identity.json')).toContain('SHA256:ORDINARY-SIGNER');
    expect(text('bundle-identity.json')).toContain('"id": "k8s-0.1.0"');
    const summary = JSON.parse(text('summary.json')) as { nodes: { name: string; collected: boolean }[]; failed: { what: string }[] };
    expect(summary.nodes.find((n) => n.name === 'k8s-agent-02')?.collected).toBe(false);
    // This server has no etcd certificate: said so, not fatal.
    expect(summary.failed.map((f) => f.what)).toContain('etcd');
  }, 240_000);

  it('bounds a node that answers but does not finish: closed at --timeout, listed with what arrived by then, and the run ends', async () => {
    // STAND-IN journalctl on the agent that never finishes in time.
    const slow = path.join(work, 'slow-bin');
    await put(path.join(slow, 'journalctl'), '#!/bin/sh\nexec sleep 20\n', 0o755);
    const out = path.join(work, 'out', 'slow.tar.gz');
    const r = await ferry(
      ['support-bundle', '--out', out, '--json', '--timeout', '4s', '--root', root, '--site-standin', SITE_STANDIN, '--remote-root', path.join(work, 'remote', '{name}'), '--remote-path', slow],
      { env: { PATH: `${bin}:${process.env.PATH}`, FERRY_SITE_STANDIN_FILE: path.join(work, 'state.json') }, timeout: 120_000 },
    );
    expect(r.code, r.stderr).toBe(0);
    const agent = (JSON.parse(r.stdout) as { nodes: { name: string; collected: boolean; files: number; error?: string }[] }).nodes.find((n) => n.name === 'k8s-agent-01')!;
    expect(agent.error).toMatch(/stopped after 4s, with the \d+ files collected by then/);
    expect(agent.files).toBeGreaterThan(0);
    const x = path.join(work, 'x-slow');
    await fs.mkdir(x);
    await execFileP('tar', ['-xzf', out, '-C', x]);
    const [top] = await fs.readdir(x);
    // Its logs come before its journals: they arrived, redacted as ever.
    const log = await fs.readFile(path.join(x, top!, 'nodes/k8s-agent-01/files/var/log/ferry/node-join-20261203T100500.log'), 'utf8');
    expect(log).toContain('ORDINARY-AGENT-LOG');
    expect(log).not.toContain(S.remoteToken);
  }, 180_000);

  it('refuses on a machine where ferry install did not finish', async () => {
    const r = await ferry(['support-bundle', '--root', path.join(work, 'empty'), '--out', path.join(work, 'none.tar.gz')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('error[INSTALL_MISSING]');
  });

  it('refuses with its own code when the archive cannot be written', async () => {
    const blocker = path.join(work, 'a-file');
    await fs.writeFile(blocker, 'x');
    const r = await ferry(['support-bundle', '--root', root, '--out', path.join(blocker, 'support.tar.gz'), '--site-standin', SITE_STANDIN, '--timeout', '10s'], {
      env: { PATH: `${bin}:${process.env.PATH}`, FERRY_SITE_STANDIN_FILE: path.join(work, 'state-none.json') },
    });
    expect(r.code, r.stderr).toBe(6);
    expect(r.stderr).toContain('error[SUPPORT_BUNDLE_WRITE]');
  });
});
