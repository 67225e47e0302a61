import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SiteState } from '../../src/cluster/state.js';
import { Host } from '../../src/install/host.js';
import { FERRY_DIGEST } from '../../src/install/paths.js';
import { joinNodes, type JoinOptions } from '../../src/ops/join.js';
import { connectNode, ferryPayload, uploadFiles } from '../../src/ops/remote.js';
import { silentReporter } from '../../src/util/progress.js';
import { memoryLease, memoryState } from '../helpers/memory-state.js';
import { startLab, type Lab, type NetnsHost } from '../helpers/netns.js';
import { execFileP, tmpdir } from '../helpers/peers.js';
import { writeStandins } from '../helpers/standins.js';

/*
 * The join operation against a real sshd in a network namespace, run in this process with the
 * site state and lease as in-memory STAND-INS (the real ones live in the cluster). The node's
 * "runtime" is a script that acts as node-join: it counts its runs on the node. The DNS and LB
 * roll-out needs a cluster, so a stand-in counts it too.
 */

let work: string;
let lab: Lab;
let node: NetnsHost;
let server: string;
let standins: string;
let knownHosts: string;
let runs = 0;

const NODE_JOIN_STANDIN = `#!/bin/sh
root=/; prev=
for a in "$@"; do [ "$prev" = --root ] && root="$a"; prev="$a"; done
cat > "$root/payload.json"
echo run >> "$root/node-join.runs"
echo "node-join stand-in ran" >&2
`;

async function firstServer(root: string): Promise<void> {
  const b = path.join(root, 'var/lib/ferry/bundle');
  await fs.mkdir(path.join(b, 'runtime/linux-amd64'), { recursive: true });
  await fs.mkdir(path.join(b, 'images'), { recursive: true });
  await fs.writeFile(path.join(b, 'bundle.json'), JSON.stringify({ formatVersion: 1, name: 'k8s', version: '0.1.0', created: '2026-01-01T00:00:00Z', ferryVersion: '0.1.0', platforms: ['linux/amd64'], kubernetes: { version: 'v1.37.2' }, images: [], charts: [], files: [], runtime: [{ platform: 'linux/amd64', version: 'v24.0.0', path: 'runtime/linux-amd64/node', sha256: '0'.repeat(64), size: 1 }], signer: { fingerprint: '', publicKey: '' }, contentSize: 0, entries: 0 }));
  await fs.writeFile(path.join(b, 'images/index.json'), JSON.stringify({ schemaVersion: 2, manifests: [] }));
  await fs.writeFile(path.join(b, 'runtime/linux-amd64/node'), NODE_JOIN_STANDIN, { mode: 0o755 });
  // A ferry tree of many small files, as the real one is.
  for (let i = 0; i < 20; i++) {
    await fs.mkdir(path.join(b, 'ferry/chunks'), { recursive: true });
    await fs.writeFile(path.join(b, `ferry/chunks/c${i}.mjs`), `// chunk ${i}\n`);
  }
  await fs.writeFile(path.join(b, 'ferry/ferry.mjs'), '// ferry\n');
  await fs.mkdir(path.join(root, 'etc/ferry/pki'), { recursive: true });
  await fs.mkdir(path.join(root, 'etc/kubernetes/pki'), { recursive: true });
  const ca = (key: string, crt: string, cn: string) => execFileP('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', crt, '-subj', `/CN=${cn}`, '-days', '1']);
  await ca(path.join(root, 'etc/ferry/pki/ca.key'), path.join(root, 'etc/ferry/pki/ca.crt'), 'site');
  await ca(path.join(root, 'k8s-ca.key'), path.join(root, 'etc/kubernetes/pki/ca.crt'), 'kubernetes');
  // applyObjects of no objects (no flannel) reads the kubeconfig and sends nothing.
  await fs.writeFile(path.join(root, 'etc/kubernetes/admin.conf'), 'apiVersion: v1\nkind: Config\nclusters: [{name: k, cluster: {server: "https://127.0.0.1:1"}}]\ncontexts: [{name: k, context: {cluster: k, user: a}}]\ncurrent-context: k\nusers: [{name: a, user: {token: x}}]\n');
}

