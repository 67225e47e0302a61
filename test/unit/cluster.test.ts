import { describe, expect, it } from 'vitest';
import type { InstallAnswers } from '../../src/install/answers.js';
import { clusterNodes, pauseImageOf, saveClusterNodes } from '../../src/install/cluster.js';
import { Host } from '../../src/install/host.js';
import { tmpdir } from '../helpers/peers.js';

const answers: InstallAnswers = { apiVersion: 'ferry.dev/v1alpha1', kind: 'InstallAnswers', domain: 'site.test', node: { name: 's1', ip: '10.0.0.1' }, podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' };

describe("the cluster's saved nodes", () => {
  it('list this server first, once, whatever nodes.json says about it', async () => {
    const host = new Host(await tmpdir());
    expect(await clusterNodes(host, answers)).toEqual([{ name: 's1', ip: '10.0.0.1', role: 'server' }]);
    await saveClusterNodes(host, [{ name: 'a1', ip: '10.0.0.5', role: 'agent' }, { name: 's1', ip: '10.9.9.9', role: 'server' }]);
    expect(await clusterNodes(host, answers)).toEqual([{ name: 's1', ip: '10.0.0.1', role: 'server' }, { name: 'a1', ip: '10.0.0.5', role: 'agent' }]);
  });
});

describe('the pause image', () => {
  it("is the bundle's, or ferry's fallback when the bundle carries none", () => {
    expect(pauseImageOf({ images: [{ ref: 'r.test/k8s/pause:3.9' }] } as never)).toBe('r.test/k8s/pause:3.9');
    expect(pauseImageOf({ images: [] })).toBe('registry.k8s.io/pause:3.10');
  });
});
