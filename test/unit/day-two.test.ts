import forge from 'node-forge';
import { describe, expect, it } from 'vitest';
import { renderCertsUnits } from '../../src/install/units.js';
import { daysLeft, expiringWithin, kubeconfigCert, parseProbe, probeScript } from '../../src/ops/certs.js';
import { NODE_CERTS_RENEW_SCHEMA, readRenewPayload } from '../../src/ops/certs-renew.js';
import { memberIp, quorumOf, removalKeepsQuorum } from '../../src/ops/etcd.js';
import { mountsUnder, ownRuleDeletions, readNodeResetPayload, withoutHostsBlock, withoutOwnRules } from '../../src/ops/node-reset.js';
import { resetSteps } from '../../src/ops/reset.js';
import { classify, parseHaproxyCsv, STATUS_EXIT } from '../../src/ops/status.js';

const keys = forge.pki.rsa.generateKeyPair(1024);

/** A self-signed certificate (fixture by code) valid until `notAfter`. */
function certPem(cn: string, notAfter: Date): string {
  const c = forge.pki.createCertificate();
  c.publicKey = keys.publicKey;
  c.serialNumber = '01';
  c.validity.notBefore = new Date(notAfter.getTime() - 400 * 86_400_000);
  c.validity.notAfter = notAfter;
  c.setSubject([{ name: 'commonName', value: cn }]);
  c.setIssuer([{ name: 'commonName', value: cn }]);
  c.sign(keys.privateKey, forge.md.sha256.create());
  return forge.pki.certificateToPem(c);
}

const now = new Date('2026-12-03T12:00:00Z');
const inDays = (d: number) => new Date(now.getTime() + d * 86_400_000 + 3_600_000);

describe('certificate probe', () => {
  it('turns the probe output into days left per certificate, reads kubeconfig client certificates, kubelet rotation and disk use', () => {
    const kubeconfig = `apiVersion: v1\nkind: Config\nusers:\n- name: kubernetes-admin\n  user:\n    client-certificate-data: ${Buffer.from(certPem('kubernetes-admin', inDays(200))).toString('base64')}\n    client-key-data: eA==\n`;
    const out = [
      '==> file /etc/ferry/pki/ca.crt', certPem('site CA', inDays(3650)),
      '==> file /etc/ferry/pki/registry.crt', certPem('registry', inDays(12)),
      '==> file /etc/kubernetes/pki/apiserver.crt', certPem('kube-apiserver', inDays(364)),
      '==> file /etc/kubernetes/pki/etcd/server.crt', certPem('server-1', inDays(-2)),
      '==> file /etc/kubernetes/admin.conf', kubeconfig,
      '==> file /var/lib/kubelet/config.yaml', 'apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nrotateCertificates: true\n',
      '==> du store 123456',
      '==> du containerd 987654321',
      '==> df 1000000000 400000000',
    ].join('\n');
    const p = parseProbe('server-1', out, now);
    expect(p.certs.map((c) => [c.name, c.kind, c.daysLeft])).toEqual([
      ['site-ca', 'site-ca', 3650],
      ['site-service', 'site-service', 12],
      ['apiserver', 'kubeadm', 364],
      ['etcd/server', 'kubeadm', -2],
      ['admin.conf', 'kubeadm', 200],
    ]);
    expect(p.kubeletRotation).toBe(true);
    expect(p.disk).toEqual({ store: 123456, containerd: 987654321, size: 1000000000, free: 400000000 });
    expect(expiringWithin(p.certs, 30).map((c) => c.name)).toEqual(['etcd/server', 'site-service']);
  });

  it('reads kubelet rotation as off when the config says so, and skips files that hold no certificate', () => {
    const p = parseProbe('agent-1', '==> file /var/lib/kubelet/config.yaml\nrotateCertificates: false\n==> file /etc/kubernetes/pki/apiserver.crt\nnot a certificate\n', now);
    expect(p.kubeletRotation).toBe(false);
    expect(p.certs).toEqual([]);
    expect(kubeconfigCert('users: [')).toBeUndefined();
  });

  it('counts days left rounded down, negative once expired', () => {
    expect(daysLeft(new Date(now.getTime() + 29.9 * 86_400_000), now)).toBe(29);
    expect(daysLeft(new Date(now.getTime() - 1000), now)).toBe(-1);
  });

  it('probes every file under the root prefix, quoted', () => {
    const s = probeScript('/tmp/node a');
    expect(s).toContain("'/tmp/node a/etc/kubernetes/pki/apiserver.crt'");
    expect(s).toContain("echo '==> file /etc/kubernetes/pki/apiserver.crt'");
  });
});