const state = (): SiteState => ({
  apiVersion: 'ferry.dev/v1alpha1',
  kind: 'SiteState',
  answers: { domain: 'site.test', clusterFqdn: 'k8s-cluster.site.test', podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12', ssh: { user: 'root', identityFile: lab.identity, knownHosts } },
  nodes: [{ name: 'k8s-server-01', ip: lab.gatewayIp, role: 'server', platform: 'linux/amd64', kubernetesVersion: 'v1.37.2', bundle: 'k8s-0.1.0', joinedAt: '2026-01-01T00:00:00Z' }],
  bundles: [],
  current: 'k8s-0.1.0',
});

/** The files the SFTP server opened under a prefix since `from` (a length of its log), each once. */
async function opensUnder(prefix: string, from: number): Promise<string[]> {
  const paths = (await node.sftpLog()).slice(from).split('\n').flatMap((l) => /open "([^"]+)"/.exec(l)?.[1] ?? []);
  return [...new Set(paths.filter((p) => p.startsWith(prefix)).map((p) => p.replace(/\.ferry-upload$/, '')))];
}

function options(o: { site: ReturnType<typeof memoryState>; remoteRoot: string; name: string; failAt?: string; rolled: string[][] }): JoinOptions {
  return {
    host: new Host(server, { ...process.env, PATH: `${standins}:${process.env.PATH}` }),
    site: o.site,
    lease: memoryLease(),
    targets: [{ host: node.ip, name: o.name, role: 'agent' }],
    reporter: silentReporter,
    confirmHostKey: async () => false,
    remoteRoot: o.remoteRoot,
    ...(o.failAt ? { failAt: o.failAt } : {}),
    applySite: async (nodes) => void o.rolled.push(nodes.map((n) => n.name)),
  };
}

beforeAll(async () => {
  work = await tmpdir('ferry-join-resume-');
  lab = await startLab(path.join(work, 'lab'), ['node']);
  node = lab.hosts[0]!;
  server = path.join(work, 'server');
  await firstServer(server);
  standins = await writeStandins(path.join(work, 'standins'));
  knownHosts = path.join(work, 'known_hosts');
  await fs.writeFile(knownHosts, `${node.ip} ${node.hostKeyPub.split(' ').slice(0, 2).join(' ')}\n`);
}, 120_000);

afterAll(async () => {
  await lab?.down();
  await fs.rm(work, { recursive: true, force: true });
});

const KEYS = ['upload', 'node-join', 'cni-node', 'site/membership', 'site/bootstrap'];

describe("a join stopped at each step of its journal resumes there when run again", () => {
  it.each(KEYS.map((k, i) => [k, i] as const))('stopped before %s: the re-run skips the steps before it and completes', async (k, i) => {
    const name = `k8s-agent-${++runs}`;
    const key = k.startsWith('site/') ? k : `${name}/${k}`;
    const remote = path.join(work, `remote-${runs}`);
    const site = memoryState(state());
    const rolled: string[][] = [];
    await expect(joinNodes(options({ site, remoteRoot: remote, name, failAt: key, rolled }))).rejects.toThrow(`stopped before ${key}`);
    const before = [`${name}/upload`, `${name}/node-join`, `${name}/cni-node`, 'site/membership', 'site/bootstrap'].slice(0, i);
    expect(site.current()!.operation!.journal.map((e) => e.key)).toEqual(before);
    const nodeJoinRuns = async () => (await fs.readFile(path.join(remote, 'node-join.runs'), 'utf8').catch(() => '')).split('\n').filter(Boolean).length;
    expect(await nodeJoinRuns()).toBe(i > 1 ? 1 : 0);
    const stamp = await fs.readFile(path.join(remote, FERRY_DIGEST), 'utf8').catch(() => undefined);
    expect(stamp !== undefined).toBe(i > 0);

    const log = (await node.sftpLog()).length;
    const rows = await joinNodes(options({ site, remoteRoot: remote, name, rolled }));
    expect(rows).toMatchObject([{ name, ok: true }]);
    // Nothing before the stop ran again: no upload at all once it was done, node-join once.
    if (i > 0) expect(await opensUnder(remote, log)).toEqual([]);
    else expect((await opensUnder(`${remote}/var/lib/ferry/ferry/`, log)).length).toBe(21);
    expect(await nodeJoinRuns()).toBe(1);
    expect(JSON.parse(await fs.readFile(path.join(remote, 'payload.json'), 'utf8'))).toMatchObject({ name, role: 'agent', ip: node.ip, serverIps: [lab.gatewayIp] });
    // The operation ended; the node is a member, and the DNS and LB rolled out once, with it.
    const s = site.current()!;
    expect(s.operation).toBeUndefined();
    expect(s.nodes.map((n) => n.name)).toEqual(['k8s-server-01', name]);
    expect(s.nodes[1]).toMatchObject({ ip: node.ip, role: 'agent', platform: 'linux/amd64', kubernetesVersion: 'v1.37.2', bundle: 'k8s-0.1.0' });
    expect(rolled).toEqual([['k8s-server-01', name]]);
  }, 90_000);
});

