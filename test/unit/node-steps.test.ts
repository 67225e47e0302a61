import { describe, expect, it } from 'vitest';
import type { InstallAnswers } from '../../src/install/answers.js';
import { Host } from '../../src/install/host.js';
import { mapHosts, markerStep, serverHostNames, siteServiceUrl } from '../../src/install/node-steps.js';
import { ETC_HOSTS, STATE_DIR } from '../../src/install/paths.js';
import { tmpdir } from '../helpers/peers.js';

const answers: InstallAnswers = { apiVersion: 'ferry.dev/v1alpha1', kind: 'InstallAnswers', domain: 'site.test', node: { name: 's1', ip: '10.0.0.1' }, podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' };

describe('a marker step', () => {
  it('is done once it has applied with the fingerprint it has now, and todo again when the fingerprint changes', async () => {
    const host = new Host(await tmpdir());
    let fp = 'v1';
    let applied = 0;
    const step = markerStep(host, 'thing', 'do the thing', async () => fp, async () => void applied++);
    expect(await step.check()).toBe(false);
    await step.apply(() => {});
    expect(applied).toBe(1);
    expect(await host.read(`${STATE_DIR}/thing`)).toBe('v1');
    expect(await step.check()).toBe(true);
    fp = 'v2';
    expect(await step.check()).toBe(false);
  });

  it('takes a fixed string for a fingerprint, and writes no marker when its apply fails', async () => {
    const host = new Host(await tmpdir());
    const failing = markerStep(host, 'thing', 'do the thing', 'fixed', async () => {
      throw new Error('no');
    });
    await expect(failing.apply(() => {})).rejects.toThrow('no');
    expect(await failing.check()).toBe(false);
    await markerStep(host, 'thing', 'do the thing', 'fixed', async () => {}).apply(() => {});
    expect(await failing.check()).toBe(true);
  });
});

describe('the /etc/hosts block', () => {
  it('starts a host that has no /etc/hosts with localhost, and replaces only its own block on a re-run', async () => {
    const host = new Host(await tmpdir());
    await mapHosts(host, [{ ip: '10.0.0.9', names: ['k8s-cluster.site.test'] }]);
    expect(await host.read(ETC_HOSTS)).toBe('127.0.0.1\tlocalhost\n# BEGIN ferry\n10.0.0.9\tk8s-cluster.site.test\n# END ferry\n');
    await host.write(ETC_HOSTS, `${await host.read(ETC_HOSTS)}10.1.1.1\tother\n`);
    await mapHosts(host, [{ ip: '10.0.0.1', names: serverHostNames(answers.node, answers.domain, 'k8s-cluster.site.test') }]);
    expect(await host.read(ETC_HOSTS)).toBe('127.0.0.1\tlocalhost\n10.1.1.1\tother\n# BEGIN ferry\n10.0.0.1\tk8s-cluster.site.test registry.site.test s1.site.test s1\n# END ferry\n');
  });
});

describe('the site service address', () => {
  it('is the registry FQDN on the site port, never an IP', () => {
    expect(siteServiceUrl('site.test')).toBe('https://registry.site.test:5443');
  });
});
