import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { loadAnswers, type InstallAnswers } from '../../src/install/answers.js';
import { cgroupSettings, checkCgroupV1, detectCgroups } from '../../src/install/cgroups.js';
import { Host } from '../../src/install/host.js';
import { renderKubeadmInit, renderKubeadmJoin } from '../../src/install/kubeadm.js';
import { containerdConfig } from '../../src/install/system-files.js';
import { tmpdir } from '../helpers/peers.js';

const answers: InstallAnswers = { apiVersion: 'ferry.dev/v1alpha1', kind: 'InstallAnswers', domain: 'site.test', node: { name: 'n1', ip: '10.0.0.1' }, podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' };
const docs = (text: string) => parseAllDocuments(text).map((d) => d.toJS() as Record<string, any>);
const kind = (text: string, k: string) => docs(text).find((d) => d.kind === k)!;

async function node(files: string[]): Promise<Host> {
  const root = await tmpdir();
  for (const f of files) {
    await fs.mkdir(path.dirname(path.join(root, f)), { recursive: true });
    await fs.writeFile(path.join(root, f), '');
  }
  return new Host(root);
}

describe('cgroup version', () => {
  it('is v2 when the cgroup mount root lists controllers, v1 on a hybrid host whose cgroup2 is at unified/', async () => {
    expect((await detectCgroups(await node(['sys/fs/cgroup/cgroup.controllers']))).version).toBe(2);
    expect((await detectCgroups(await node(['sys/fs/cgroup/unified/cgroup.controllers', 'sys/fs/cgroup/memory/tasks']))).version).toBe(1);
  });

  it('on v1 with Kubernetes 1.35 or later, sets failCgroupV1: false and skips SystemVerification for init and join', () => {
    const init = renderKubeadmInit({ answers, kubernetesVersion: 'v1.37.2', cgroups: { version: 1, driver: 'systemd' } });
    expect(kind(init, 'KubeletConfiguration').failCgroupV1).toBe(false);
    expect(kind(init, 'InitConfiguration').nodeRegistration.ignorePreflightErrors).toEqual(['SystemVerification']);
    const join = renderKubeadmJoin({ kubernetesVersion: 'v1.37.2', fqdn: 'k8s-cluster.site.test', token: 't', caCertHash: 'h', nodeName: 'n2', nodeIp: '10.0.0.2', ignorePreflightErrors: ['SystemVerification'], patchesDir: '/etc/ferry/kubeadm-patches' });
    expect(kind(join, 'JoinConfiguration').nodeRegistration.ignorePreflightErrors).toEqual(['SystemVerification']);
    expect(kind(join, 'JoinConfiguration').patches).toEqual({ directory: '/etc/ferry/kubeadm-patches' });
  });

  it('leaves kubelet and kubeadm as they are on v2, and on v1 before 1.35', () => {
    const init = renderKubeadmInit({ answers, kubernetesVersion: 'v1.37.2', cgroups: { version: 2, driver: 'systemd' } });
    expect(kind(init, 'KubeletConfiguration')).not.toHaveProperty('failCgroupV1');
    expect(kind(init, 'InitConfiguration').nodeRegistration).not.toHaveProperty('ignorePreflightErrors');
    // ferry renders no release before 1.35 any more (src/spec/kubernetes.ts); the rule itself still holds.
    const before = cgroupSettings({ version: 1, driver: 'systemd' }, 'v1.34.3');
    expect(before.kubelet).not.toHaveProperty('failCgroupV1');
    expect(before.ignorePreflightErrors).toEqual([]);
  });

  it('warns loudly on v1, saying how to move to v2, and refuses when the answers say so', () => {
    const warnings: string[] = [];
    const reporter = { warn: (m: string) => warnings.push(m) };
    checkCgroupV1({ version: 2, driver: 'systemd' }, undefined, 'v1.37.2', reporter, 'n1');
    expect(warnings).toEqual([]);
    checkCgroupV1({ version: 1, driver: 'systemd' }, 'allow', 'v1.37.2', reporter, 'n1');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/^CGROUP V1 ON N1: cgroup v1 is deprecated and Kubernetes will drop it/);
    expect(warnings[0]).toContain('failCgroupV1: false');
    expect(warnings[0]).toContain('systemd.unified_cgroup_hierarchy=1');
    expect(() => checkCgroupV1({ version: 1, driver: 'systemd' }, 'refuse', 'v1.37.2', reporter, 'n1')).toThrow(
      expect.objectContaining({ code: 'CGROUP_V1_REFUSED', exit: 'usage', hint: expect.stringContaining('systemd.unified_cgroup_hierarchy=1') }),
    );
  });

  it('takes the systemd driver where systemd is PID 1 (/run/systemd/system), cgroupfs elsewhere, for kubelet and runc', async () => {
    const systemd = await detectCgroups(await node(['run/systemd/system/.keep']));
    const plain = await detectCgroups(await node([]));
    expect([systemd.driver, plain.driver]).toEqual(['systemd', 'cgroupfs']);
    for (const cg of [systemd, plain]) {
      expect(kind(renderKubeadmInit({ answers, kubernetesVersion: 'v1.37.2', cgroups: cg }), 'KubeletConfiguration').cgroupDriver).toBe(cg.driver);
      expect(containerdConfig({ pauseImage: 'registry.k8s.io/pause:3.10', cgroupDriver: cg.driver, configVersion: 3 })).toContain(`SystemdCgroup = ${cg.driver === 'systemd'}\n`);
    }
  });

  it('takes cgroupV1: allow or refuse in the answers, and names the line of anything else', async () => {
    const file = path.join(await tmpdir(), 'answers.yaml');
    const base = 'apiVersion: ferry.dev/v1alpha1\nkind: InstallAnswers\ndomain: site.test\nnode: {name: n1, ip: 10.0.0.1}\npodCidr: 10.244.0.0/16\nserviceCidr: 10.96.0.0/12\n';
    await fs.writeFile(file, `${base}cgroupV1: refuse\n`);
    expect((await loadAnswers(file)).cgroupV1).toBe('refuse');
    await fs.writeFile(file, `${base}cgroupV1: maybe\n`);
    await expect(loadAnswers(file)).rejects.toThrow(new RegExp(`${file}:7:\\d+: cgroupV1 must be allow or refuse`));
  });
});
