import { describe, expect, it } from 'vitest';
import { parseOrder, rollout, waves, type RolloutNode } from '../../src/ops/rollout.js';
import { runOperation } from '../../src/ops/operation.js';
import { memoryLease, memoryState } from '../helpers/memory-state.js';
import type { SiteState } from '../../src/cluster/state.js';

const nodes: RolloutNode[] = [
  { name: 'a1', role: 'agent' },
  { name: 's1', role: 'server' },
  { name: 'a2', role: 'agent' },
  { name: 's2', role: 'server' },
  { name: 'a3', role: 'agent' },
];

/** A fake task that records when each node starts and ends, and how many ran at once. */
function recorder(fail: string[] = []) {
  const events: string[] = [];
  let running = 0;
  let peak = 0;
  const task = async (n: RolloutNode) => {
    running++;
    peak = Math.max(peak, running);
    events.push(`start ${n.name}`);
    await new Promise((r) => setTimeout(r, 5));
    events.push(`end ${n.name}`);
    running--;
    if (fail.includes(n.name)) throw new Error(`${n.name} broke`);
    return n.name.toUpperCase();
  };
  return { events, task, peak: () => peak };
}

describe('rollout ordering', () => {
  it('all: every node at once, bounded by parallel', async () => {
    const r = recorder();
    const out = await rollout(nodes, { order: 'all', onFailure: 'stop', parallel: 2 }, r.task);
    expect(r.peak()).toBe(2);
    expect(out.map((x) => x.status)).toEqual(['ok', 'ok', 'ok', 'ok', 'ok']);
    expect(out.map((x) => (x.status === 'ok' ? x.value : ''))).toEqual(['A1', 'S1', 'A2', 'S2', 'A3']);
  });

  it('all without a bound given starts up to 8 at once', async () => {
    const r = recorder();
    await rollout(nodes, { order: 'all', onFailure: 'stop' }, r.task);
    expect(r.peak()).toBe(5);
  });

  it('serial: one node ends before the next starts, in the given order', async () => {
    const r = recorder();
    await rollout(nodes, { order: 'serial', onFailure: 'stop' }, r.task);
    expect(r.events).toEqual(nodes.flatMap((n) => [`start ${n.name}`, `end ${n.name}`]));
  });

  it('servers-first: servers one at a time, then the agents together', async () => {
    const r = recorder();
    await rollout(nodes, { order: 'servers-first', onFailure: 'stop' }, r.task);
    expect(r.events.slice(0, 4)).toEqual(['start s1', 'end s1', 'start s2', 'end s2']);
    expect(r.events.slice(4, 7).sort()).toEqual(['start a1', 'start a2', 'start a3']);
    expect(r.peak()).toBe(3);
  });

  it('batches:2: two at a time, a batch starts only when the one before ended', async () => {
    const r = recorder();
    await rollout(nodes, { order: 'batches:2', onFailure: 'stop' }, r.task);
    const at = (e: string) => r.events.indexOf(e);
    expect(at('start a2')).toBeGreaterThan(Math.max(at('end a1'), at('end s1')));
    expect(at('start a3')).toBeGreaterThan(Math.max(at('end a2'), at('end s2')));
    expect(r.peak()).toBe(2);
    expect(waves(nodes, 'batches:2', 8).map((w) => w.nodes.map((n) => n.name))).toEqual([['a1', 's1'], ['a2', 's2'], ['a3']]);
  });

  it('parses the order names and refuses others', () => {
    expect(parseOrder('batches:3')).toBe('batches:3');
    expect(parseOrder('servers-first')).toBe('servers-first');
    expect(() => parseOrder('batches:0')).toThrow(/unknown rollout order/);
    expect(() => parseOrder('random')).toThrow(/unknown rollout order/);
  });
});

describe('rollout failure policies', () => {
  it('stop: after a failure no node starts; the failure and the skipped nodes are reported', async () => {
    const r = recorder(['s1']);
    const out = await rollout(nodes, { order: 'serial', onFailure: 'stop' }, r.task);
    expect(out.map((x) => `${x.node.name}:${x.status}`)).toEqual(['a1:ok', 's1:failed', 'a2:skipped', 's2:skipped', 'a3:skipped']);
    expect(r.events).not.toContain('start a2');
    const f = out[1]!;
    expect(f.status === 'failed' && (f.error as Error).message).toBe('s1 broke');
  });

  it('stop under servers-first: a failed server keeps every agent from starting', async () => {
    const r = recorder(['s2']);
    const out = await rollout(nodes, { order: 'servers-first', onFailure: 'stop' }, r.task);
    expect(out.filter((x) => x.node.role === 'agent').map((x) => x.status)).toEqual(['skipped', 'skipped', 'skipped']);
  });

  it('stop in parallel: nodes already running finish, later batches do not start', async () => {
    const r = recorder(['a1']);
    const out = await rollout(nodes, { order: 'batches:2', onFailure: 'stop' }, r.task);
    expect(out.map((x) => x.status)).toEqual(['failed', 'ok', 'skipped', 'skipped', 'skipped']);
  });

  it('continue: every node runs whatever failed before it', async () => {
    const r = recorder(['a1', 's2']);
    const out = await rollout(nodes, { order: 'serial', onFailure: 'continue' }, r.task);
    expect(out.map((x) => x.status)).toEqual(['failed', 'ok', 'ok', 'failed', 'ok']);
  });
});

const state = (): SiteState => ({ apiVersion: 'ferry.dev/v1alpha1', kind: 'SiteState', answers: { domain: 'd.test', clusterFqdn: 'k.d.test', podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' }, nodes: [], bundles: [], current: 'k8s-1' });

describe('runOperation', () => {
  it('holds the lease while the body runs, keeps the journal on failure, and a re-run resumes it', async () => {
    const site = memoryState(state());
    const lease = memoryLease();
    const ctx = { site, lease, kind: 'join', args: { nodes: ['n1'] }, holder: 's1/1' };
    await expect(
      runOperation(ctx, async (j) => {
        expect(lease.holder()).toBe('s1/1');
        await j.record('n1/upload');
        throw new Error('link died');
      }),
    ).rejects.toThrow('link died');
    expect(lease.holder()).toBeUndefined();
    expect(site.current()!.operation!.journal.map((e) => e.key)).toEqual(['n1/upload']);
    const seen = await runOperation(ctx, async (j) => j.has('n1/upload'));
    expect(seen).toBe(true);
    expect(site.current()!.operation).toBeUndefined();
  });

  it('keeps the journal when the body reports a partial outcome', async () => {
    const site = memoryState(state());
    await runOperation({ site, lease: memoryLease(), kind: 'join', args: {}, holder: 'h', complete: (ok: boolean) => ok }, async () => false);
    expect(site.current()!.operation?.kind).toBe('join');
  });

  it('refuses while another holder has the lease, naming it', async () => {
    const lease = memoryLease();
    await lease.acquire('s2/99');
    await expect(runOperation({ site: memoryState(state()), lease, kind: 'join', args: {}, holder: 's1/1' }, async () => 1)).rejects.toMatchObject({ code: 'OPERATION_IN_PROGRESS', message: expect.stringContaining('s2/99') });
  });
});
