import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { kubeadmApiVersion, renderKubeadmInit } from '../../src/install/kubeadm.js';
import { assertSupportedKubernetes, kubeadmImages } from '../../src/spec/kubernetes.js';

const answers = { apiVersion: 'ferry.dev/v1alpha1', kind: 'InstallAnswers', domain: 'site.test', node: { name: 'n1', ip: '10.0.0.1' }, podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' } as const;

describe('the Kubernetes version gate', () => {
  it('accepts v1.35 to v1.37 and refuses the rest with a usage error naming the version and the range', () => {
    for (const v of ['v1.35.0', 'v1.36.3', 'v1.37.2']) expect(assertSupportedKubernetes(v, 'x').raw).toBe(v);
    for (const v of ['v1.34.3', 'v1.31.2', 'v1.38.0', '1.37.2', 'v1.37', 'latest']) {
      expect(() => assertSupportedKubernetes(v, 'the bundle'), v).toThrowError(
        expect.objectContaining({ code: 'KUBERNETES_VERSION_UNSUPPORTED', exit: 'usage', message: `the bundle: Kubernetes ${v} is not supported; ferry installs Kubernetes v1.35 to v1.37 (kubeadm config kubeadm.k8s.io/v1beta4)` }),
      );
    }
  });

  it('renders kubeadm config v1beta4 for a supported release and refuses an old bundle at install time', () => {
    expect(kubeadmApiVersion('v1.35.4')).toBe('kubeadm.k8s.io/v1beta4');
    const docs = parseAllDocuments(renderKubeadmInit({ answers, kubernetesVersion: 'v1.37.2' })).map((d) => d.toJS() as { apiVersion: string; kind: string; nodeRegistration?: { kubeletExtraArgs: unknown } });
    expect(docs.filter((d) => d.kind.endsWith('Configuration') && d.kind !== 'KubeletConfiguration').map((d) => d.apiVersion)).toEqual(['kubeadm.k8s.io/v1beta4', 'kubeadm.k8s.io/v1beta4']);
    expect(docs[0]!.nodeRegistration!.kubeletExtraArgs).toEqual([{ name: 'node-ip', value: '10.0.0.1' }]);
    let err: { code?: string; hint?: string } | undefined;
    try {
      renderKubeadmInit({ answers, kubernetesVersion: 'v1.31.2' });
    } catch (e) {
      err = e as typeof err;
    }
    expect(err).toMatchObject({ code: 'KUBERNETES_VERSION_UNSUPPORTED' });
    expect(err!.hint).toMatch(/^Rebuild the bundle with spec\.kubernetes\.version to a release from v1\.35\.0/);
  });

  it('names the images kubeadm of each supported minor pulls, CoreDNS under coredns/ only in registry.k8s.io', () => {
    expect(kubeadmImages('v1.37.2')).toEqual([
      'registry.k8s.io/kube-apiserver:v1.37.2',
      'registry.k8s.io/kube-controller-manager:v1.37.2',
      'registry.k8s.io/kube-scheduler:v1.37.2',
      'registry.k8s.io/kube-proxy:v1.37.2',
      'registry.k8s.io/coredns/coredns:v1.14.6',
      'registry.k8s.io/pause:3.10.2',
      'registry.k8s.io/etcd:3.7.0-0',
    ]);
    expect(kubeadmImages('v1.36.3', 'harbor.site/k8s').slice(4)).toEqual(['harbor.site/k8s/coredns:v1.14.2', 'harbor.site/k8s/pause:3.10.2', 'harbor.site/k8s/etcd:3.6.8-0']);
    expect(kubeadmImages('v1.35.4').slice(4)).toEqual(['registry.k8s.io/coredns/coredns:v1.13.1', 'registry.k8s.io/pause:3.10.1', 'registry.k8s.io/etcd:3.6.6-0']);
  });
});
