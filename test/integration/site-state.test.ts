import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { beginOperation } from '../../src/cluster/journal.js';
import { breakLease, kubeLease } from '../../src/cluster/lease.js';
import { STATE_MIRROR } from '../../src/cluster/mirror.js';
import { addNodes, openSiteState, refreshMirror } from '../../src/cluster/site.js';
import type { NodeRecord, SiteState } from '../../src/cluster/state.js';
import { getLease, putLease } from '../../src/kube/client.js';
import type { BundleManifest } from '../../src/bundle/format.js';
import { clusterNodes, ensureSiteState } from '../../src/install/cluster.js';
import { Host } from '../../src/install/host.js';
import type { Reporter } from '../../src/util/progress.js';
import { startFakeApi } from '../helpers/fake-api.js';
import { tmpdir } from '../helpers/peers.js';

/*
 * The site state's stores and lease against the STAND-IN API server (test/helpers/fake-apiserver.mjs),
 * which keeps ConfigMaps and Leases by resourceVersion as the real one does. The site suite proves
 * the same on real Kubernetes.
 */

const node = (name: string, role: 'server' | 'agent' = 'agent'): NodeRecord => ({ name, ip: `10.0.0.${name.length}`, role, platform: 'linux/amd64', kubernetesVersion: 'v1.37.2', bundle: 'k8s-0.1.0', joinedAt: '2026-12-03T10:00:00.000Z' });
const initial = (): SiteState => ({
  apiVersion: 'ferry.dev/v1alpha1',
  kind: 'SiteState',
  answers: { domain: 'site.test', clusterFqdn: 'k8s-cluster.site.test', podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' },
  nodes: [node('server-1', 'server')],
  bundles: [{ id: 'k8s-0.1.0', name: 'k8s', version: '0.1.0', fingerprint: 'SHA256:x', kubernetesVersion: 'v1.37.2', checksums: `sha256:${'0'.repeat(64)}`, addedAt: '2026-12-03T10:00:00.000Z' }],
  current: 'k8s-0.1.0',
});

function recorder(): Reporter & { warnings: string[] } {
  const warnings: string[] = [];
  return { warnings, info() {}, verbose() {}, warn: (m: string) => void warnings.push(m), blobStart() {}, bytes() {}, blobDone() {}, done() {} } as unknown as Reporter & { warnings: string[] };
}

let dir: string;
let api: Awaited<ReturnType<typeof startFakeApi>>;
beforeAll(async () => {
  dir = await tmpdir('ferry-site-state-');
  api = await startFakeApi(path.join(dir, 'api'));
  await openSiteState({ kubeconfig: api.kubeconfig, root: path.join(dir, 'server-1') }).create(initial());
}, 60_000);
afterAll(async () => {
  await api?.stop();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

describe('the site state in the cluster', () => {
  it('refuses to create a second state over the first', async () => {
    await expect(openSiteState({ kubeconfig: api.kubeconfig, root: path.join(dir, 'server-1') }).create(initial())).rejects.toMatchObject({ code: 'STATE_CONFLICT' });
  });

  it('lands an update that another writer raced, by reading again and re-applying it (compare-and-swap)', async () => {
    const site = openSiteState({ kubeconfig: api.kubeconfig, root: path.join(dir, 'server-1') });
    let calls = 0;
    // Between this update's read and its write, another process replaces the ConfigMap.
    const other = `const [u, n] = process.argv.slice(1); const cm = await (await fetch(u)).json(); const s = JSON.parse(cm.data['state.json']); s.nodes.push(JSON.parse(n)); cm.data['state.json'] = JSON.stringify(s); const r = await fetch(u, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(cm) }); if (r.status !== 200) process.exit(1);`;
    const after = await site.update((s) => {
      if (calls++ === 0) execFileSync(process.execPath, ['--input-type=module', '-e', other, `http://127.0.0.1:${api.port}/api/v1/namespaces/ferry-system/configmaps/ferry-site`, JSON.stringify(node('raced-in'))]);
      s.nodes.push(node('agent-1'));
    });
    expect(calls).toBe(2);
    expect(after.nodes.map((n) => n.name)).toEqual(['server-1', 'raced-in', 'agent-1']);
    expect((await site.read())!.nodes.map((n) => n.name)).toEqual(['server-1', 'raced-in', 'agent-1']);
  });

  it('keeps every one of several concurrent updates from several servers', async () => {
    const names = ['c-1', 'c-2', 'c-3', 'c-4', 'c-5'];
    await Promise.all(names.map((n, i) => addNodes(openSiteState({ kubeconfig: api.kubeconfig, root: path.join(dir, `server-${i}`) }), [node(n)])));
    const s = (await openSiteState({ kubeconfig: api.kubeconfig, root: path.join(dir, 'reader') }).read())!;
    expect(names.every((n) => s.nodes.some((x) => x.name === n))).toBe(true);
    const conflicts = (await fs.readFile(api.record, 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((r) => r.method === 'PUT' && r.path.endsWith('/configmaps/ferry-site'));
    expect(conflicts.length).toBeGreaterThanOrEqual(names.length);
  });

  it('refuses a damaged document with STATE_INVALID, naming what is wrong', async () => {
    const site = openSiteState({ kubeconfig: api.kubeconfig, root: path.join(dir, 'server-1') });
    await expect(site.update((s) => void ((s.nodes[0] as { role: string }).role = 'boss'))).rejects.toMatchObject({ code: 'STATE_INVALID', message: expect.stringContaining('nodes[0].role') });
  });

  it('keeps a mirror on the server (0600) with the resourceVersion it copies, refreshed by each update and by ferry state mirror', async () => {
    const root = path.join(dir, 'server-1');
    const site = openSiteState({ kubeconfig: api.kubeconfig, root });
    await site.update((s) => void (s.answers.upstreamDns = ['10.0.0.53']));
    const file = path.join(root, STATE_MIRROR);
    const m = JSON.parse(await fs.readFile(file, 'utf8'));
    expect(m.state.answers.upstreamDns).toEqual(['10.0.0.53']);
    expect((await fs.stat(file)).mode & 0o777).toBe(0o600);
    // Another server changes the state: this one's timer catches up.
    await addNodes(openSiteState({ kubeconfig: api.kubeconfig, root: path.join(dir, 'server-2') }), [node('late')]);
    const r = await refreshMirror({ kubeconfig: api.kubeconfig, root });
    expect(r.updated).toBe(true);
    const again = JSON.parse(await fs.readFile(file, 'utf8'));
    expect(BigInt(again.resourceVersion)).toBeGreaterThan(BigInt(m.resourceVersion));
    expect(again.state.nodes.map((n: NodeRecord) => n.name)).toContain('late');
    expect((await refreshMirror({ kubeconfig: api.kubeconfig, root })).updated).toBe(false);
  });

  it('runs an operation journal on it: a re-run resumes, finish clears the record', async () => {
    const site = openSiteState({ kubeconfig: api.kubeconfig, root: path.join(dir, 'server-1') });
    const j = await beginOperation(site, { kind: 'join', args: { nodes: ['agent-9'] }, holder: 'server-1/1' });
    await j.record('agent-9/upload');
    const again = await beginOperation(openSiteState({ kubeconfig: api.kubeconfig, root: path.join(dir, 'server-2') }), { kind: 'join', args: { nodes: ['agent-9'] }, holder: 'server-2/2' });
    expect(again.has('agent-9/upload')).toBe(true);
    expect((await site.read())!.operation).toMatchObject({ id: j.operation.id, holder: 'server-2/2' });
    await expect(beginOperation(site, { kind: 'upgrade', args: {}, holder: 'server-1/3' })).rejects.toMatchObject({ code: 'OPERATION_UNFINISHED' });
    await again.finish();
    expect((await site.read())!.operation).toBeUndefined();
  });
});

describe("the site's operation lease", () => {
  it('refuses a second holder naming the first, lets a waiting one in after release, and is renewed while held', async () => {
    const lease = kubeLease({ kubeconfig: api.kubeconfig, durationSeconds: 3, pollMs: 100 });
    const a = await lease.acquire('server-1/100');
    await expect(lease.acquire('server-2/200')).rejects.toMatchObject({ code: 'OPERATION_IN_PROGRESS', message: expect.stringContaining('server-1/100') });
    // Past its duration it is still held: the holder renews it in the background.
    await new Promise((r) => setTimeout(r, 4500));
    await expect(lease.acquire('server-2/200')).rejects.toMatchObject({ code: 'OPERATION_IN_PROGRESS' });
    const waited: string[] = [];
    const b = lease.acquire('server-2/200', { wait: true, onWait: (h) => waited.push(h) });
    await new Promise((r) => setTimeout(r, 300));
    await a.release();
    const held = await b;
    expect(held.holder).toBe('server-2/200');
    expect(waited).toEqual(['server-1/100']);
    expect((await getLease(api.kubeconfig, 'ferry-system', 'ferry-operation'))!.spec.holderIdentity).toBe('server-2/200');
    await held.release();
    expect((await getLease(api.kubeconfig, 'ferry-system', 'ferry-operation'))!.spec.holderIdentity).toBeUndefined();
  }, 60_000);

  it('takes over a lease whose holder stopped renewing it', async () => {
    const cur = await getLease(api.kubeconfig, 'ferry-system', 'ferry-operation');
    const old = new Date(Date.now() - 10 * 60_000).toISOString().replace('Z', '000Z');
    await putLease(api.kubeconfig, 'ferry-system', 'ferry-operation', { holderIdentity: 'dead-server/9', leaseDurationSeconds: 60, acquireTime: old, renewTime: old, leaseTransitions: 4 }, cur?.resourceVersion);
    const got = await kubeLease({ kubeconfig: api.kubeconfig }).acquire('server-3/300');
    const l = (await getLease(api.kubeconfig, 'ferry-system', 'ferry-operation'))!;
    expect(l.spec).toMatchObject({ holderIdentity: 'server-3/300', leaseTransitions: 5 });
    await got.release();
  });

  it('is broken whoever holds it, after which the next operation gets it at once', async () => {
    const lease = kubeLease({ kubeconfig: api.kubeconfig, durationSeconds: 600 });
    const left = await lease.acquire('gone-server/1');
    expect(await breakLease({ kubeconfig: api.kubeconfig })).toBe('gone-server/1');
    expect(await breakLease({ kubeconfig: api.kubeconfig })).toBeUndefined();
    const next = await lease.acquire('server-1/2');
    // The old holder, had it lived, must not clear what is no longer its own.
    await left.release();
    expect((await getLease(api.kubeconfig, 'ferry-system', 'ferry-operation'))!.spec.holderIdentity).toBe('server-1/2');
    await next.release();
  });
});

describe('the site state when the API does not answer', () => {
  it("reads this server's mirror, with a warning, and refuses to update", async () => {
    const root = path.join(dir, 'server-1');
    const before = (await openSiteState({ kubeconfig: api.kubeconfig, root }).read())!;
    await api.stop();
    const reporter = recorder();
    const site = openSiteState({ kubeconfig: api.kubeconfig, root, reporter });
    const r = await site.readFrom();
    expect(r).toMatchObject({ source: 'mirror', state: before });
    expect(reporter.warnings.join('\n')).toMatch(/does not answer.*state mirror/);
    await expect(site.update((s) => void s.nodes.pop())).rejects.toMatchObject({ code: 'KUBE_UNREACHABLE' });
    // A server without a mirror has nothing to fall back on: the API's error, not an empty site.
    await expect(openSiteState({ kubeconfig: api.kubeconfig, root: path.join(dir, 'never-mirrored') }).read()).rejects.toMatchObject({ code: 'KUBE_UNREACHABLE' });
  });
});

describe('a server that an older ferry installed', () => {
  it('gets the site state built from its nodes.json and answers on first use, and nodes.json goes away', async () => {
    const api2 = await startFakeApi(path.join(dir, 'api-2'));
    try {
      const host = new Host(path.join(dir, 'old-server'));
      await host.write('/etc/kubernetes/admin.conf', await fs.readFile(api2.kubeconfig, 'utf8'));
      await host.write('/etc/ferry/nodes.json', JSON.stringify([{ name: 'k8s-server-01', ip: '10.0.0.1', role: 'server' }, { name: 'k8s-agent-01', ip: '10.0.0.5', role: 'agent' }]));
      await host.write('/var/lib/ferry/bundle/checksums.txt', 'abc  bundle.json\n');
      const m = { name: 'k8s', version: '0.1.0', kubernetes: { version: 'v1.37.2' }, signer: { fingerprint: 'SHA256:signer', publicKey: '' } } as unknown as BundleManifest;
      const answers = { apiVersion: 'ferry.dev/v1alpha1', kind: 'InstallAnswers', domain: 'site.test', node: { name: 'k8s-server-01', ip: '10.0.0.1' }, podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12', join: [{ host: '10.0.0.5', name: 'k8s-agent-01', role: 'agent' }] } as const;
      // Before: the nodes come from nodes.json (no state yet).
      expect((await clusterNodes(host, answers as never)).map((n) => n.name)).toEqual(['k8s-server-01', 'k8s-agent-01']);
      const s = await ensureSiteState(host, answers as never, m, recorder());
      expect(s.nodes.map((n) => [n.name, n.role, n.bundle])).toEqual([['k8s-server-01', 'server', 'k8s-0.1.0'], ['k8s-agent-01', 'agent', 'k8s-0.1.0']]);
      expect(s.answers).not.toHaveProperty('join');
      expect(s.answers).not.toHaveProperty('node');
      expect(s.bundles).toEqual([expect.objectContaining({ id: 'k8s-0.1.0', fingerprint: 'SHA256:signer', kubernetesVersion: 'v1.37.2', checksums: expect.stringMatching(/^sha256:[0-9a-f]{64}$/) })]);
      expect(s.current).toBe('k8s-0.1.0');
      expect(await host.read('/etc/ferry/nodes.json')).toBeUndefined();
      // After: the same nodes, from the state in the cluster; the mirror holds them too.
      expect((await clusterNodes(host, answers as never)).map((n) => n.name)).toEqual(['k8s-server-01', 'k8s-agent-01']);
      expect(JSON.parse((await host.read(STATE_MIRROR))!).state.nodes).toHaveLength(2);
      // Run again (a re-run of install): nothing is added twice.
      expect((await ensureSiteState(host, answers as never, m, recorder())).nodes).toHaveLength(2);
    } finally {
      await api2.stop();
    }
  });
});
