import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostExec, type HostState } from '../../scripts/site/hosts.js';
import { loadState } from '../../scripts/site/state.js';
import { site, siteUp } from './harness.js';
import { ROOT } from '../../scripts/site/config.js';
import { BOOTSTRAP_CHART, BOOTSTRAP_NAMESPACE, DNS_NAME, LB_NAME } from '../../src/install/bootstrap.js';

/**
 * The site in a box, one real server: `npm run site -- up --servers 1 --json` builds the default
 * bundle from upstream components, and ferry install brings up real Kubernetes from it on a
 * namespace host with real systemd, kubeadm, kubelet, containerd, flannel, CoreDNS and haproxy.
 */
interface Up {
  domain: string;
  fqdn: string;
  hosts: { name: string; ip: string; role: string; pid: number }[];
}


let up: Up;
let server: HostState;
const kubectl = async (...args: string[]) => {
  const r = await hostExec(server, ['kubectl', '--kubeconfig', '/etc/kubernetes/admin.conf', ...args]);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
};
const json = async <T>(...args: string[]) => JSON.parse(await kubectl(...args, '-o', 'json')) as T;

interface Pod {
  metadata: { name: string; namespace: string };
  status: { phase: string; containerStatuses?: { ready: boolean }[] };
}

async function podDone(ns: string, name: string, timeoutMs = 180_000): Promise<string> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const p = await json<Pod>('-n', ns, 'get', 'pod', name);
    if (p.status.phase === 'Succeeded' || p.status.phase === 'Failed') return p.status.phase;
    if (Date.now() > end) throw new Error(`pod ${name} still ${p.status.phase}: ${await kubectl('-n', ns, 'describe', 'pod', name)}`);
    await new Promise((r) => setTimeout(r, 2000));
  }
}

