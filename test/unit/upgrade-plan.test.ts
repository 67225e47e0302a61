import { describe, expect, it } from 'vitest';
import type { BundleManifest } from '../../src/bundle/format.js';
import type { NodeRecord } from '../../src/cluster/state.js';
import { decideUpgrade, type OfferedBundle } from '../../src/cluster/upgrade-policy.js';
import { FerryError } from '../../src/errors.js';
import type { NodeUpgradePayload } from '../../src/install/node-upgrade.js';
import { NODE_UPGRADE_SCHEMA, readNodeUpgradePayload } from '../../src/ops/node-op.js';
import { changedFiles, refuseFailedPreflight, upgradeSteps } from '../../src/ops/upgrade.js';

const node = (name: string, role: 'server' | 'agent', v = 'v1.36.3'): NodeRecord => ({ name, ip: '10.0.0.1', role, platform: 'linux/amd64', kubernetesVersion: v, bundle: 'kubernetes-0.0.9', joinedAt: '' });
const nodes = [node('server-1', 'server'), node('server-2', 'server'), node('server-3', 'server'), node('agent-1', 'agent'), node('agent-2', 'agent'), node('agent-3', 'agent')];
const offered: OfferedBundle = { id: 'kubernetes-0.1.0', name: 'kubernetes', version: '0.1.0', created: '', kubernetesVersion: 'v1.37.2', fingerprint: 'SHA256:k', checksums: 'b' };
const installed = { id: 'kubernetes-0.0.9', name: 'kubernetes', version: '0.0.9', kubernetesVersion: 'v1.36.3', fingerprint: 'SHA256:k', checksums: 'a' };

describe('the upgrade plan, as --dry-run prints it and the real run journals it', () => {
  it('snapshots, stages every server (this one first), then upgrades this server with kubeadm apply, the other servers one at a time, the agents in batches', () => {
    const d = decideUpgrade({ nodes, installed, offered, firstServer: 'server-2', maxUnavailable: 2 });
    if (d.action !== 'upgrade') throw new Error('no upgrade');
    const steps = upgradeSteps(d, nodes, 'server-2');
    expect(steps.map((s) => s.key)).toEqual([
      'site/snapshot',
      'server-2/stage',
      'server-1/stage',
      'server-3/stage',
      'server-2/upgrade',
      'server-1/upgrade',
      'server-3/upgrade',
      'agent-1/upgrade',
      'agent-2/upgrade',
      'agent-3/upgrade',
      'site/addons',
      'site/finish',
    ]);
    expect(steps.find((s) => s.key === 'server-2/upgrade')!.what).toMatch(/kubeadm upgrade apply v1\.37\.2/);
    expect(steps.find((s) => s.key === 'server-1/upgrade')!.what).toMatch(/kubeadm upgrade node/);
    expect(steps.find((s) => s.key === 'agent-1/upgrade')!.what).toMatch(/2 at once/);
    expect(steps.find((s) => s.key === 'agent-3/upgrade')!.what).not.toMatch(/at once/);
  });

  it('on a re-run after the first server, the next server runs kubeadm upgrade node, never apply again', () => {
    const half = nodes.map((n) => (n.name === 'server-2' ? { ...n, kubernetesVersion: 'v1.37.2', bundle: offered.id } : n));
    const d = decideUpgrade({ nodes: half, installed, offered, firstServer: 'server-1', upgrading: half.filter((n) => n.bundle !== offered.id).map((n) => n.name) });
    if (d.action !== 'upgrade') throw new Error('no upgrade');
    const steps = upgradeSteps(d, half, 'server-1');
    expect(steps.some((s) => s.key === 'server-2/upgrade')).toBe(false);
    expect(steps.find((s) => s.key === 'server-1/upgrade')!.what).toMatch(/kubeadm upgrade node/);
  });

  it('refuses to start when any preflight check failed, naming each, with UPGRADE_PREFLIGHT', () => {
    expect(() => refuseFailedPreflight([{ name: 'nodes-ready', ok: true, detail: '4 nodes Ready' }])).not.toThrow();
    let e: FerryError | undefined;
    try {
      refuseFailedPreflight([
        { name: 'etcd', ok: false, detail: 'server-3 does not answer' },
        { name: 'disk', ok: false, detail: 'under 2.0 GiB free' },
      ]);
    } catch (x) {
      e = x as FerryError;
    }
    expect(e?.code).toBe('UPGRADE_PREFLIGHT');
    expect(e?.message).toMatch(/etcd: server-3 does not answer/);
    expect(e?.message).toMatch(/disk: under 2\.0 GiB free/);
    expect(e?.message).toMatch(/nothing was changed/);
  });
});

describe('the binaries a node takes from the new bundle', () => {
  const f = (name: string, version: string, sha: string, platform = 'linux/amd64') => ({ name, version, platform, path: `files/${name}/${version}/${platform.replace('/', '-')}/${name}`, sha256: sha.repeat(64), size: 1 });
  const m = (files: ReturnType<typeof f>[]) => ({ files }) as unknown as BundleManifest;
  it('are those whose digest changed, for its own platform, with paths as the site service serves them', () => {
    const prev = m([f('kubeadm', 'v1.36.3', 'a'), f('kubelet', 'v1.36.3', 'b'), f('containerd', 'v2.2.9', 'c'), f('kubelet', 'v1.36.3', 'd', 'linux/arm64')]);
    const next = m([f('kubeadm', 'v1.37.2', 'e'), f('kubelet', 'v1.37.2', '1'), f('containerd', 'v2.2.9', 'c'), f('kubelet', 'v1.37.2', '2', 'linux/arm64')]);
    const got = changedFiles(next, prev, 'linux/amd64');
    expect(got.map((x) => `${x.name} ${x.version}`)).toEqual(['kubeadm v1.37.2', 'kubelet v1.37.2']);
    expect(got[0]!.path).toBe('kubeadm/v1.37.2/linux-amd64/kubeadm');
  });
});

describe("node-upgrade's payload, checked against its schema on the node", () => {
  const good: Required<NodeUpgradePayload> = {
    phase: 'upgrade',
    name: 'agent-1',
    role: 'agent',
    domain: 'site.test',
    serverIps: ['10.0.0.11'],
    bundle: 'kubernetes-0.1.0',
    kubernetesVersion: 'v1.37.2',
    apply: false,
    files: [{ name: 'kubelet', version: 'v1.37.2', platform: 'linux/amd64', path: 'kubelet/v1.37.2/linux-amd64/kubelet', sha256: 'a'.repeat(64), size: 10, archive: false, url: 'https://dl.k8s.io/release/v1.37.2/bin/linux/amd64/kubelet' }],
    ignoreKubeadmPreflight: [],
  };
  it('accepts every field the type declares, and the schema lists exactly those', () => {
    expect(readNodeUpgradePayload(JSON.stringify(good))).toEqual(good);
    expect(Object.keys(NODE_UPGRADE_SCHEMA.properties as object).sort()).toEqual(Object.keys(good).sort());
  });
  it('refuses an unknown phase and a file without its digest with NODE_PAYLOAD_INVALID', () => {
    let e: FerryError | undefined;
    try {
      readNodeUpgradePayload(JSON.stringify({ ...good, phase: 'rollback', files: [{ ...good.files[0], sha256: undefined }] }));
    } catch (x) {
      e = x as FerryError;
    }
    expect(e?.code).toBe('NODE_PAYLOAD_INVALID');
    expect(e?.message).toMatch(/phase/);
    expect(e?.message).toMatch(/sha256/);
  });
});