const base = {
  checkedAt: '',
  source: 'cluster' as const,
  api: { answering: true },
  nodes: [
    { name: 'server-1', role: 'server', ip: '10.0.0.11', registered: true, ready: true },
    { name: 'server-2', role: 'server', ip: '10.0.0.12', registered: true, ready: true },
    { name: 'server-3', role: 'server', ip: '10.0.0.13', registered: true, ready: true },
  ],
  etcd: { members: ['server-1', 'server-2', 'server-3'].map((n) => ({ name: n, id: n, healthy: true, leader: n === 'server-1' })), quorum: true, answered: true },
  servers: ['server-1', 'server-2', 'server-3'].map((n) => ({ name: n, ip: '', siteService: { up: true }, probed: true, kubeletRotation: true, disk: {} })),
  dns: [],
  lb: [{ agent: 'agent-1', answered: true, backends: [{ name: 'server-1', up: true }] }],
  bundles: [],
  certs: [],
};

describe('ferry status verdict', () => {
  it('is healthy (exit 0) when everything answers, with exit codes apart from the error codes', () => {
    expect(classify(base)).toEqual({ verdict: 'healthy', exitCode: 0, reasons: [], warnings: [] });
    expect(Object.values(STATUS_EXIT)).toEqual([0, 10, 11]);
    for (const c of [1, 2, 3, 4, 5, 6, 130]) expect(Object.values(STATUS_EXIT)).not.toContain(c);
  });

  it('is degraded (exit 10) naming the server that is down, and a certificate under 30 days', () => {
    const r = classify({
      ...base,
      nodes: base.nodes.map((n) => (n.name === 'server-3' ? { ...n, ready: false } : n)),
      etcd: { ...base.etcd, members: base.etcd.members.map((m) => (m.name === 'server-3' ? { ...m, healthy: false } : m)) },
      certs: [{ node: 'server-1', name: 'apiserver', kind: 'kubeadm', path: '', notAfter: 'x', daysLeft: 29 }],
    });
    expect(r.verdict).toBe('degraded');
    expect(r.exitCode).toBe(10);
    expect(r.reasons).toEqual(['server-3 is not Ready', 'etcd member server-3 does not answer', 'server-1: certificate apiserver expires in 29 days (x)']);
  });

  it('is down (exit 11) without the API, or without etcd quorum', () => {
    const noApi = classify({ ...base, api: { answering: false }, nodes: base.nodes.map(({ ready: _r, ...n }) => n) });
    expect(noApi.exitCode).toBe(11);
    // Readiness is unknown then: the API's absence is the reason, not every node.
    expect(noApi.reasons).toEqual(['the API server does not answer']);
    const r = classify({ ...base, etcd: { ...base.etcd, quorum: false, members: base.etcd.members.map((m) => ({ ...m, healthy: m.name === 'server-1' })) } });
    expect(r.verdict).toBe('down');
    expect(r.reasons[0]).toBe('etcd has no quorum: 1 of 3 members answer');
  });

  it("reads the agent's haproxy stats: each API backend server and whether it is up", () => {
    const csv = '# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight\nstats,FRONTEND,,,0,1,,,,,,,,,,,,OPEN,\napi,server-1,0,0,0,1,,5,1,1,,0,,0,0,0,0,UP,1\napi,server-3,0,0,0,1,,5,1,1,,0,,0,0,0,0,DOWN,1\napi,server-2,0,0,0,1,,5,1,1,,0,,0,0,0,0,UP 1/2,1\napi,BACKEND,0,0,0,1,,5,1,1,,0,,0,0,0,0,UP,2\n';
    expect(parseHaproxyCsv(csv)).toEqual([{ name: 'server-1', up: true }, { name: 'server-3', up: false }, { name: 'server-2', up: true }]);
  });
});