describe('a real single-server site from the signed default bundle', () => {
  beforeAll(async () => {
    const r = await siteUp(1, 0);
    expect(r.code, r.stderr.slice(-3000)).toBe(0);
    up = JSON.parse(r.stdout.trim().split('\n').pop()!) as Up;
    server = loadState()!.hosts[0]!;
  }, 3_600_000);

  afterAll(async () => {
    if (!process.env.FERRY_SITE_KEEP) await site(['down']);
  }, 300_000);

  it('prints the domain, the FQDN and each host with a PID inside its namespaces', async () => {
    expect(up.fqdn).toBe(`k8s-cluster.${up.domain}`);
    expect(up.hosts).toEqual([{ name: 'server-1', ip: server.ip, role: 'server', pid: server.pid, up: true }]);
    const r = await hostExec(server, ['hostname']);
    expect(r.stdout.trim()).toBe('server-1');
  });

  it('runs its own sshd, which lets root in with the site key', async () => {
    const key = path.join(path.dirname(loadState()!.bundle), 'ssh/id_ed25519');
    const r = await hostExec(server, ['ssh', '-i', key, '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', `root@${server.ip}`, 'hostname']);
    expect(r.stdout.trim(), r.stderr).toBe('server-1');
  });

  it('has a Ready node', async () => {
    const nodes = await json<{ items: { metadata: { name: string }; status: { conditions: { type: string; status: string }[] } }[] }>('get', 'nodes');
    expect(nodes.items.map((n) => n.metadata.name)).toEqual(['server-1']);
    expect(nodes.items[0]!.status.conditions.find((c) => c.type === 'Ready')?.status).toBe('True');
  });

  it('runs every kube-system pod and both ferry-bootstrap DaemonSets', async () => {
    const system = await json<{ items: Pod[] }>('-n', 'kube-system', 'get', 'pods');
    // etcd, apiserver, controller-manager, scheduler, kube-proxy and two CoreDNS replicas.
    expect(system.items.length).toBeGreaterThanOrEqual(7);
    for (const p of system.items) expect(`${p.metadata.name} ${p.status.phase}`).toBe(`${p.metadata.name} Running`);
    const sets = await json<{ items: { metadata: { name: string }; status: { desiredNumberScheduled: number; numberReady: number } }[] }>('-n', BOOTSTRAP_NAMESPACE, 'get', 'daemonsets', '-l', `app.kubernetes.io/name=${BOOTSTRAP_CHART}`);
    const byName = Object.fromEntries(sets.items.map((d) => [d.metadata.name, d.status]));
    expect(Object.keys(byName).sort()).toEqual([DNS_NAME, LB_NAME]);
    // One server and no agents: DNS runs on it, the agent LB is scheduled nowhere.
    expect(byName[DNS_NAME]).toMatchObject({ desiredNumberScheduled: 1, numberReady: 1 });
    expect(byName[LB_NAME]).toMatchObject({ desiredNumberScheduled: 0 });
    const pods = await json<{ items: Pod[] }>('-n', BOOTSTRAP_NAMESPACE, 'get', 'pods');
    expect(pods.items.map((p) => p.status.phase)).toEqual(['Running']);
  });

  it('answers the cluster FQDN with the host\'s own IP from the real CoreDNS on the host network', async () => {
    const r = await hostExec(server, ['dig', '+short', '+time=2', '+tries=2', `@${server.ip}`, up.fqdn]);
    expect(r.stdout.trim()).toBe(server.ip);
    const reg = await hostExec(server, ['dig', '+short', `@${server.ip}`, `registry.${up.domain}`]);
    expect(reg.stdout.trim()).toBe(server.ip);
  });

  it('runs a pod from a bundled image that containerd fetched from ferry serve', async () => {
    await kubectl('run', 'haproxy-version', '--image=docker.io/library/haproxy:3.0', '--restart=Never', '--command', '--', '/usr/sbin/haproxy', '-v');
    expect(await podDone('default', 'haproxy-version')).toBe('Succeeded');
    expect(await kubectl('logs', 'haproxy-version')).toMatch(/HAProxy version/);
    const log = await hostExec(server, ['journalctl', '-u', 'ferry-serve.service', '--no-pager', '-o', 'cat']);
    // containerd asked the site service, by the upstream name (ns=docker.io), for the manifest and its blobs.
    expect(log.stdout).toMatch(/"(GET|HEAD) \/v2\/library\/haproxy\/manifests\/[^" ]*ns=docker\.io[^" ]* HTTP\/[\d.]+" 200/);
    expect(log.stdout).toMatch(/"GET \/v2\/library\/haproxy\/blobs\/sha256:[0-9a-f]{64}[^" ]* HTTP\/[\d.]+" 200/);
  });

  it('resolves a Service name through cluster DNS from a pod', async () => {
    await kubectl('run', 'dns-probe', '--image=ghcr.io/flannel-io/flannel:v0.28.10', '--restart=Never', '--command', '--', 'nslookup', 'kubernetes.default.svc.cluster.local');
    expect(await podDone('default', 'dns-probe')).toBe('Succeeded');
    expect(await kubectl('logs', 'dns-probe')).toMatch(/Address:?\s+10\.96\.0\.1\b/);
  });

  it('lists only the site DNS in the host resolver, and forwards other names to the resolver it had', async () => {
    const corp = loadState()!.resolver!.ip;
    const resolv = (await hostExec(server, ['cat', '/etc/resolv.conf'])).stdout;
    expect(resolv.split('\n').filter((l) => l.startsWith('nameserver '))).toEqual([`nameserver ${server.ip}`]);
    expect(resolv).toContain(`# ferry replaced: nameserver ${corp}`);
    const dig = async (name: string) => (await hostExec(server, ['dig', '+time=3', '+tries=2', `@${server.ip}`, name])).stdout;
    expect(await dig('intranet.corp.test')).toMatch(/status: NOERROR[\s\S]*intranet\.corp\.test\.\s+\d+\s+IN\s+A\s+10\.231\.0\.99/);
    // Names nobody holds: NXDOMAIN from the upstream, passed on (not SERVFAIL or REFUSED).
    expect(await dig('nosuch.corp.test')).toMatch(/status: NXDOMAIN/);
    expect(await dig('nosuch.example.org')).toMatch(/status: NXDOMAIN/);
  });

  it("answers the site's own names to pods every time, through the cluster DNS", async () => {
    const names = [`registry.${up.domain}`, up.fqdn, 'kubernetes.default.svc.cluster.local'];
    const loop = `for i in 1 2 3 4 5 6 7 8; do for n in ${names.join(' ')}; do nslookup $n >/dev/null || { echo "failed: $n"; exit 1; }; done; done; echo all-answered`;
    await kubectl('run', 'site-names', '--image=ghcr.io/flannel-io/flannel:v0.28.10', '--restart=Never', '--command', '--', 'sh', '-c', loop);
    const phase = await podDone('default', 'site-names');
    const log = await kubectl('logs', 'site-names');
    expect(phase, log).toBe('Succeeded');
    expect(log).toContain('all-answered');
  });

  it("execs into a container's own filesystem, not the host's", async () => {
    await kubectl('run', 'exec-target', '--image=ghcr.io/flannel-io/flannel:v0.28.10', '--restart=Never', '--command', '--', 'sleep', '3600');
    await kubectl('wait', '--for=condition=Ready', 'pod/exec-target', '--timeout=180s');
    // The image has flanneld and no apt; this machine's root has apt and no flanneld.
    const r = await hostExec(server, ['kubectl', '--kubeconfig', '/etc/kubernetes/admin.conf', 'exec', 'exec-target', '--', 'sh', '-c', 'test -x /opt/bin/flanneld && ! test -e /usr/bin/apt && echo image-root']);
    expect(r.stdout.trim(), r.stderr).toBe('image-root');
    await kubectl('delete', 'pod', 'exec-target', '--wait=false');
  });

  it('has no route beyond the bridge', async () => {
    const routes = await hostExec(server, ['ip', '-4', 'route']);
    // The bridge's subnet, and the Service CIDR that ferry routes to eth0 because there is no
    // default route (Service IPs never leave the host: kube-proxy translates them); pod routes aside.
    expect(routes.stdout.trim().split('\n').filter((l) => !/cni0|flannel/.test(l)).sort()).toEqual([
      expect.stringMatching(/^10\.231\.0\.0\/24 dev eth0/),
      expect.stringMatching(/^10\.96\.0\.0\/12 dev eth0 .*src 10\.231\.0\.11/),
    ]);
    const out = await hostExec(server, ['ip', 'route', 'get', '1.1.1.1']);
    expect(out.code).not.toBe(0);
    expect(out.stderr).toMatch(/unreachable/i);
  });

  it('changes nothing on a second ferry install, and says so', async () => {
    const name = path.basename(loadState()!.bundle);
    const r = await hostExec(server, ['sh', '-c', `cd /srv && sh install.sh ${name} --trust ferry.pub --answers answers.yaml --json`]);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as { applied: string[]; skipped: string[] };
    expect(res.applied).toEqual([]);
    expect(res.skipped.length).toBeGreaterThan(10);
  });
});
