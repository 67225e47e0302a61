import { describe, expect, it } from 'vitest';
import { hostExec, type HostState } from '../../scripts/site/hosts.js';
import { versions } from '../../scripts/site/config.js';
import { site, siteForFile, within } from './harness.js';

/**
 * `ferry upgrade` on real Kubernetes: a site of the previous minor release (`up --kubernetes
 * PREVIOUS --servers 3 --agents 1`) with a spread Deployment under a PodDisruptionBudget, a delta
 * bundle of the current release built `--since` the installed one, and `ferry upgrade` run on
 * server-2, killed after its first server and run again, while a probe from the agent asks the
 * workload's Service once a second.
 */

let hosts: HostState[];
let domain: string;
const byName = (n: string) => hosts.find((h) => h.name === n)!;
const servers = () => hosts.filter((h) => h.role === 'server');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ferry = (h: HostState, ...args: string[]) => hostExec(h, ['sh', '-c', 'exec ferry "$@"', 'ferry', ...args]);

async function kubectl(h: HostState, ...args: string[]): Promise<string> {
  const r = await hostExec(h, ['kubectl', '--kubeconfig', '/etc/kubernetes/admin.conf', '--request-timeout=15s', ...args]);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} on ${h.name}: ${r.stderr}`);
  return r.stdout;
}

interface StateDoc {
  current: string;
  nodes: { name: string; kubernetesVersion: string; bundle: string }[];
  operation?: { kind: string; journal: { key: string }[] };
}
async function state(h: HostState): Promise<StateDoc> {
  const r = await ferry(h, 'state', 'show', '--json');
  if (r.code !== 0) throw new Error(`ferry state show: ${r.stderr}`);
  const d = JSON.parse(r.stdout) as StateDoc & { value?: StateDoc; state?: StateDoc };
  return d.value ?? d.state ?? d;
}

const previous = () => versions('previous').KUBERNETES;
const current = () => versions('current').KUBERNETES;
let installed = '';
let installedFile = '';
let fullBytes = 0;
let delta = { bundle: '', bytes: 0, fullBytes: 0 };

/** The workload: CoreDNS answering `whoami` (its default with no Corefile), 2 replicas on 2 nodes, at least 1 always up. */
const WORKLOAD = (image: string) => `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution: [{labelSelector: {matchLabels: {app: web}}, topologyKey: kubernetes.io/hostname}]
      containers:
      - name: whoami
        image: ${image}
        args: ["-dns.port", "5353"]
        readinessProbe: {tcpSocket: {port: 5353}, periodSeconds: 2}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: default}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: web}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: dns, port: 53, targetPort: 5353, protocol: UDP}]
