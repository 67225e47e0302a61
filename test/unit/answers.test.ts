import { describe, expect, it } from 'vitest';
import { answerProblems, type InstallAnswers } from '../../src/install/answers.js';
import { bootstrapValues } from '../../src/install/cluster.js';
import type { BundleManifest } from '../../src/bundle/format.js';

const base: InstallAnswers = { apiVersion: 'ferry.dev/v1alpha1', kind: 'InstallAnswers', domain: 'site.test', node: { name: 'server-1', ip: '10.0.0.11' }, podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' };
const problems = (a: Partial<InstallAnswers>) => answerProblems({ ...base, ...a }).map((p) => `${p.path.join('.')}: ${p.msg}`);

describe('the upstreamDns answer', () => {
  it('accepts resolver addresses, with or without a port', () => {
    expect(problems({ upstreamDns: ['10.0.0.53', '10.0.0.54:5353'] })).toEqual([]);
  });

  it('refuses names, IPv6, bad ports, a non-list and this node itself, naming each entry', () => {
    expect(problems({ upstreamDns: ['dns.corp', 'fd00::53', '10.0.0.53:70000', '10.0.0.11'] })).toEqual([
      'upstreamDns.0: "dns.corp" is not valid (expected: A resolver, for example 10.0.0.53 or 10.0.0.53:5353 (ferry is IPv4-only today).)',
      'upstreamDns.1: "fd00::53" is not valid (expected: A resolver, for example 10.0.0.53 or 10.0.0.53:5353 (ferry is IPv4-only today).)',
      'upstreamDns.2: "10.0.0.53:70000" is not valid (expected: A resolver, for example 10.0.0.53 or 10.0.0.53:5353 (ferry is IPv4-only today).)',
      'upstreamDns.3: is this node: the site DNS would forward to itself',
    ]);
    expect(problems({ upstreamDns: '10.0.0.53' as unknown as string[] })).toEqual([expect.stringMatching(/^upstreamDns: must be array \(expected: The site resolvers/)]);
  });

  it('reaches the bootstrap values, and is left out when not answered', () => {
    const manifest = { images: [] } as unknown as BundleManifest;
    const nodes = [{ name: 'server-1', ip: '10.0.0.11', role: 'server' as const }];
    expect(bootstrapValues({ ...base, upstreamDns: ['10.0.0.53'] }, manifest, nodes).upstreamDns).toEqual(['10.0.0.53']);
    expect('upstreamDns' in bootstrapValues(base, manifest, nodes)).toBe(false);
  });
});
