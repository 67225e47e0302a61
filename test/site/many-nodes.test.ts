import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { WORK } from '../../scripts/site/config.js';
import { hostExec, isUp, type HostState } from '../../scripts/site/hosts.js';
import { loadState } from '../../scripts/site/state.js';
import { site, siteForFile, within } from './harness.js';

/**
 * One site, many nodes (issue 18): the cluster state lives in the cluster, so a join runs from any
 * server, with server-1 powered off; one multi-node operation at a time; a second bundle beside the
 * installed one. Each step types the commands an operator types on a node (`ferry` on its PATH).
 */

let hosts: HostState[];
let domain: string;
const byName = (n: string) => hosts.find((h) => h.name === n)!;
const refresh = () => (hosts = loadState()!.hosts);
/** Hosts powered off by the test: a killed host's namespaces may outlive its processes, so isUp alone cannot tell. */
const poweredOff = new Set<string>();
const running = () => hosts.filter((h) => isUp(h) && !poweredOff.has(h.name));

async function kubectl(h: HostState, ...args: string[]): Promise<string> {
  const r = await hostExec(h, ['kubectl', '--kubeconfig', '/etc/kubernetes/admin.conf', '--request-timeout=15s', ...args]);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} on ${h.name}: ${r.stderr}`);
  return r.stdout;
}

/** `ferry ARGS` typed on a node: the launcher on its PATH. */
const ferry = (h: HostState, ...args: string[]) => hostExec(h, ['ferry', ...args]);

/** Polls fn until it returns without throwing, or throws its last error at the deadline. */
interface NodeList {
  items: { metadata: { name: string }; status: { conditions: { type: string; status: string }[] } }[];
}
const readiness = (l: NodeList) => Object.fromEntries(l.items.map((n) => [n.metadata.name, n.status.conditions.find((c) => c.type === 'Ready')?.status]));

const dig = async (h: HostState, name: string) => (await hostExec(h, ['dig', '+short', '+time=3', '+tries=2', `@${h.ip}`, name])).stdout.trim().split('\n').filter(Boolean).sort();

interface StateDoc {
  nodes: { name: string; ip: string; role: string }[];
}
/** The document of `ferry state show --json` or of a mirror file (tolerates a {value} envelope). */
const stateOf = (text: string): StateDoc => {
  const d = JSON.parse(text) as StateDoc & { value?: StateDoc; state?: StateDoc };
  return d.value ?? d.state ?? d;
};
const nodeNames = (d: StateDoc) => d.nodes.map((n) => n.name).sort();

async function stateShow(h: HostState): Promise<StateDoc> {
  const r = await ferry(h, 'state', 'show', '--json');
  if (r.code !== 0) throw new Error(`ferry state show on ${h.name}: ${r.stderr}`);
  return stateOf(r.stdout);
}

async function mirror(h: HostState): Promise<StateDoc> {
  const r = await hostExec(h, ['cat', '/var/lib/ferry/site/state.json']);
  if (r.code !== 0) throw new Error(`no state mirror on ${h.name}: ${r.stderr}`);
  return stateOf(r.stdout);
}

/** The backends of the agent's haproxy, as its pod mounts the config. */
async function lbBackends(agent: HostState): Promise<string[]> {
  const cfg = (await hostExec(agent, ['sh', '-c', 'cat /proc/$(pgrep -x haproxy | head -1)/root/etc/ferry-lb/haproxy.cfg'])).stdout;
  return [...cfg.matchAll(/^\s*server \S+ (\S+):6443 /gm)].map((m) => m[1]!).sort();
}

interface JoinOut {
  nodes: { name: string; host: string; role: string; ok: boolean; seconds: number; error?: string }[];
}

/** `site join NAME --from HOST`: ferry join typed on HOST; its JSON and exit code. */
async function joinFrom(name: string, from: string): Promise<{ code: number; out?: JoinOut; stderr: string }> {
  const r = await site(['join', name, '--from', from, '--json']);
  let out: JoinOut | undefined;
  try {
    out = JSON.parse(r.stdout) as JoinOut;
  } catch {
    /* refused before any JSON */
  }
  return { code: r.code, out, stderr: r.stderr };
}

describe('one site, many nodes: joins from any server, one operation at a time, two bundles side by side', () => {
  siteForFile(3, 1, (st) => {
    hosts = st.hosts;
    domain = st.domain;
  });

  it('joins agent-2 from server-2 while server-1 is powered off, and server-1 learns of it when it comes back', async () => {
    const backendsBefore = await lbBackends(byName('agent-1'));
    expect(backendsBefore).toEqual(hosts.filter((h) => h.role === 'server').map((h) => h.ip).sort());

    expect((await site(['kill', 'server-1'])).code).toBe(0);
    poweredOff.add('server-1');
    try {
      await joinWithServer1Off(backendsBefore);
    } finally {
      // The tests after this one need server-1 running, whatever happened here.
      if (poweredOff.has('server-1')) {
        await site(['start', 'server-1']);
        poweredOff.delete('server-1');
        refresh();
      }
    }
  });

  async function joinWithServer1Off(backendsBefore: string[]): Promise<void> {
    const s2 = byName('server-2');
    const added = await site(['add', 'agent-2', '--role', 'agent', '--json']);
    expect(added.code, added.stderr.slice(-2000)).toBe(0);
    refresh();
    const a2 = byName('agent-2');

    // The API answers through server-2 once etcd has settled on its two remaining members.
    await within(120_000, () => kubectl(s2, 'get', 'nodes', '-o', 'name'));
    const j = await joinFrom('agent-2', 'server-2');
    expect(j.code, j.stderr.slice(-3000)).toBe(0);
    expect(j.out?.nodes.map((n) => ({ name: n.name, ok: n.ok }))).toEqual([{ name: 'agent-2', ok: true }]);
    process.stderr.write(`join of agent-2 from server-2 (server-1 down): ${j.out?.nodes[0]?.seconds} s\n`);

    const ready = await within(300_000, async () => {
      const r = readiness(JSON.parse(await kubectl(s2, 'get', 'nodes', '-o', 'json')) as NodeList);
      if (r['agent-2'] !== 'True') throw new Error(`agent-2 is not Ready: ${JSON.stringify(r)}`);
    });
    process.stderr.write(`agent-2 Ready ${ready.seconds} s after its join\n`);

    // Its own site DNS answers the cluster FQDN with its own address; every running node knows it.
    await within(180_000, async () => expect(await dig(a2, `k8s-cluster.${domain}`)).toEqual([a2.ip]));
    for (const h of running()) await within(180_000, async () => expect(await dig(h, `agent-2.${domain}`), h.name).toEqual([a2.ip]));
    // The join of an agent leaves the agents' API backends as they were: the three servers.
    expect(await lbBackends(byName('agent-1'))).toEqual(backendsBefore);
    await within(180_000, async () => expect(await lbBackends(a2)).toEqual(backendsBefore));

    expect((await site(['start', 'server-1'])).code).toBe(0);
    poweredOff.delete('server-1');
    refresh();
    const s1 = byName('server-1');
    const five = ['agent-1', 'agent-2', 'server-1', 'server-2', 'server-3'];
    // The mirror refreshes on a timer (30 s) once server-1's API answers again: generous bounds.
    const back = await within(600_000, async () => expect(nodeNames(await mirror(s1))).toEqual(five));
    process.stderr.write(`server-1's state mirror lists agent-2 ${back.seconds} s after its boot\n`);
    await within(300_000, async () => expect(await dig(s1, `agent-2.${domain}`)).toEqual([a2.ip]));
    for (const h of hosts.filter((x) => x.role === 'server')) {
      expect(nodeNames(await within(120_000, () => stateShow(h)).then((r) => r.value)), h.name).toEqual(five);
      expect(nodeNames(await within(120_000, () => mirror(h)).then((r) => r.value)), `${h.name} mirror`).toEqual(five);
    }
  }

  it('runs one of two joins started at once from two servers and refuses the other while it holds the lease', async () => {
    for (const n of ['agent-3', 'agent-4']) {
      const r = await site(['add', n, '--role', 'agent', '--json']);
      expect(r.code, r.stderr.slice(-2000)).toBe(0);
    }
    refresh();
    const before = nodeNames(await stateShow(byName('server-2')));
    const [j3, j4] = await Promise.all([joinFrom('agent-3', 'server-2'), joinFrom('agent-4', 'server-3')]);
    const ran = [j3, j4].filter((j) => j.code === 0);
    const refused = [j3, j4].filter((j) => j.code !== 0);
    expect(ran.length, `${j3.stderr.slice(-1500)}\n${j4.stderr.slice(-1500)}`).toBeGreaterThanOrEqual(1);
    for (const j of ran) expect(j.out?.nodes.every((n) => n.ok)).toBe(true);
    // The refused one names the lease's holder and leaves nothing behind; the one that ran is in the state.
    for (const j of refused) {
      expect(j.code).toBe(2);
      expect(j.stderr).toMatch(/error\[OPERATION_IN_PROGRESS\]/);
    }
    const joined = ran.flatMap((j) => j.out!.nodes.map((n) => n.name));
    const want = [...before, ...joined].sort();
    for (const h of hosts.filter((x) => x.role === 'server')) expect(nodeNames(await stateShow(h)), h.name).toEqual(want);
    expect(await stateShow(byName('server-2')).then((s) => (s as { operation?: unknown }).operation)).toBeUndefined();
  });

  it('adds a second signed bundle beside the installed one and serves the images of both', async () => {
    const s2 = byName('server-2');
    const b = await site(['bundle', '--version', '0.2.0', '--out', 'kubernetes-0.2.0.ferry.tar', '--json']);
    expect(b.code, b.stderr.slice(-2000)).toBe(0);
    const built = JSON.parse(b.stdout.trim().split('\n').pop()!) as { bundle: string; bytes: number };
    expect(built.bundle).toBe('/srv/kubernetes-0.2.0.ferry.tar');
    expect(built.bytes).toBeGreaterThan(1_000_000);

    const add = await ferry(s2, 'bundle', 'add', built.bundle, '--trust', '/srv/ferry.pub', '--json');
    expect(add.code, add.stderr).toBe(0);
    const list = await ferry(s2, 'bundle', 'list', '--json');
    expect(list.code, list.stderr).toBe(0);
    const bundles = (JSON.parse(list.stdout) as { bundles: { id: string; version: string; current: boolean }[] }).bundles;
    expect(bundles.map((x) => x.version).sort()).toEqual(['0.1.0', '0.2.0']);
    // The cluster still runs the bundle it was installed from.
    expect(bundles.find((x) => x.current)?.version).toBe('0.1.0');

    // Every image each bundle pins, by digest, through server-2's own site service.
    const locks = [path.join(WORK, 'kubernetes-0.1.0.ferry.tar.images.lock'), path.join(WORK, 'bundles/kubernetes-0.2.0.ferry.tar.images.lock')];
    for (const lock of locks) {
      const images = (parse(readFileSync(lock, 'utf8')) as { images: { name: string; digest: string }[] }).images;
      expect(images.length, lock).toBeGreaterThan(5);
      for (const img of images) {
        const [registry, ...rest] = img.name.replace(/[:@].*$/, '').split('/');
        for (const ref of [img.digest, img.name.slice(img.name.lastIndexOf(':') + 1)]) {
          const url = `https://registry.${domain}:5443/v2/${rest.join('/')}/manifests/${ref}?ns=${registry}`;
          const r = await hostExec(s2, ['curl', '-sfI', '-o', '/dev/null', '-w', '%{http_code}', '--cacert', '/etc/ferry/pki/ca.crt', url]);
          expect(r.stdout, `${img.name} (${ref}) from ${path.basename(lock)}`).toBe('200');
        }
      }
    }
  });

  it('refuses ferry install of a bundle of another Kubernetes release on an installed server, changing nothing', async () => {
    // The bundle claims v1.37.3 (its control-plane images are this site's v1.37.2 build, retagged;
    // see `site bundle --relabel-kubernetes`): the guard refuses it before any of it runs.
    const b = await site(['bundle', '--version', '0.3.0', '--relabel-kubernetes', 'v1.37.3', '--out', 'kubernetes-v1.37.3.ferry.tar', '--json']);
    expect(b.code, b.stderr.slice(-2000)).toBe(0);
    const s1 = byName('server-1');
    // Every file ferry or kubeadm keep on the server, with its size and mtime (the state mirror and logs move on their own).
    const snapshot = async () =>
      (await hostExec(s1, ['sh', '-c', "find /etc/kubernetes /etc/ferry /etc/containerd /etc/systemd/system /usr/local/bin /var/lib/ferry -xdev -path /var/lib/ferry/site -prune -o -type f -printf '%p %s %T@\\n' | sort"])).stdout;
    const before = await snapshot();
    expect(before).toContain('/etc/kubernetes/admin.conf');
    const version = async () => (await kubectl(byName('server-2'), 'get', 'node', 'server-1', '-o', 'jsonpath={.status.nodeInfo.kubeletVersion}')).trim();
    const kubeletBefore = await version();

    const r = await ferry(s1, 'install', '/srv/kubernetes-v1.37.3.ferry.tar', '--trust', '/srv/ferry.pub', '--answers', '/srv/answers.yaml', '--yes');
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/error\[INSTALL_VERSION_MISMATCH\]/);
    expect(r.stderr).toMatch(/v1\.37\.3/);
    expect(r.stderr).toMatch(/ferry upgrade/);
    expect(await snapshot()).toBe(before);
    expect(await version()).toBe(kubeletBefore);
  });
});
