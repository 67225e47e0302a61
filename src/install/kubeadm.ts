import net from 'node:net';
import { stringify } from 'yaml';
import { clusterFqdn, type InstallAnswers } from './answers.js';
import { cgroupSettings, type NodeCgroups } from './cgroups.js';

export const CRI_SOCKET = 'unix:///run/containerd/containerd.sock';
export const API_PORT = 6443;

/** kubeadm v1beta4 arrived with Kubernetes 1.31; older releases take v1beta3. */
export function kubeadmApiVersion(k8sVersion: string): 'kubeadm.k8s.io/v1beta4' | 'kubeadm.k8s.io/v1beta3' {
  const m = /^v?(\d+)\.(\d+)/.exec(k8sVersion);
  const minor = m ? Number(m[1]) * 1000 + Number(m[2]) : 0;
  return minor >= 1031 ? 'kubeadm.k8s.io/v1beta4' : 'kubeadm.k8s.io/v1beta3';
}

/** v1beta4 writes extra args as a list of {name, value}; v1beta3 as a map. */
function args(api: string, m: Record<string, string>): unknown {
  return api.endsWith('v1beta4') ? Object.entries(m).map(([name, value]) => ({ name, value })) : m;
}

export interface KubeadmInput {
  answers: InstallAnswers;
  kubernetesVersion: string;
  imageRepository?: string;
  /** The first server's cgroups (default: v2). */
  cgroups?: NodeCgroups;
}

/** kubeadm's ignorePreflightErrors, only when there is one. */
const ignoring = (checks: string[]) => (checks.length ? { ignorePreflightErrors: [...new Set(checks)] } : {});

/** InitConfiguration, ClusterConfiguration and KubeletConfiguration for the first server. */
export function renderKubeadmInit(i: KubeadmInput): string {
  const api = kubeadmApiVersion(i.kubernetesVersion);
  const a = i.answers;
  const fqdn = clusterFqdn(a);
  const cg = cgroupSettings(i.cgroups ?? { version: 2 }, i.kubernetesVersion);
  const init = {
    apiVersion: api,
    kind: 'InitConfiguration',
    localAPIEndpoint: { advertiseAddress: a.node.ip, bindPort: API_PORT },
    nodeRegistration: {
      name: a.node.name,
      criSocket: CRI_SOCKET,
      kubeletExtraArgs: args(api, { 'node-ip': a.node.ip }),
      ...ignoring(cg.ignorePreflightErrors),
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
  const kubelet = { apiVersion: 'kubelet.config.k8s.io/v1beta1', kind: 'KubeletConfiguration', cgroupDriver: 'systemd', ...cg.kubelet };
  return [init, cluster, kubelet].map((d) => stringify(d)).join('---\n');
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
      // A join host may be named by DNS; kubelet takes only an address.
      ...(net.isIP(j.nodeIp) ? { kubeletExtraArgs: args(api, { 'node-ip': j.nodeIp }) } : {}),
      ...ignoring(j.ignorePreflightErrors ?? []),
    },
    ...(j.controlPlane ? { controlPlane: { localAPIEndpoint: { advertiseAddress: j.nodeIp, bindPort: API_PORT }, certificateKey: j.controlPlane.certificateKey } } : {}),
    ...(j.patchesDir ? { patches: { directory: j.patchesDir } } : {}),
  };
  return stringify(join);
}

export const TOKEN_RE = /^[a-z0-9]{6}\.[a-z0-9]{16}$/;
