import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { loadAnswers, type InstallAnswers } from '../../src/install/answers.js';
import { renderKubeadmInit, renderKubeadmJoin } from '../../src/install/kubeadm.js';
import { tmpdir } from '../helpers/peers.js';

const answers: InstallAnswers = { apiVersion: 'ferry.dev/v1alpha1', kind: 'InstallAnswers', domain: 'site.test', node: { name: 'n1', ip: '10.0.0.1' }, podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' };
const initSkips = (a: Partial<InstallAnswers>, version: 1 | 2) =>
  (parseAllDocuments(renderKubeadmInit({ answers: { ...answers, ...a }, kubernetesVersion: 'v1.37.2', cgroups: { version, driver: 'systemd' } })).map((d) => d.toJS() as Record<string, any>).find((d) => d.kind === 'InitConfiguration')!.nodeRegistration.ignorePreflightErrors);
const joinSkips = (checks: string[]) =>
  (parseAllDocuments(renderKubeadmJoin({ kubernetesVersion: 'v1.37.2', fqdn: 'f', token: 't', caCertHash: 'h', nodeName: 'n2', nodeIp: '10.0.0.2', ignorePreflightErrors: checks }))[0]!.toJS() as Record<string, any>).nodeRegistration.ignorePreflightErrors;

describe("kubeadm's ignorePreflightErrors", () => {
  it("carries the answers' ignoreKubeadmPreflight beside what a cgroup v1 node needs", () => {
    expect(initSkips({ ignoreKubeadmPreflight: ['NumCPU', 'Mem'] }, 1)).toEqual(['SystemVerification', 'NumCPU', 'Mem']);
    expect(initSkips({ ignoreKubeadmPreflight: ['NumCPU', 'SystemVerification'] }, 1)).toEqual(['SystemVerification', 'NumCPU']);
    expect(initSkips({ ignoreKubeadmPreflight: ['NumCPU'] }, 2)).toEqual(['NumCPU']);
    expect(initSkips({}, 2)).toBeUndefined();
  });

  it('is only all when all is asked for: kubeadm refuses all beside single checks', () => {
    expect(initSkips({ ignoreKubeadmPreflight: ['All'] }, 1)).toEqual(['all']);
    expect(joinSkips(['SystemVerification', 'all'])).toEqual(['all']);
    expect(joinSkips(['SystemVerification', 'Swap'])).toEqual(['SystemVerification', 'Swap']);
    expect(joinSkips([])).toBeUndefined();
  });

  it('takes only a list of check names in the answers, naming the line of a bad one', async () => {
    const file = path.join(await tmpdir(), 'answers.yaml');
    const base = 'apiVersion: ferry.dev/v1alpha1\nkind: InstallAnswers\ndomain: site.test\nnode: {name: n1, ip: 10.0.0.1}\npodCidr: 10.244.0.0/16\nserviceCidr: 10.96.0.0/12\n';
    await fs.writeFile(file, `${base}ignoreKubeadmPreflight: [NumCPU, Port-6443, FileContent--proc-sys-net-ipv4-ip_forward]\n`);
    expect((await loadAnswers(file)).ignoreKubeadmPreflight).toEqual(['NumCPU', 'Port-6443', 'FileContent--proc-sys-net-ipv4-ip_forward']);
    await fs.writeFile(file, `${base}ignoreKubeadmPreflight:\n  - NumCPU\n  - "--all"\n`);
    await expect(loadAnswers(file)).rejects.toThrow(new RegExp(`${file}:9:\\d+: ignoreKubeadmPreflight\\[1\\] "--all" is not valid \\(expected: A kubeadm preflight check name`));
    await fs.writeFile(file, `${base}ignoreKubeadmPreflight: NumCPU\n`);
    await expect(loadAnswers(file)).rejects.toThrow(new RegExp(`${file}:7:\\d+: ignoreKubeadmPreflight must be array \\(expected: kubeadm preflight checks to skip`));
  });
});
