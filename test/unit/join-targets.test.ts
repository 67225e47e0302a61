import { describe, expect, it } from 'vitest';
import { checkTargets } from '../../src/ops/join.js';

const refusal = (f: () => void) => {
  try {
    f();
  } catch (e) {
    return e as { code: string; message: string; hint?: string };
  }
  throw new Error('accepted');
};

describe('the nodes ferry join is given', () => {
  it('a joining server without --bundle is refused before anything is contacted, the hint naming --bundle FILE', () => {
    const e = refusal(() => checkTargets([{ host: '10.0.0.12', name: 'k8s-server-02', role: 'server' }, { host: '10.0.0.21', name: 'k8s-agent-01', role: 'agent' }], {}));
    expect(e.code).toBe('USAGE');
    expect(e.message).toBe('joining server k8s-server-02 needs the bundle file');
    expect(e.hint).toMatch(/--bundle FILE/);
    expect(() => checkTargets([{ host: '10.0.0.12', name: 'k8s-server-02', role: 'server' }], { bundle: 'site.ferry.tar' })).not.toThrow();
  });

  it('agents alone need no bundle; no nodes, a name twice or a bad --ip are refused', () => {
    expect(() => checkTargets([{ host: '10.0.0.21', name: 'a', role: 'agent' }], {})).not.toThrow();
    expect(refusal(() => checkTargets([], {})).hint).toMatch(/ferry join HOST --name NAME --role agent/);
    expect(refusal(() => checkTargets([{ host: '10.0.0.21', name: 'a', role: 'agent' }, { host: '10.0.0.22', name: 'a', role: 'agent' }], {})).message).toMatch(/name a twice/);
    expect(refusal(() => checkTargets([{ host: 'n1', name: 'a', role: 'agent', ip: 'n1.site' }], {})).message).toMatch(/--ip n1.site is not an IPv4 address/);
  });
});
