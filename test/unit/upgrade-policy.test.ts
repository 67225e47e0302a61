import { describe, expect, it } from 'vitest';
import { decideUpgrade, upgradeInputs, upgradeOrder, type OfferedBundle, type PolicyNode, type UpgradeInputs } from '../../src/cluster/upgrade-policy.js';
import type { SiteState } from '../../src/cluster/state.js';
import { waves } from '../../src/ops/rollout.js';

/* Issue 19 item 1: what ferry upgrade refuses before anything changes, each with its own code, and the rollout order as data. */

const KEY = 'SHA256:site';
const node = (name: string, role: 'server' | 'agent', kubernetesVersion: string): PolicyNode => ({ name, role, kubernetesVersion });
const site = (v: string, agents = 2) => [node('server-1', 'server', v), node('server-2', 'server', v), node('server-3', 'server', v), ...Array.from({ length: agents }, (_, k) => node(`agent-${k + 1}`, 'agent', v))];
const installed = { id: 'k8s-1.0.0', name: 'k8s', version: '1.0.0', created: '2026-06-01T00:00:00Z', kubernetesVersion: 'v1.36.3', fingerprint: KEY, checksums: 'a'.repeat(64) };
const offer = (o: Partial<OfferedBundle> = {}): OfferedBundle => ({ id: 'k8s-2.0.0', name: 'k8s', version: '2.0.0', created: '2026-11-01T00:00:00Z', kubernetesVersion: 'v1.37.2', fingerprint: KEY, checksums: 'b'.repeat(64), ...o });
const inputs = (o: Partial<UpgradeInputs> = {}): UpgradeInputs => ({ nodes: site('v1.36.3'), installed, offered: offer(), firstServer: 'server-2', ...o });
const refusal = (i: UpgradeInputs) => {
  try {
    decideUpgrade(i);
  } catch (e) {
    return e as { code: string; message: string; hint: string; exit: string };
  }
  throw new Error('not refused');
};

describe('the upgrade policy refuses, before anything changes', () => {
  it('a bundle signed by another key than the site’s (UPGRADE_SIGNER, an integrity failure)', () => {
    const e = refusal(inputs({ offered: offer({ fingerprint: 'SHA256:other' }) }));
    expect(e).toMatchObject({ code: 'UPGRADE_SIGNER', exit: 'integrity' });
    expect(e.message).toContain('SHA256:other');
  });

  it('a Kubernetes downgrade, whatever the bundle version says (UPGRADE_NOT_NEWER)', () => {
    const e = refusal(inputs({ nodes: site('v1.37.2'), installed: { ...installed, kubernetesVersion: 'v1.37.2' }, offered: offer({ version: '3.0.0', id: 'k8s-3.0.0', kubernetesVersion: 'v1.36.3' }) }));
    expect(e.code).toBe('UPGRADE_NOT_NEWER');
    expect(e.message).toMatch(/never downgraded/);
  });

  it('an older bundle with the same Kubernetes, and another bundle under the installed id (UPGRADE_NOT_NEWER)', () => {
    expect(refusal(inputs({ offered: offer({ id: 'k8s-0.9.0', version: '0.9.0', kubernetesVersion: 'v1.36.3' }) })).code).toBe('UPGRADE_NOT_NEWER');
    expect(refusal(inputs({ offered: offer({ id: 'k8s-0.9.0', version: '0.9.0', kubernetesVersion: 'v1.37.2' }) })).code).toBe('UPGRADE_NOT_NEWER');
    const e = refusal(inputs({ offered: offer({ id: installed.id, version: installed.version, checksums: 'c'.repeat(64) }) }));
    expect(e.code).toBe('UPGRADE_NOT_NEWER');
    expect(e.hint).toMatch(/new metadata.version/);
  });

  it('a skipped minor on any node, naming the minor to go through (UPGRADE_SKIPS_MINOR)', () => {
    const e = refusal(inputs({ offered: offer({ kubernetesVersion: 'v1.38.0' }) }));
    expect(e.code).toBe('UPGRADE_SKIPS_MINOR');
    expect(e.hint).toContain('v1.37');
    // One agent left behind at an older minor is enough.
    const nodes = site('v1.36.3');
    nodes[4] = node('agent-2', 'agent', 'v1.35.1');
    const one = refusal(inputs({ nodes }));
    expect(one.code).toBe('UPGRADE_SKIPS_MINOR');
    expect(one.message).toContain('agent-2 (v1.35.1)');
    expect(one.message).not.toContain('server-1');
  });

  it('a kubelet newer than an API server, now or once this run is done (UPGRADE_KUBELET_SKEW)', () => {
    const now = site('v1.36.3');
    now[3] = node('agent-1', 'agent', 'v1.37.2');
    const e = refusal(inputs({ nodes: now }));
    expect(e.code).toBe('UPGRADE_KUBELET_SKEW');
    expect(e.message).toMatch(/^now, the kubelet of agent-1/);
    // A run that upgrades the agents but leaves server-3 behind would put their kubelets ahead of its API server.
    const after = refusal(inputs({ upgrading: ['server-1', 'server-2', 'agent-1', 'agent-2'] }));
    expect(after.code).toBe('UPGRADE_KUBELET_SKEW');
    expect(after.message).toContain('server-3');
  });
});