describe('ferry reset plan', () => {
  it('removes a server only while the rest keep quorum, and never the last member', () => {
    expect(quorumOf(3)).toBe(2);
    expect(removalKeepsQuorum({ voters: 3, healthyVoters: 3, targetHealthy: true }).ok).toBe(true);
    // One other server down: removing a healthy one leaves 1 of 2.
    expect(removalKeepsQuorum({ voters: 3, healthyVoters: 2, targetHealthy: true })).toEqual({ ok: false, after: 2, healthyAfter: 1, need: 2 });
    // Removing the one that is down leaves 2 of 2.
    expect(removalKeepsQuorum({ voters: 3, healthyVoters: 2, targetHealthy: false }).ok).toBe(true);
    expect(removalKeepsQuorum({ voters: 1, healthyVoters: 1, targetHealthy: true }).ok).toBe(false);
    expect(memberIp({ id: '1', name: 's', peerURLs: ['https://10.0.0.12:2380'], clientURLs: [], isLearner: false })).toBe('10.0.0.12');
  });

  it("takes a server's etcd member out first, cleans the node before its Node goes, and updates the site last", () => {
    expect(resetSteps({ name: 'server-2', role: 'server' }).map((s) => s.key)).toEqual(['server-2/etcd-member', 'server-2/drain', 'server-2/node-reset', 'server-2/delete', 'site/membership', 'site/bootstrap']);
    expect(resetSteps({ name: 'agent-1', role: 'agent' }).map((s) => s.key)[0]).toBe('agent-1/drain');
  });

  it("drops only kube-proxy's, flannel's and the CNI's chains and the rules in or into them", () => {
    const save = [
      '*filter',
      ':INPUT ACCEPT [0:0]',
      ':FORWARD ACCEPT [0:0]',
      ':KUBE-FORWARD - [0:0]',
      ':FLANNEL-FWD - [0:0]',
      ':MINE - [0:0]',
      '-A INPUT -m comment --comment "kubernetes health check" -j KUBE-NODEPORTS',
      '-A INPUT -p tcp --dport 22 -j ACCEPT',
      '-A FORWARD -j FLANNEL-FWD',
      '-A FORWARD -j MINE',
      '-A KUBE-FORWARD -j ACCEPT',
      '-A FLANNEL-FWD -s 10.244.0.0/16 -j ACCEPT',
      '-A MINE -j CNI-abc',
      'COMMIT',
    ].join('\n');
    const r = withoutOwnRules(save);
    expect(r.text.split('\n')).toEqual(['*filter', ':INPUT ACCEPT [0:0]', ':FORWARD ACCEPT [0:0]', ':MINE - [0:0]', '-A INPUT -p tcp --dport 22 -j ACCEPT', '-A FORWARD -j MINE', 'COMMIT']);
    expect(r.removed).toBe(7);
    expect(withoutOwnRules('*nat\nCOMMIT').removed).toBe(0);
    // Rule by rule, when a restore is refused: the jumps first, then the chains.
    expect(ownRuleDeletions(save)).toEqual([
      ['-t', 'filter', '-D', 'INPUT', '-m', 'comment', '--comment', 'kubernetes health check', '-j', 'KUBE-NODEPORTS'],
      ['-t', 'filter', '-D', 'FORWARD', '-j', 'FLANNEL-FWD'],
      ['-t', 'filter', '-D', 'MINE', '-j', 'CNI-abc'],
      ['-t', 'filter', '-F', 'KUBE-FORWARD'],
      ['-t', 'filter', '-F', 'FLANNEL-FWD'],
      ['-t', 'filter', '-X', 'KUBE-FORWARD'],
      ['-t', 'filter', '-X', 'FLANNEL-FWD'],
    ]);
  });

  it("removes ferry's /etc/hosts block and nothing else", () => {
    expect(withoutHostsBlock('127.0.0.1\tlocalhost\n# BEGIN ferry\n10.0.0.11\tk8s-cluster.site.test\n# END ferry\n10.1.1.1 other\n')).toBe('127.0.0.1\tlocalhost\n10.1.1.1 other\n');
    expect(withoutHostsBlock('127.0.0.1 localhost\n')).toBe('127.0.0.1 localhost\n');
  });

  it('unmounts the deepest mounts below kubelet and containerd first, never their own disks, and no others', () => {
    const info = [
      '22 1 0:21 / / rw - overlay overlay rw',
      '30 22 0:30 / /var/lib/kubelet/pods/abc/volumes/kubernetes.io~projected/kube-api-access rw - tmpfs tmpfs rw',
      '31 22 0:31 / /run/containerd/io.containerd.runtime.v2.task/k8s.io/123/rootfs rw - overlay overlay rw',
      '32 22 0:32 / /run/netns/cni-1234 rw - nsfs nsfs rw',
      '33 22 0:33 / /var/lib/kubeletx rw - tmpfs tmpfs rw',
      '34 22 0:34 / /var/lib/kubelet/pods/abc rw - tmpfs tmpfs rw',
      '35 22 0:35 / /var/lib/kubelet rw - ext4 /dev/sdb1 rw',
    ].join('\n');
    expect(mountsUnder(info, ['/var/lib/kubelet', '/run/containerd', '/run/netns'])).toEqual([
      '/var/lib/kubelet/pods/abc/volumes/kubernetes.io~projected/kube-api-access',
      '/run/containerd/io.containerd.runtime.v2.task/k8s.io/123/rootfs',
      '/var/lib/kubelet/pods/abc',
      '/run/netns/cni-1234',
    ]);
  });

  it('checks the node operations\' payloads', () => {
    expect(readNodeResetPayload('{"name":"agent-1","role":"agent"}')).toEqual({ name: 'agent-1', role: 'agent' });
    expect(() => readNodeResetPayload('{"name":"agent-1","role":"king"}')).toThrow(expect.objectContaining({ code: 'NODE_PAYLOAD_INVALID' }));
    expect(readRenewPayload('{"name":"server-1","ip":"10.0.0.11","validityHours":240}').validityHours).toBe(240);
    expect(() => readRenewPayload('{"name":"server-1","ip":"10.0.0.11","validityHours":1}')).toThrow(expect.objectContaining({ code: 'NODE_PAYLOAD_INVALID' }));
    expect(NODE_CERTS_RENEW_SCHEMA.required).toEqual(['name', 'ip']);
  });
});

describe('ferry-certs.timer', () => {
  it('runs the local renewal under 90 days, daily and after boot, once the node has an admin kubeconfig', () => {
    const { service, timer } = renderCertsUnits();
    expect(service).toMatch(/^# Written by ferry/);
    expect(service).toMatch(/^ExecStart=.*ferry\.mjs certs renew --local --wait --under-days 90$/m);
    expect(service).toMatch(/^ConditionPathExists=\/etc\/kubernetes\/admin\.conf$/m);
    expect(timer).toMatch(/^OnCalendar=daily$/m);
    expect(timer).toMatch(/^OnBootSec=10min$/m);
    expect(timer).toMatch(/^Persistent=true$/m);
  });
});
