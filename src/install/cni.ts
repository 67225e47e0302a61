import type { KubernetesObject } from '@kubernetes/client-node';

/** The annotation flannel reads at start to pick a node's IP, and so its interface (GetStoredPublicIP). */
export const FLANNEL_PUBLIC_IP = 'flannel.alpha.coreos.com/node-public-ip';

/**
 * What a CNI needs to know about a node before its pod runs there. flannel otherwise takes the
 * interface of the default route, which an air-gapped host often lacks (and a multi-homed one may
 * have on the wrong network): it then exits. The answers' node IP is the one the operator chose.
 */
export function cniNodeObjects(cni: string | undefined, node: { name: string; ip: string }): KubernetesObject[] {
  if (cni !== 'flannel') return [];
  return [{ apiVersion: 'v1', kind: 'Node', metadata: { name: node.name, annotations: { [FLANNEL_PUBLIC_IP]: node.ip } } }];
}