describe('the upgrade policy decides', () => {
  it('already at this version: nothing to do, and says so', () => {
    const d = decideUpgrade(inputs({ nodes: site('v1.37.2'), installed: { ...installed, id: 'k8s-2.0.0', version: '2.0.0', kubernetesVersion: 'v1.37.2', checksums: 'b'.repeat(64) } }));
    expect(d).toEqual({ action: 'none', reason: expect.stringMatching(/nothing to do/) });
  });

  it('a minor upgrade from any server: that server first, the others one at a time, then agents by maxUnavailable', () => {
    const d = decideUpgrade(inputs({ nodes: site('v1.36.3', 5), maxUnavailable: 2 }));
    expect(d).toMatchObject({ action: 'upgrade', from: 'k8s-1.0.0', to: 'k8s-2.0.0', kubernetes: { from: 'v1.36.3', to: 'v1.37.2' } });
    if (d.action !== 'upgrade') throw new Error('no plan');
    expect(d.order.waves).toEqual([
      { nodes: ['server-2'], width: 1 },
      { nodes: ['server-1'], width: 1 },
      { nodes: ['server-3'], width: 1 },
      { nodes: ['agent-1', 'agent-2'], width: 2 },
      { nodes: ['agent-3', 'agent-4'], width: 2 },
      { nodes: ['agent-5'], width: 2 },
    ]);
    // The operation layer's servers-first rollout over the ordered nodes keeps the servers' order and width.
    const w = waves(d.order.nodes, 'servers-first', 2);
    expect(w[0]).toEqual({ nodes: d.order.nodes.slice(0, 3), width: 1 });
    expect(w[1]!.width).toBe(2);
  });

  it('a re-run of the same bundle after the first server upgraded finishes the job, skipping what is done', () => {
    const nodes = site('v1.36.3');
    nodes[1] = node('server-2', 'server', 'v1.37.2');
    const d = decideUpgrade(inputs({ nodes, installed: { ...installed, id: 'k8s-2.0.0', version: '2.0.0', checksums: 'b'.repeat(64) }, upgrading: ['server-1', 'server-3', 'agent-1', 'agent-2'] }));
    expect(d.action).toBe('upgrade');
    if (d.action === 'upgrade') expect(d.order.waves.map((w) => w.nodes)).toEqual([['server-1'], ['server-3'], ['agent-1'], ['agent-2']]);
  });

  it('a newer bundle with the same Kubernetes: an upgrade of the content only', () => {
    const d = decideUpgrade(inputs({ offered: offer({ kubernetesVersion: 'v1.36.3' }) }));
    expect(d).toMatchObject({ action: 'upgrade', to: 'k8s-2.0.0' });
    expect(d).not.toHaveProperty('kubernetes');
  });

  it('takes its inputs from the site state, and refuses a maxUnavailable below 1', () => {
    const state = { nodes: site('v1.36.3').map((n) => ({ ...n, ip: '10.0.0.1', platform: 'linux/amd64', bundle: 'k8s-1.0.0', joinedAt: '' })), bundles: [{ id: 'k8s-1.0.0', name: 'k8s', version: '1.0.0', fingerprint: KEY, kubernetesVersion: 'v1.36.3', checksums: 'a'.repeat(64), addedAt: '' }], current: 'k8s-1.0.0' } satisfies Pick<SiteState, 'nodes' | 'bundles' | 'current'>;
    expect(decideUpgrade(upgradeInputs(state, offer(), { firstServer: 'server-1' })).action).toBe('upgrade');
    expect(() => upgradeOrder(state.nodes, 'server-1', 0)).toThrow(/max-unavailable/);
    expect(refusal(inputs({ firstServer: 'agent-1' })).message).toContain('not a server');
  });
});
