import { describe, expect, it } from 'vitest';
import type { InstallAnswers } from '../../src/install/answers.js';
import { clusterNodes, pauseImageOf, siteAnswers } from '../../src/install/cluster.js';
import { Host } from '../../src/install/host.js';
import { tmpdir } from '../helpers/peers.js';

const answers: InstallAnswers = { apiVersion: 'ferry.dev/v1alpha1', kind: 'InstallAnswers', domain: 'site.test', node: { name: 's1', ip: '10.0.0.1' }, podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' };

describe("the cluster's saved nodes", () => {
  it('list this server first, once, whatever the nodes.json of an older ferry says about it (before the cluster exists)', async () => {
    const host = new Host(await tmpdir());
    expect(await clusterNodes(host, answers)).toEqual([{ name: 's1', ip: '10.0.0.1', role: 'server' }]);
    await host.write('/etc/ferry/nodes.json', JSON.stringify([{ name: 'a1', ip: '10.0.0.5', role: 'agent' }, { name: 's1', ip: '10.9.9.9', role: 'server' }]));
    expect(await clusterNodes(host, answers)).toEqual([{ name: 's1', ip: '10.0.0.1', role: 'server' }, { name: 'a1', ip: '10.0.0.5', role: 'agent' }]);
  });
});

describe("the site's answers in the state", () => {
  it("keep what every server needs, without this node's own or the hosts to join", () => {
    const a = siteAnswers({ ...answers, join: [{ host: '10.0.0.9', name: 'a9', role: 'agent' }], upstreamDns: ['10.0.0.53'] });
    expect(a).toEqual({ domain: 'site.test', clusterFqdn: 'k8s-cluster.site.test', podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12', upstreamDns: ['10.0.0.53'] });
  });
});

describe('the pause image', () => {
  it("is the bundle's, or ferry's fallback when the bundle carries none", () => {
    expect(pauseImageOf({ images: [{ ref: 'r.test/k8s/pause:3.9' }] } as never)).toBe('r.test/k8s/pause:3.9');
    expect(pauseImageOf({ images: [] })).toBe('registry.k8s.io/pause:3.10');
  });
});
