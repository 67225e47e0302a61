import { describe, expect, it } from 'vitest';
import { hostExec, type HostState } from '../../scripts/site/hosts.js';
import { loadState } from '../../scripts/site/state.js';
import { built, versions } from '../../scripts/site/config.js';
import { site, siteForFile, within } from './harness.js';

/**
 * The seed architecture on real Kubernetes: `npm run site -- up --servers 3 --agents 1` installs
 * server-1, then one `ferry join` on it joins server-2 and server-3 as control-plane nodes and
 * agent-1, over SSH, by the cluster FQDN, with bundled content only. Then servers lose power.
 */

let hosts: HostState[];
let domain: string;
const byName = (n: string) => hosts.find((h) => h.name === n)!;
const servers = () => hosts.filter((h) => h.role === 'server');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function kubectl(h: HostState, ...args: string[]): Promise<string> {
  const r = await hostExec(h, ['kubectl', '--kubeconfig', '/etc/kubernetes/admin.conf', '--request-timeout=15s', ...args]);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} on ${h.name}: ${r.stderr}`);
  return r.stdout;
}

/** Polls fn until it returns without throwing, or throws its last error at the deadline. */
interface NodeList {
  items: { metadata: { name: string }; status: { conditions: { type: string; status: string }[] } }[];
}
const readiness = (l: NodeList) => Object.fromEntries(l.items.map((n) => [n.metadata.name, n.status.conditions.find((c) => c.type === 'Ready')?.status]));

const etcdctl = (h: HostState, ...args: string[]) =>
  hostExec(h, [
    `${built('etcd', versions().ETCD)}/etcdctl`,
    '--endpoints=https://127.0.0.1:2379',
    '--cacert=/etc/kubernetes/pki/etcd/ca.crt',
    '--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt',
    '--key=/etc/kubernetes/pki/etcd/healthcheck-client.key',
    '--command-timeout=10s',
    ...args,
  ]);

const dig = async (h: HostState, name: string) => (await hostExec(h, ['dig', '+short', `@${h.ip}`, name])).stdout.trim().split('\n').filter(Boolean).sort();

async function podPhase(h: HostState, name: string, timeoutMs: number): Promise<string> {
  const end = Date.now() + timeoutMs;
  let phase = '';
  while (Date.now() < end && !['Succeeded', 'Failed'].includes(phase)) {
    phase = (await kubectl(h, 'get', 'pod', name, '-o', 'jsonpath={.status.phase}').catch(() => '')).trim();
    await sleep(2000);
  }
  return phase;
}

describe('three real servers and an agent, joined by FQDN, surviving the loss of a server', () => {
  siteForFile(3, 1, async (st) => {
    hosts = st.hosts;
    domain = st.domain;
    // The agent gets an admin kubeconfig, as an operator would carry one; it names the FQDN.
    const conf = (await hostExec(byName('server-1'), ['cat', '/etc/kubernetes/admin.conf'])).stdout;
    await hostExec(byName('agent-1'), ['sh', '-c', 'cat > /etc/kubernetes/admin.conf'], conf);
  });

  it('has all four nodes Ready', async () => {
    const nodes = JSON.parse(await kubectl(byName('server-1'), 'get', 'nodes', '-o', 'json')) as NodeList;
    expect(readiness(nodes)).toEqual({ 'agent-1': 'True', 'server-1': 'True', 'server-2': 'True', 'server-3': 'True' });
  });

  it('grows etcd to three started members, one per server', async () => {
    const r = await etcdctl(byName('server-2'), 'member', 'list', '-w', 'json');
    expect(r.code, r.stderr).toBe(0);
    const members = (JSON.parse(r.stdout) as { members: { name: string; isLearner?: boolean; clientURLs?: string[] }[] }).members;
    expect(members.map((m) => m.name).sort()).toEqual(['server-1', 'server-2', 'server-3']);
    // Started members have client URLs; a learner or an unstarted member has none.
    expect(members.every((m) => !m.isLearner && (m.clientURLs ?? []).length === 1)).toBe(true);
  });

  it("answers the cluster FQDN on every host with the host's own IP, and the registry with every server", async () => {
    const serverIps = servers().map((h) => h.ip).sort();
    for (const h of hosts) {
      expect(await dig(h, `k8s-cluster.${domain}`), h.name).toEqual([h.ip]);
      expect(await dig(h, `registry.${domain}`), h.name).toEqual(serverIps);
    }
  });

  it("lists only the site DNS in every host's resolver, its own first, and keeps the search domains it had", async () => {
    const siteIps = [...servers().map((h) => h.ip), ...hosts.map((h) => h.ip)];
    for (const h of hosts) {
      const resolv = (await hostExec(h, ['cat', '/etc/resolv.conf'])).stdout.split('\n');
      const ns = resolv.filter((l) => l.startsWith('nameserver ')).map((l) => l.split(/\s+/)[1]);
      expect(ns[0], h.name).toBe(h.ip);
      for (const n of ns) expect(siteIps, `${h.name} asks ${n}`).toContain(n);
      expect(resolv.find((l) => l.startsWith('search ')), h.name).toBe(`search ${domain} corp.test`);
    }
  });

  it('forwards names outside the site domain to the resolver the first server had', async () => {
    for (const h of hosts) expect(await dig(h, 'intranet.corp.test'), h.name).toEqual(['10.231.0.99']);
  });

  it("serves the bundle from every server's own site service, with its own certificate", async () => {
    for (const h of servers()) {
      const r = await hostExec(h, ['sh', '-c', `echo | openssl s_client -connect ${h.ip}:5443 -servername registry.${domain} 2>/dev/null | openssl x509 -noout -ext subjectAltName`]);
      expect(r.stdout, h.name).toContain(`IP Address:${h.ip}`);
      const cat = await hostExec(h, ['curl', '-sf', '--cacert', '/etc/ferry/pki/ca.crt', `https://registry.${domain}:5443/v2/_catalog`]);
      expect(cat.code, `${h.name}: ${cat.stderr}`).toBe(0);
    }
  });

  it("balances the agent's API over all three servers with health checks", async () => {
    const agent = byName('agent-1');
    const listen = (await hostExec(agent, ['ss', '-Hltnp', 'sport = :6443'])).stdout;
    expect(listen).toMatch(/haproxy/);
    // The config the agent's haproxy runs, as its pod mounts it.
    const cfg = (await hostExec(agent, ['sh', '-c', 'cat /proc/$(pgrep -x haproxy | head -1)/root/etc/ferry-lb/haproxy.cfg'])).stdout;
    for (const s of servers()) expect(cfg).toMatch(new RegExp(`server \\S+ ${s.ip.replace(/\./g, '\\.')}:6443 .*check`));
  });

  it('keeps the API, the scheduler and the images up when server-1 loses power, and takes server-1 back', async () => {
    const agent = byName('agent-1');
    const s2 = byName('server-2');
    const k = await site(['kill', 'server-1']);
    expect(k.code, k.stderr).toBe(0);
    // Through the agent's own haproxy, and through server-2's own API server, by the FQDN.
    const viaAgent = await within(60_000, () => kubectl(agent, '--server', `https://k8s-cluster.${domain}:6443`, 'get', 'nodes', '-o', 'name'));
    const viaServer2 = await within(60_000, () => kubectl(s2, '--server', `https://k8s-cluster.${domain}:6443`, 'get', 'nodes', '-o', 'name'));
    process.stderr.write(`failover: API answered the agent after ${viaAgent.seconds} s, server-2 after ${viaServer2.seconds} s\n`);
    expect(viaAgent.value).toContain('node/agent-1');
    expect(viaServer2.value).toContain('node/server-1');

    // A new pod, scheduled on the agent, with an image the agent has never pulled.
    const image = `registry.k8s.io/etcd:${versions().ETCD.replace(/^v/, '')}-0`;
    await within(60_000, () => kubectl(s2, 'run', 'after-loss', `--image=${image}`, '--restart=Never', '--overrides', JSON.stringify({ spec: { nodeSelector: { 'kubernetes.io/hostname': 'agent-1' } } }), '--command', '--', 'etcd', '--version'));
    const phase = await podPhase(s2, 'after-loss', 240_000);
    if (phase !== 'Succeeded') {
      // What the pod waited on, for the log of a failed run.
      const why = await kubectl(s2, 'describe', 'pod', 'after-loss').catch((e: Error) => e.message);
      const taints = await kubectl(s2, 'get', 'nodes', '-o', 'jsonpath={range .items[*]}{.metadata.name} {.spec.taints} {.status.conditions[?(@.type=="Ready")]}{"\\n"}{end}').catch((e: Error) => e.message);
      const kubelet = (await hostExec(agent, ['sh', '-c', 'journalctl -u kubelet --no-pager -o short-precise | tail -60'])).stdout;
      process.stderr.write(`after-loss is ${phase}:\n${why}\nnodes:\n${taints}\nkubelet on agent-1:\n${kubelet}\n`);
    }
    expect(phase).toBe('Succeeded');
    const served = await Promise.all(
      ['server-2', 'server-3'].map(async (n) => (await hostExec(byName(n), ['journalctl', '-u', 'ferry-serve.service', '--no-pager', '-o', 'cat'])).stdout),
    );
    expect(served.join('\n')).toMatch(new RegExp(`${agent.ip.replace(/\./g, '\\.')}\\S* "GET /v2/etcd/blobs/sha256:[0-9a-f]{64}[^"]*" 200`));

    // The control plane notices the loss (the node lease runs out) before server-1 comes back.
    await within(180_000, async () => {
      const r = readiness(JSON.parse(await kubectl(s2, 'get', 'nodes', '-o', 'json')) as NodeList);
      if (r['server-1'] === 'True') throw new Error('server-1 still counts as Ready');
    });
    const s = await site(['start', 'server-1']);
    expect(s.code, s.stderr).toBe(0);
    hosts = loadState()!.hosts;
    const back = await within(300_000, async () => {
      const r = readiness(JSON.parse(await kubectl(s2, 'get', 'nodes', '-o', 'json')) as NodeList);
      if (r['server-1'] !== 'True') throw new Error(`server-1 is not Ready: ${JSON.stringify(r)}`);
      return r;
    });
    process.stderr.write(`server-1 Ready again ${back.seconds} s after its boot\n`);
    const m = await within(120_000, async () => {
      const r = await etcdctl(byName('server-1'), 'endpoint', 'health');
      if (r.code !== 0) throw new Error(r.stderr);
      return r.stdout + r.stderr;
    });
    expect(m.value).toMatch(/is healthy/);
  });

  it('degrades when two of three servers are lost: etcd has no quorum and the API refuses writes', async () => {
    const s3 = byName('server-3');
    // Healthy first: a write works.
    await within(60_000, () => kubectl(s3, 'create', 'configmap', 'before-loss', '--from-literal=a=b'));
    for (const n of ['server-1', 'server-2']) expect((await site(['kill', n])).code).toBe(0);
    const health = await within(60_000, async () => {
      const r = await etcdctl(s3, 'endpoint', 'health');
      if (r.code === 0) throw new Error('etcd still reports healthy');
      return r.stderr + r.stdout;
    });
    expect(health.value).toMatch(/unhealthy|deadline exceeded|no leader/i);
    const write = await hostExec(s3, ['kubectl', '--kubeconfig', '/etc/kubernetes/admin.conf', '--request-timeout=20s', 'create', 'configmap', 'after-loss', '--from-literal=a=b']);
    expect(write.code).not.toBe(0);
    expect(write.stderr).toMatch(/timeout|timed out|unavailable|deadline|etcdserver|the server was unable/i);
  });
});
