/*
 * Every place on a host that the install and join plans read or write, and the ports they serve.
 * Paths are as the host sees them; Host.p() puts a test's root prefix in front.
 */

/** ferry's own files on every node. */
export const FERRY_ROOT = '/var/lib/ferry';
/** Step markers: what each finished step was applied with. */
export const STATE_DIR = `${FERRY_ROOT}/state`;
/** Each run's step logs. */
export const LOG_DIR = '/var/log/ferry';
/** The unpacked, verified bundle that the site service serves. */
export const BUNDLE_DIR = `${FERRY_ROOT}/bundle`;
/** The site store of every added bundle; BUNDLE_DIR is a link to its current bundle's view. */
export const STORE_DIR = `${FERRY_ROOT}/store`;
export const RUNTIME_DIR = `${FERRY_ROOT}/runtime`;
/** The bundled Node.js runtime that the site service and node-join run on. */
export const RUNTIME_NODE = `${RUNTIME_DIR}/node`;
export const FERRY_DIR = `${FERRY_ROOT}/ferry`;
/** The single-file CLI. */
export const FERRY_MJS = `${FERRY_DIR}/ferry.mjs`;
/** On a node ferry reached over SSH: the digest of the ferry tree and runtime uploaded there, written after the upload. */
export const FERRY_DIGEST = `${FERRY_ROOT}/ferry.digest`;
/** Where a joining server receives the bundle file (and its parts). */
export const INCOMING_DIR = `${FERRY_ROOT}/incoming`;
/** The site state's copy on every server (src/cluster/mirror.ts keeps the fact). */
export { STATE_MIRROR } from '../cluster/mirror.js';
/** Where a joining node keeps the binaries it fetched from the site service. */
export const DOWNLOADS_DIR = `${FERRY_ROOT}/downloads`;

/** ferry's configuration on a server. */
export const PKI_DIR = '/etc/ferry/pki';
/** The site CA, on every node. Its key (SITE_CA_KEY) is on servers only. */
export const SITE_CA = `${PKI_DIR}/ca.crt`;
export const SITE_CA_KEY = `${PKI_DIR}/ca.key`;
/** The site service's certificate and key: <prefix>.crt, <prefix>.key. */
export const REGISTRY_CERT_PREFIX = `${PKI_DIR}/registry`;
export const REGISTRY_CERT = `${REGISTRY_CERT_PREFIX}.crt`;
export const REGISTRY_KEY = `${REGISTRY_CERT_PREFIX}.key`;
/** The bundle signer's public key, which a joining server verifies its copy of the bundle with. */
export const BUNDLE_PUB = '/etc/ferry/bundle.pub';
/** The nodes of the cluster as ferry knows them. */
export const NODES_FILE = '/etc/ferry/nodes.json';
export const KUBEADM_CONFIG = '/etc/ferry/kubeadm.yaml';
export const JOIN_CONFIG = '/etc/ferry/kubeadm-join.yaml';
/** kubeadm patches of this node: its own kubelet settings over the cluster's kubelet-config. */
export const PATCHES_DIR = '/etc/ferry/kubeadm-patches';
/** The answers ferry install saves after its questions, and ferry join reads by default. */
export const ANSWERS_FILE = '/etc/ferry/answers.yaml';
/** The answers of an install declined or cancelled at its prompts, offered as defaults the next time (not an answers file). */
export const ANSWERS_DRAFT = `${FERRY_ROOT}/answers.draft.yaml`;

/** What kubeadm writes. */
export { ADMIN_CONF } from '../kube/paths.js';
export const KUBELET_CONF = '/etc/kubernetes/kubelet.conf';
export const BOOTSTRAP_KUBELET_CONF = '/etc/kubernetes/bootstrap-kubelet.conf';
export const CLUSTER_CA = '/etc/kubernetes/pki/ca.crt';

/** System files ferry writes. */
export const ETC_HOSTS = '/etc/hosts';
export const RESOLV_CONF = '/etc/resolv.conf';
/** Where systemd-resolved lists the resolvers behind its 127.0.0.53 stub. */
export const SYSTEMD_RESOLVED_CONF = '/run/systemd/resolve/resolv.conf';
/** The site CA in the system's trust store. */
export const SYSTEM_SITE_CA = '/usr/local/share/ca-certificates/ferry-site-ca.crt';
export const SYSTEMD_DIR = '/etc/systemd/system';
export const MODULES_LOAD_FILE = '/etc/modules-load.d/ferry-kubernetes.conf';
export const SYSCTL_FILE = '/etc/sysctl.d/99-ferry-kubernetes.conf';
export const CONTAINERD_DIR = '/etc/containerd';
export const CONTAINERD_CONFIG = `${CONTAINERD_DIR}/config.toml`;
export const CONTAINERD_CERTS_D = `${CONTAINERD_DIR}/certs.d`;
export const CRI_SOCKET = 'unix:///run/containerd/containerd.sock';
/** Where the bundle's binaries go: executables, runc, CNI plugins. */
export const BIN_DIR = '/usr/local/bin';
export const RUNC_PATH = '/usr/local/sbin/runc';
export const CNI_BIN_DIR = '/opt/cni/bin';
/** `ferry` on every node's PATH: runs FERRY_MJS with RUNTIME_NODE (launcher.ts). */
export const FERRY_LAUNCHER = `${BIN_DIR}/ferry`;

/** The site service (registry and file repository) on every server. */
export const SITE_PORT = 5443;
/** The API server on every server, and the LB on every agent. */
export const API_PORT = 6443;
/** What else a control plane listens on: kubelet, controller-manager, scheduler, etcd. */
export const CONTROL_PLANE_PORTS = [10250, 10257, 10259, 2379, 2380];
/** etcd snapshots ferry takes (the pre-upgrade one, the scheduled backups), root-only. */
export const BACKUP_DIR = `${FERRY_ROOT}/backups`;
/** The site's backup key (32 random bytes, 0600), the same on every server; a backup is useless without it. */
export const BACKUP_KEY = '/etc/ferry/backup.key';
