import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostExec, type HostState } from '../../scripts/site/hosts.js';
import { loadState } from '../../scripts/site/state.js';
import { site } from './harness.js';

/**
 * One real server and one real agent: `npm run site -- up --servers 1 --agents 1` installs server-1,
 * then `ferry join` on it joins agent-1 over SSH, by the cluster FQDN, with bundled content only.
 */

let server: HostState;
let agent: HostState;
let domain: string;
const kubectl = async (h: HostState, kubeconfig: string, ...args: string[]) => {
  const r = await hostExec(h, ['kubectl', '--kubeconfig', kubeconfig, ...args]);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
};
const admin = (...args: string[]) => kubectl(server, '/etc/kubernetes/admin.conf', ...args);

describe('a real agent joined by FQDN over SSH', () => {
  beforeAll(async () => {
    await site(['down']);
    const r = await site(['up', '--servers', '1', '--agents', '1', '--json']);
    expect(r.code, r.stderr.slice(-3000)).toBe(0);
    const st = loadState()!;
    [server, agent] = st.hosts as [HostState, HostState];
    domain = st.domain;
  }, 3_600_000);

  afterAll(async () => {
    if (!process.env.FERRY_SITE_KEEP) await site(['down']);
  }, 300_000);

  it('has both nodes Ready', async () => {
    const nodes = JSON.parse(await admin('get', 'nodes', '-o', 'json')) as { items: { metadata: { name: string }; status: { conditions: { type: string; status: string }[] } }[] };
    expect(nodes.items.map((n) => [n.metadata.name, n.status.conditions.find((c) => c.type === 'Ready')?.status]).sort()).toEqual([
      ['agent-1', 'True'],
      ['server-1', 'True'],
    ]);
  });

  it("answers the cluster FQDN on the agent with the agent's own IP, and the registry with the server's", async () => {
    expect((await hostExec(agent, ['dig', '+short', `@${agent.ip}`, `k8s-cluster.${domain}`])).stdout.trim()).toBe(agent.ip);
    expect((await hostExec(agent, ['dig', '+short', `@${agent.ip}`, `registry.${domain}`])).stdout.trim()).toBe(server.ip);
    const resolv = (await hostExec(agent, ['cat', '/etc/resolv.conf'])).stdout;
    expect(resolv.split('\n').filter((l) => l.startsWith('nameserver '))[0]).toBe(`nameserver ${agent.ip}`);
  });

  it('reaches the API from the agent through its own haproxy on :6443', async () => {
    const listen = (await hostExec(agent, ['ss', '-Hltnp', `sport = :6443`])).stdout;
    expect(listen).toMatch(new RegExp(`${agent.ip.replace(/\./g, '\\.')}:6443 .*haproxy`));
    // kubelet's own kubeconfig names the FQDN, which the agent's DNS answers with the agent.
    expect(await kubectl(agent, '/etc/kubernetes/kubelet.conf', 'get', 'node', 'agent-1', '-o', 'name')).toBe('node/agent-1\n');
  });

  it('runs a pod on the agent from a bundled image fetched from the site service', async () => {
    await admin('run', 'on-agent', '--image=docker.io/library/haproxy:3.0', '--restart=Never', '--overrides', JSON.stringify({ spec: { nodeName: 'agent-1' } }), '--command', '--', '/usr/sbin/haproxy', '-v');
    const end = Date.now() + 180_000;
    let phase = '';
    while (Date.now() < end && !['Succeeded', 'Failed'].includes(phase)) {
      phase = (await admin('get', 'pod', 'on-agent', '-o', 'jsonpath={.status.phase}')).trim();
      await new Promise((r) => setTimeout(r, 2000));
    }
    expect(phase).toBe('Succeeded');
    const log = (await hostExec(server, ['journalctl', '-u', 'ferry-serve.service', '--no-pager', '-o', 'cat'])).stdout;
    // The agent's containerd came to the server's site service for the image.
    expect(log).toMatch(new RegExp(`${agent.ip.replace(/\./g, '\\.')}\\S* "GET /v2/library/haproxy/blobs/sha256:[0-9a-f]{64}[^"]*" 200`));
  });
});
