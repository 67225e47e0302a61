import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { loadAnswers, type InstallAnswers } from '../../src/install/answers.js';
import { renderKubeadmInit, renderKubeadmJoin } from '../../src/install/kubeadm.js';
import { combinePatches, mergePatch } from '../../src/install/patches.js';
import { tmpdir } from '../helpers/peers.js';

const answers: InstallAnswers = { apiVersion: 'ferry.dev/v1alpha1', kind: 'InstallAnswers', domain: 'site.test', node: { name: 'n1', ip: '10.0.0.1' }, podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' };
const docs = (text: string) => parseAllDocuments(text).map((d) => d.toJS() as Record<string, any>);
const kind = (text: string, k: string) => docs(text).find((d) => d.kind === k);

describe('answers patches', () => {
  it('merge like a JSON merge patch: objects key by key, arrays and scalars replace, null removes', () => {
    const doc = { a: { b: 1, c: [1, 2], d: 'x' }, e: 1 };
    expect(mergePatch(doc, { a: { c: [3], d: null, f: { g: true } }, e: 2 })).toEqual({ a: { b: 1, c: [3], f: { g: true } }, e: 2 });
    expect(doc).toEqual({ a: { b: 1, c: [1, 2], d: 'x' }, e: 1 });
    // Combined patches keep null, so kubeadm still removes the key from the cluster's document.
    expect(combinePatches({ cgroupDriver: 'systemd' }, { failSwapOn: false, evictionHard: null })).toEqual({ cgroupDriver: 'systemd', failSwapOn: false, evictionHard: null });
  });

  it("go over each of ferry's init documents, the operator's value winning, and bring a KubeProxyConfiguration when kube-proxy is patched", () => {
    const plain = renderKubeadmInit({ answers, kubernetesVersion: 'v1.37.2', cgroups: { version: 2, driver: 'systemd' } });
    expect(kind(plain, 'KubeProxyConfiguration')).toBeUndefined();
    const text = renderKubeadmInit({
      answers: {
        ...answers,
        patches: {
          kubelet: { failSwapOn: false, cgroupDriver: 'cgroupfs' },
          kubeProxy: { conntrack: { maxPerCore: 0 } },
          clusterConfiguration: { apiServer: { extraArgs: [{ name: 'audit-log-maxage', value: '7' }] }, networking: { dnsDomain: 'cluster.site' } },
          initConfiguration: { nodeRegistration: { taints: [] } },
        },
      },
      kubernetesVersion: 'v1.37.2',
      cgroups: { version: 2, driver: 'systemd' },
    });
    expect(kind(text, 'KubeletConfiguration')).toEqual({ apiVersion: 'kubelet.config.k8s.io/v1beta1', kind: 'KubeletConfiguration', resolvConf: '/etc/resolv.conf', cgroupDriver: 'cgroupfs', failSwapOn: false });
    expect(kind(text, 'KubeProxyConfiguration')).toEqual({ apiVersion: 'kubeproxy.config.k8s.io/v1alpha1', kind: 'KubeProxyConfiguration', conntrack: { maxPerCore: 0 } });
    const cluster = kind(text, 'ClusterConfiguration')!;
    expect(cluster.apiServer).toEqual({ certSANs: expect.arrayContaining(['k8s-cluster.site.test']), extraArgs: [{ name: 'audit-log-maxage', value: '7' }] });
    expect(cluster.networking).toEqual({ podSubnet: '10.244.0.0/16', serviceSubnet: '10.96.0.0/12', dnsDomain: 'cluster.site' });
    expect(kind(text, 'InitConfiguration')!.nodeRegistration).toMatchObject({ name: 'n1', taints: [] });
  });

  it('go over the JoinConfiguration too', () => {
    const join = kind(renderKubeadmJoin({ kubernetesVersion: 'v1.37.2', fqdn: 'k8s-cluster.site.test', token: 't', caCertHash: 'h', nodeName: 'n2', nodeIp: '10.0.0.2', patch: { nodeRegistration: { imagePullSerial: false } } }), 'JoinConfiguration')!;
    expect(join.nodeRegistration).toEqual({ name: 'n2', criSocket: 'unix:///run/containerd/containerd.sock', kubeletExtraArgs: [{ name: 'node-ip', value: '10.0.0.2' }], imagePullSerial: false });
  });

  it('refuse an unknown target, a patch that is not a mapping and a patched kind, naming the field and its line', async () => {
    const file = path.join(await tmpdir(), 'answers.yaml');
    await fs.writeFile(
      file,
      [
        'apiVersion: ferry.dev/v1alpha1',
        'kind: InstallAnswers',
        'domain: site.test',
        'node: {name: n1, ip: 10.0.0.1}',
        'podCidr: 10.244.0.0/16',
        'serviceCidr: 10.96.0.0/12',
        'patches:',
        '  kubelet: {failSwapOn: false}',
        '  kubeproxy: {conntrack: {maxPerCore: 0}}',
        '  clusterConfiguration: [apiServer]',
        '  joinConfiguration: {kind: InitConfiguration}',
        '',
      ].join('\n'),
    );
    const err = await loadAnswers(file).then(() => undefined, (e: Error & { code?: string }) => e);
    expect(err?.code).toBe('SPEC_INVALID');
    expect(err?.message).toMatch(new RegExp(`${file}:9:\\d+: patches\\.kubeproxy is not a known field; did you mean kubeProxy\\?`));
    expect(err?.message).toMatch(new RegExp(`${file}:10:\\d+: patches\\.clusterConfiguration must be object`));
    expect(err?.message).toMatch(new RegExp(`${file}:11:\\d+: patches\\.joinConfiguration\\.kind cannot be patched`));
    expect(err?.message).not.toMatch(/patches\.kubelet /);
  });
});
