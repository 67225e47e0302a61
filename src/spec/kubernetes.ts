import { Codes, SpecError } from '../errors.js';

/**
 * The Kubernetes releases ferry installs, in one place. ferry renders kubeadm config
 * kubeadm.k8s.io/v1beta4 only (v1beta3 is gone since 1.36), and knows which etcd, CoreDNS and pause
 * images kubeadm of each supported minor asks for.
 *
 * A minor newer than the range is refused, not warned about: ferry cannot name the images its
 * kubeadm will ask for (so a bundle could not be shown to install offline), and kubeadm's config
 * API is moving on (1.37 already carries a v1 beside v1beta4).
 */
const KUBERNETES_MINORS = { major: 1, min: 35, max: 37 } as const;
export const KUBEADM_API_VERSION = 'kubeadm.k8s.io/v1beta4';
const DEFAULT_IMAGE_REPOSITORY = 'registry.k8s.io';

/**
 * Besides the control plane at the Kubernetes version, `kubeadm config images list` names these, by
 * minor: DefaultEtcdVersion / SupportedEtcdVersion, CoreDNSVersion and PauseVersion in
 * cmd/kubeadm/app/constants/constants.go of k8s.io/kubernetes v1.35.4, v1.36.3 and v1.37.2.
 */
const KUBEADM_ADDON_IMAGES: Record<number, { etcd: string; coredns: string; pause: string }> = {
  35: { etcd: '3.6.6-0', coredns: 'v1.13.1', pause: '3.10.1' },
  36: { etcd: '3.6.8-0', coredns: 'v1.14.2', pause: '3.10.2' },
  37: { etcd: '3.7.0-0', coredns: 'v1.14.6', pause: '3.10.2' },
};

export interface KubernetesVersion {
  raw: string;
  major: number;
  minor: number;
  patch: number;
}

function parseKubernetesVersion(v: string): KubernetesVersion | undefined {
  const m = /^v(\d+)\.(\d+)\.(\d+)$/.exec(v.trim());
  return m ? { raw: v.trim(), major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]) } : undefined;
}

const supportedRange = () => `v${KUBERNETES_MINORS.major}.${KUBERNETES_MINORS.min} to v${KUBERNETES_MINORS.major}.${KUBERNETES_MINORS.max}`;

/**
 * Refuses a Kubernetes version outside the supported minors. `where` says whose version it is (a
 * spec field with its position, or "the bundle"), and `fix` what the operator should change.
 */
export function assertSupportedKubernetes(version: string, where: string, fix = 'Set spec.kubernetes.version'): KubernetesVersion {
  const v = parseKubernetesVersion(version);
  const { major, min, max } = KUBERNETES_MINORS;
  if (v && v.major === major && v.minor >= min && v.minor <= max) return v;
  const newer = !!v && (v.major > major || (v.major === major && v.minor > max));
  throw new SpecError(Codes.kubernetesUnsupported, `${where}: Kubernetes ${version} is not supported; ferry installs Kubernetes ${supportedRange()} (kubeadm config ${KUBEADM_API_VERSION})`, {
    hint: `${fix} to a release from v${major}.${min}.0 to v${major}.${max}.x, such as v${major}.${max}.2, with kubeadm, kubelet and kubectl binaries and control-plane images of that release${newer ? `, or use a ferry release that supports v${v!.major}.${v!.minor}` : ''}.`,
    details: { version, supported: supportedRange() },
  });
}

/**
 * The images kubeadm of the given release pulls for `imageRepository`, as cmd/kubeadm/app/images
 * names them: kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, CoreDNS (under
 * coredns/ only in the default repository), pause and etcd.
 */
export function kubeadmImages(version: string, imageRepository = DEFAULT_IMAGE_REPOSITORY): string[] {
  const v = assertSupportedKubernetes(version, 'kubeadm images');
  const addons = KUBEADM_ADDON_IMAGES[v.minor]!;
  const repo = imageRepository.replace(/\/+$/, '');
  const dns = repo === DEFAULT_IMAGE_REPOSITORY ? `${repo}/coredns/coredns` : `${repo}/coredns`;
  return [
    ...['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kube-proxy'].map((c) => `${repo}/${c}:${v.raw}`),
    `${dns}:${addons.coredns}`,
    `${repo}/pause:${addons.pause}`,
    `${repo}/etcd:${addons.etcd}`,
  ];
}

/** The release a bundle installs: one built from a spec without spec.kubernetes cannot be installed. */
export function bundleKubernetesVersion(m: { kubernetes?: { version: string } }): string {
  if (!m.kubernetes?.version) {
    throw new SpecError(Codes.kubernetesUnsupported, 'the bundle names no Kubernetes release (its spec has no spec.kubernetes)', {
      hint: 'Install a bundle built from a spec with spec.kubernetes.version, such as bundle-spec/kubernetes.yaml.',
    });
  }
  return m.kubernetes.version;
}