`;

describe('ferry upgrade: the previous Kubernetes minor to the current one, node by node, with the workload answering', () => {
  siteForFile(3, 1, async (st) => {
    hosts = st.hosts;
    domain = st.domain;
    installedFile = st.bundle.split('/').pop()!;
  }, { release: 'previous' });

  it('runs the previous release on every node, and a workload spread over two nodes under a PodDisruptionBudget', async () => {
    const s1 = byName('server-1');
    const nodes = JSON.parse(await kubectl(s1, 'get', 'nodes', '-o', 'json')) as { items: { status: { nodeInfo: { kubeletVersion: string } } }[] };
    expect(nodes.items.map((n) => n.status.nodeInfo.kubeletVersion)).toEqual(Array(4).fill(previous()));
    installed = (await state(s1)).current;
    const image = `registry.k8s.io/coredns/coredns:${versions('previous').COREDNS}`;
    const r = await hostExec(s1, ['kubectl', '--kubeconfig', '/etc/kubernetes/admin.conf', 'apply', '-f', '-'], WORKLOAD(image));
    expect(r.code, r.stderr).toBe(0);
    await within(300_000, async () => {
      const d = JSON.parse(await kubectl(s1, 'get', 'deploy', 'web', '-o', 'json')) as { status: { readyReplicas?: number } };
      if (d.status.readyReplicas !== 2) throw new Error(`web has ${d.status.readyReplicas ?? 0} ready replicas`);
    });
  });

  it('builds the current release as a delta on the installed bundle, much smaller than the full bundle', async () => {
    const d = await site(['bundle', '--release', 'current', '--since', `/srv/${installedFile}`, '--out', 'upgrade.tar', '--json']);
    expect(d.code, d.stderr.slice(-2000)).toBe(0);
    delta = JSON.parse(d.stdout) as typeof delta;
    fullBytes = delta.fullBytes;
    process.stderr.write(`upgrade bundle: delta ${delta.bytes} bytes, full ${fullBytes} bytes (${((100 * delta.bytes) / fullBytes).toFixed(1)} %)\n`);
    expect(delta.bytes).toBeLessThan(0.6 * fullBytes);
  });

  it('refuses the delta on a store without its base, naming the base, and changes nothing', async () => {
    const s1 = byName('server-1');
    const r = await ferry(s1, 'bundle', 'add', delta.bundle, '--trust', '/srv/ferry.pub', '--store', '/tmp/empty-store', '--json');
    expect(r.code).toBe(2);
    expect(r.stdout + r.stderr).toMatch(/BUNDLE_BASE_MISSING/);
    expect(r.stdout + r.stderr).toContain(installed);
  });

  it('prints the plan in a dry run, the same steps the real run journals, and changes nothing', async () => {
    const s2 = byName('server-2');
    const r = await ferry(s2, 'upgrade', delta.bundle, '--dry-run', '--json');
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    const plan = JSON.parse(r.stdout) as { dryRun: boolean; to: string; preflight: { name: string; ok: boolean }[]; steps: { key: string }[] };
    expect(plan.dryRun).toBe(true);
    expect(plan.preflight.map((p) => `${p.name} ${p.ok}`).sort()).toEqual(['disk true', 'etcd true', 'images true', 'nodes-reachable true', 'nodes-ready true']);
    expect(plan.steps.map((s) => s.key)).toEqual(['site/snapshot', 'server-2/stage', 'server-1/stage', 'server-3/stage', 'server-2/upgrade', 'server-1/upgrade', 'server-3/upgrade', 'agent-1/upgrade', 'site/addons', 'site/finish']);
    expect((await state(s2)).current).toBe(installed);
  });

  it('upgrades every node while the workload answers, resumes after being killed past its first server, and serves both releases', async () => {
    const s2 = byName('server-2');
    const agent = byName('agent-1');
    const ip = (await kubectl(s2, 'get', 'svc', 'web', '-o', 'jsonpath={.spec.clusterIP}')).trim();
    // The probe: one DNS question a second from the agent, through kube-proxy, for the whole upgrade.
    let probing = true;
    let asked = 0;
    let failed = 0;
    const probe = (async () => {
      while (probing) {
        const t = Date.now();
        // whoami answers in the additional section: the header's status says whether it answered.
        const r = await hostExec(agent, ['dig', '+time=1', '+tries=1', '-p', '53', `@${ip}`, 'whoami.example']);
        asked++;
        if (r.code !== 0 || !/status: NOERROR/.test(r.stdout)) failed++;
        await sleep(Math.max(0, 1000 - (Date.now() - t)));
      }
    })();
    const t0 = Date.now();
    try {
      // First run: killed once server-2 (the first server) is upgraded.
      const first = ferry(s2, 'upgrade', delta.bundle, '--yes');
      await within(1_800_000, async () => {
        const s = await state(s2);
        if (!s.operation?.journal.some((j) => j.key === 'server-2/upgrade')) throw new Error('server-2 not upgraded yet');
      });
      await hostExec(s2, ['pkill', '-KILL', '-f', 'ferry.mjs upgrade']);
      const killed = await first;
      expect(killed.code).not.toBe(0);
      const mid = await state(s2);
      expect(mid.nodes.find((n) => n.name === 'server-2')!.kubernetesVersion).toBe(current());
      expect(mid.nodes.filter((n) => n.kubernetesVersion === previous()).length).toBeGreaterThan(0);

      // The same command again resumes (waiting out the dead run's lease) and finishes the job.
      const again = await ferry(s2, 'upgrade', delta.bundle, '--yes', '--wait');
      expect(again.code, again.stderr.slice(-3000)).toBe(0);
      // server-2 is not upgraded again: not drained, no second kubeadm upgrade apply anywhere.
      expect(again.stderr).toMatch(/server-2\s+upgraded in an earlier run/);
      expect(again.stderr).not.toMatch(/server-2\s+draining/);
      expect(again.stderr).not.toMatch(/kubeadm upgrade apply/);
      process.stderr.write(`${again.stdout}\nupgrade wall time (both runs): ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
    } finally {
      probing = false;
      await probe;
    }
    process.stderr.write(`probe: ${failed} of ${asked} questions unanswered\n`);
    expect(asked).toBeGreaterThan(60);
    expect(failed).toBeLessThanOrEqual(8);

    const nodes = JSON.parse(await kubectl(s2, 'get', 'nodes', '-o', 'json')) as { items: { metadata: { name: string }; spec: { unschedulable?: boolean }; status: { nodeInfo: { kubeletVersion: string } } }[] };
    for (const n of nodes.items) {
      expect(n.status.nodeInfo.kubeletVersion, n.metadata.name).toBe(current());
      expect(n.spec.unschedulable ?? false, n.metadata.name).toBe(false);
    }
    for (const h of servers()) {
      for (const c of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler']) {
        expect(await kubectl(s2, '-n', 'kube-system', 'get', 'pod', `${c}-${h.name}`, '-o', 'jsonpath={.spec.containers[0].image}')).toBe(`registry.k8s.io/${c}:${current()}`);
      }
    }
    const members = await hostExec(s2, ['sh', '-c', 'curl -s --cacert /etc/kubernetes/pki/etcd/ca.crt --cert /etc/kubernetes/pki/etcd/healthcheck-client.crt --key /etc/kubernetes/pki/etcd/healthcheck-client.key -X POST -d {} https://127.0.0.1:2379/v3/cluster/member/list']);
    const list = (JSON.parse(members.stdout) as { members: { name?: string; clientURLs?: string[] }[] }).members;
    expect(list.filter((m) => m.name && m.clientURLs?.length).length).toBe(3);
    const st = await state(s2);
    expect(st.current).not.toBe(installed);
    expect(st.nodes.every((n) => n.kubernetesVersion === current() && n.bundle === st.current)).toBe(true);
    // Both releases stay served by every server: the old one's images are what a rollback or a straggler pulls.
    for (const h of servers()) {
      for (const tag of [previous(), current()]) {
        // As containerd asks a mirror: the repository without its registry, which ?ns= names.
        const r = await hostExec(h, ['curl', '-sfI', '-o', '/dev/null', '-w', '%{http_code}', '--cacert', '/etc/ferry/pki/ca.crt', `https://registry.${domain}:5443/v2/kube-apiserver/manifests/${tag}?ns=registry.k8s.io`]);
        expect(r.stdout, `${h.name} kube-apiserver:${tag}`).toBe('200');
      }
    }
    // ferry on each node's PATH is the new bundle's.
    for (const h of hosts) expect((await hostExec(h, ['ferry', '--version'])).code, h.name).toBe(0);
  }, 3_600_000);

  it('does nothing for the same bundle again, and refuses the previous one as a downgrade, changing nothing', async () => {
    const s1 = byName('server-1');
    const before = await state(s1);
    const same = await ferry(s1, 'upgrade', delta.bundle, '--yes');
    expect(same.code, same.stderr).toBe(0);
    expect(same.stdout + same.stderr).toMatch(/nothing to do/);
    const down = await ferry(s1, 'upgrade', `/srv/${installedFile}`, '--yes', '--json');
    expect(down.code).toBe(2);
    expect(down.stdout).toMatch(/UPGRADE_NOT_NEWER/);
    expect(await state(s1)).toEqual(before);
  });
});

