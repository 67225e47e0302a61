import { stringify } from 'yaml';
import { assertSupportedKubernetes, KUBEADM_API_VERSION } from '../spec/kubernetes.js';
import { clusterFqdn, type InstallAnswers } from './answers.js';
import { cgroupSettings, type NodeCgroups } from './cgroups.js';
import { mergePatch, type Patch } from './patches.js';
import { API_PORT, CRI_SOCKET, RESOLV_CONF } from './paths.js';

/**
 * ferry renders kubeadm.k8s.io/v1beta4 only. An old bundle may name a release outside the supported
 * range (src/spec/kubernetes.ts): refused here by the same rule as at build time.
 */
export function kubeadmApiVersion(k8sVersion: string): typeof KUBEADM_API_VERSION {
  assertSupportedKubernetes(k8sVersion, 'the bundle', 'Rebuild the bundle with spec.kubernetes.version');
  return KUBEADM_API_VERSION;
}

/** v1beta4 writes extra args as a list of {name, value}. */
function args(m: Record<string, string>): { name: string; value: string }[] {
  return Object.entries(m).map(([name, value]) => ({ name, value }));
}

export interface KubeadmInput {
  answers: InstallAnswers;
  kubernetesVersion: string;
  imageRepository?: string;
  /** The first server's cgroups (default: v2 under systemd). */
  cgroups?: NodeCgroups;
}

/** kubeadm's ignorePreflightErrors, only when there is one; kubeadm refuses `all` beside single checks. */
function ignoring(checks: string[]): { ignorePreflightErrors?: string[] } {
  if (checks.some((c) => c.toLowerCase() === 'all')) return { ignorePreflightErrors: ['all'] };
  return checks.length ? { ignorePreflightErrors: [...new Set(checks)] } : {};
}

/**
 * InitConfiguration, ClusterConfiguration and KubeletConfiguration for the first server, each with
 * the answers' patch over it, and a KubeProxyConfiguration when the answers patch kube-proxy.
 */
export function renderKubeadmInit(i: KubeadmInput): string {
  const api = kubeadmApiVersion(i.kubernetesVersion);
  const a = i.answers;
  const fqdn = clusterFqdn(a);
  const cg = cgroupSettings(i.cgroups ?? { version: 2, driver: 'systemd' }, i.kubernetesVersion);
  const init = {
    apiVersion: api,
    kind: 'InitConfiguration',
    localAPIEndpoint: { advertiseAddress: a.node.ip, bindPort: API_PORT },
    nodeRegistration: {
      name: a.node.name,
      criSocket: CRI_SOCKET,
      kubeletExtraArgs: args({ 'node-ip': a.node.ip }),
      ...ignoring([...cg.ignorePreflightErrors, ...(a.ignoreKubeadmPreflight ?? [])]),
    },
  };
  const cluster = {
    apiVersion: api,
    kind: 'ClusterConfiguration',
    kubernetesVersion: i.kubernetesVersion,
    controlPlaneEndpoint: `${fqdn}:${API_PORT}`,
    imageRepository: i.imageRepository ?? 'registry.k8s.io',
    apiServer: { certSANs: [fqdn, a.node.name, a.node.ip, '127.0.0.1', 'localhost'] },
    networking: { podSubnet: a.podCidr, serviceSubnet: a.serviceCidr, dnsDomain: 'cluster.local' },
  };
  // Pods inherit the resolver ferry writes (the site DNS only): never systemd-resolved's upstream list,
  // which kubeadm would pick where resolved runs and which does not know the site's zone.
  const kubelet = { apiVersion: 'kubelet.config.k8s.io/v1beta1', kind: 'KubeletConfiguration', resolvConf: RESOLV_CONF, ...cg.kubelet };
  const p = a.patches ?? {};
  const docs: Patch[] = [mergePatch(init, p.initConfiguration), mergePatch(cluster, p.clusterConfiguration), mergePatch(kubelet, p.kubelet)];
  if (p.kubeProxy) docs.push(mergePatch({ apiVersion: 'kubeproxy.config.k8s.io/v1alpha1', kind: 'KubeProxyConfiguration' }, p.kubeProxy));
  return docs.map((d) => stringify(d)).join('---\n');
}

export interface JoinInput {
  kubernetesVersion: string;
  fqdn: string;
  token: string;
  caCertHash: string;
  nodeName: string;
  nodeIp: string;
  controlPlane?: { certificateKey: string };
  ignorePreflightErrors?: string[];
  /** A directory of kubeadm patches (kubeletconfiguration+merge.yaml): kubelet settings of this node. */
  patchesDir?: string;
  /** The answers' joinConfiguration patch. */
  patch?: Patch;
}

/**
 * The JoinConfiguration a joining node hands `kubeadm join --config`: by FQDN, never by an IP. It
 * holds the token and certificate key, which a command line would show to every process.
 */
export function renderKubeadmJoin(j: JoinInput): string {
  const api = kubeadmApiVersion(j.kubernetesVersion);
  const join = {
    apiVersion: api,
    kind: 'JoinConfiguration',
    discovery: { bootstrapToken: { apiServerEndpoint: `${j.fqdn}:${API_PORT}`, token: j.token, caCertHashes: [j.caCertHash] } },
    nodeRegistration: {
      name: j.nodeName,
      criSocket: CRI_SOCKET,
      // Always an address: the answers resolve a join host given by name.
      kubeletExtraArgs: args({ 'node-ip': j.nodeIp }),
      ...ignoring(j.ignorePreflightErrors ?? []),
    },
    ...(j.controlPlane ? { controlPlane: { localAPIEndpoint: { advertiseAddress: j.nodeIp, bindPort: API_PORT }, certificateKey: j.controlPlane.certificateKey } } : {}),
    ...(j.patchesDir ? { patches: { directory: j.patchesDir } } : {}),
  };
  return stringify(mergePatch(join, j.patch));
}

export const TOKEN_RE = /^[a-z0-9]{6}\.[a-z0-9]{16}$/;