describe('ferry and its runtime go to a node once per digest', () => {
  it('a second join to the same node uploads neither; a changed ferry tree is uploaded again', async () => {
    const remote = path.join(work, 'remote-shared');
    const rolled: string[][] = [];
    const site = memoryState(state());
    await joinNodes(options({ site, remoteRoot: remote, name: 'k8s-agent-a', rolled }));
    const digest = await fs.readFile(path.join(remote, FERRY_DIGEST), 'utf8');
    let log = (await node.sftpLog()).length;
    // Another operation (the node reset and joined again under another name): the journal is new, the stamp is there.
    await joinNodes(options({ site, remoteRoot: remote, name: 'k8s-agent-b', rolled }));
    expect(await opensUnder(`${remote}/var/lib/ferry/`, log)).toEqual([]);
    expect((await opensUnder(`${remote}/etc/ferry/pki/ca.crt`, log)).length).toBeGreaterThan(0);
    expect(await fs.readFile(path.join(remote, FERRY_DIGEST), 'utf8')).toBe(digest);

    await fs.writeFile(path.join(server, 'var/lib/ferry/bundle/ferry/ferry.mjs'), '// ferry, next version\n');
    log = (await node.sftpLog()).length;
    await joinNodes(options({ site, remoteRoot: remote, name: 'k8s-agent-c', rolled }));
    expect((await opensUnder(`${remote}/var/lib/ferry/ferry/`, log)).length).toBe(21);
    expect(await fs.readFile(path.join(remote, 'var/lib/ferry/ferry/ferry.mjs'), 'utf8')).toBe('// ferry, next version\n');
    expect(await fs.readFile(path.join(remote, FERRY_DIGEST), 'utf8')).not.toBe(digest);
  }, 90_000);

  it('uploads the same tree serially and in parallel (figures for the report)', async () => {
    // dist/ferry and this machine's node: the tree and runtime a real join carries.
    const root = path.join(work, 'server-real');
    await fs.cp(server, root, { recursive: true });
    const b = path.join(root, 'var/lib/ferry/bundle');
    await fs.rm(path.join(b, 'ferry'), { recursive: true });
    await fs.cp(path.join(process.cwd(), 'dist/ferry'), path.join(b, 'ferry'), { recursive: true });
    await fs.copyFile(process.execPath, path.join(b, 'runtime/linux-amd64/node'));
    const local = new Host(root);
    const manifest = JSON.parse(await fs.readFile(path.join(b, 'bundle.json'), 'utf8'));
    const payload = await ferryPayload(local, manifest, 'linux/amd64');
    const figures: string[] = [];
    for (const parallel of [1, 8, 1, 8]) {
      const n = await connectNode({ name: `bench-${parallel}`, host: node.ip }, { ssh: state().answers.ssh, confirmHostKey: async () => false, remoteRoot: path.join(work, `bench-${parallel}`) });
      try {
        const tree = payload.files.filter((f) => !f.remote.endsWith('/runtime/node'));
        const t0 = Date.now();
        await uploadFiles(n, tree, parallel);
        const t1 = Date.now();
        await uploadFiles(n, payload.files, parallel);
        figures.push(`parallel=${parallel}: ferry tree (${tree.length} files) ${((t1 - t0) / 1000).toFixed(2)}s, tree + runtime ${((Date.now() - t1) / 1000).toFixed(2)}s`);
      } finally {
        n.close();
      }
    }
    console.log(`ferry tree + runtime upload: ${figures.join('; ')}`);
    const { stdout } = await execFileP('diff', ['-r', path.join(work, 'bench-1/var/lib/ferry/ferry'), path.join(work, 'bench-8/var/lib/ferry/ferry')]);
    expect(stdout).toBe('');
    const sha = async (f: string) => (await execFileP('sha256sum', [f])).stdout.split(' ')[0];
    expect(await sha(path.join(work, 'bench-8/var/lib/ferry/runtime/node'))).toBe(await sha(process.execPath));
  }, 300_000);
});
