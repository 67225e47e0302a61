import semver from 'semver';
import type { CgroupDriver } from './cgroups.js';
import { tomlString } from './containerd.js';
import { BIN_DIR, BOOTSTRAP_KUBELET_CONF, CONTAINERD_CERTS_D, KUBELET_CONF } from './paths.js';

/** Files ferry puts on every node besides the site service unit. */

export const CONTAINERD_UNIT = `# Written by ferry (containerd's upstream unit).
[Unit]
Description=containerd container runtime
Documentation=https://containerd.io
After=network.target local-fs.target

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=${BIN_DIR}/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=5
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
`;

export const KUBELET_UNIT = `# Written by ferry (the kubelet unit Kubernetes releases ship).
[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target containerd.service ferry-serve.service

[Service]
ExecStart=${BIN_DIR}/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
`;

export const KUBELET_KUBEADM_DROPIN = `# Written by ferry (kubeadm's drop-in for kubelet).
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=${BOOTSTRAP_KUBELET_CONF} --kubeconfig=${KUBELET_CONF}"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=${BIN_DIR}/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
`;

export const MODULES = ['overlay', 'br_netfilter'];
/** modules-load.d lists what to load at boot; a built-in module is named in a comment only. */
export const modulesConf = (load: string[], builtIn: string[] = []) =>
  `# Written by ferry: modules Kubernetes networking needs.\n${load.map((m) => `${m}\n`).join('')}${builtIn.length ? `# built into this kernel: ${builtIn.join(', ')}\n` : ''}`;
export const MODULES_CONF = modulesConf(MODULES);
export const SYSCTLS: Record<string, string> = { 'net.bridge.bridge-nf-call-iptables': '1', 'net.bridge.bridge-nf-call-ip6tables': '1', 'net.ipv4.ip_forward': '1' };
export const SYSCTL_CONF = `# Written by ferry: settings Kubernetes networking needs.\n${Object.entries(SYSCTLS).map(([k, v]) => `${k} = ${v}\n`).join('')}`;

export interface ContainerdNode {
  pauseImage: string;
  /** The node's cgroup driver: runc's must be kubelet's. */
  cgroupDriver: CgroupDriver;
  /** containerd 2.x reads its native version 3; 1.x only version 2 (see containerdConfigVersion). */
  configVersion: 2 | 3;
  /** The host cannot lower OOM scores (no CAP_SYS_RESOURCE): clamp pods' scores to containerd's own. */
  restrictOomScoreAdj?: boolean;
}

/**
 * The config version for the bundled containerd (bundle.json files[name=containerd].version):
 * 3 from containerd 2.0, else 2, which 1.x and (converted) 2.x both read.
 */
export function containerdConfigVersion(containerdVersion: string | undefined): 2 | 3 {
  const v = semver.coerce(containerdVersion ?? '');
  return v && v.major >= 2 ? 3 : 2;
}

/** containerd's config: CRI with the node's cgroup driver, mirrors from certs.d, our pause image. */
export function containerdConfig(c: ContainerdNode): string {
  const systemd = c.cgroupDriver === 'systemd';
  const certs = tomlString(CONTAINERD_CERTS_D);
  const oom = c.restrictOomScoreAdj ? '  restrict_oom_score_adj = true\n' : '';
  if (c.configVersion === 3) {
    // containerd 2.x split CRI into an images and a runtime plugin (docs/cri/config.md).
    return `# Written by ferry (containerd 2.x).
version = 3
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = ${tomlString(c.pauseImage)}
[plugins."io.containerd.cri.v1.images".registry]
  config_path = ${certs}
${oom ? `[plugins."io.containerd.cri.v1.runtime"]\n${oom}` : ''}[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
  SystemdCgroup = ${systemd}
`;
  }
  return `# Written by ferry (containerd 1.x).
version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = ${tomlString(c.pauseImage)}
${oom}[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = ${systemd}
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = ${certs}
`;
}

const BEGIN = '# BEGIN ferry';
const END = '# END ferry';

/** Replaces (or appends) ferry's managed block in /etc/hosts, keeping every other line. */
export function hostsWithBlock(current: string, entries: { ip: string; names: string[] }[]): string {
  const lines = current.split('\n');
  const start = lines.indexOf(BEGIN);
  const end = lines.indexOf(END);
  const kept = start >= 0 && end > start ? [...lines.slice(0, start), ...lines.slice(end + 1)] : lines;
  while (kept.length && kept[kept.length - 1] === '') kept.pop();
  const block = [BEGIN, ...entries.map((e) => `${e.ip}\t${e.names.join(' ')}`), END];
  return `${[...kept, ...block].join('\n')}\n`;
}

const RESOLV_HEADER = "# Written by ferry: only the site DNS, which forwards other names to the site's upstreams.";
/** Headers of earlier ferry versions: still ferry's, so still rewritten. */
const OLD_HEADERS = ["# Written by ferry: the site's own DNS first, then what this node had."];
/** What the node had before ferry, kept as comments: the site DNS's default upstreams, and what a reset puts back. */
const REPLACED = '# ferry replaced: nameserver ';

/** The name servers this node had before ferry wrote its resolv.conf (re-runs keep the first answer). */
export function resolversBefore(current: string): string[] {
  const lines = current.split('\n').map((l) => l.trim());
  const replaced = lines.filter((l) => l.startsWith(REPLACED)).map((l) => l.slice(REPLACED.length).trim());
  if (lines[0] === RESOLV_HEADER) return replaced;
  return [...new Set([...replaced, ...lines.filter((l) => /^nameserver\s/.test(l)).map((l) => l.split(/\s+/)[1]!)])];
}

/**
 * resolv.conf with only the site's name servers, the site domain first in `search`, and every other
 * line the node had (options). The name servers it had go into comments: a resolver that does not
 * know the site's zone must never be asked, or pods (which inherit this file, through CoreDNS too)
 * get REFUSED for site names whenever it is picked. Re-running changes nothing.
 */
export function resolvConf(current: string, nameservers: string[], domain: string): string {
  const lines = current.split('\n').map((l) => l.trim());
  const had = resolversBefore(current).filter((n) => !nameservers.includes(n));
  const search = lines.filter((l) => /^(search|domain)\s/.test(l)).flatMap((l) => l.split(/\s+/).slice(1));
  const keep = lines.filter((l) => l && l !== RESOLV_HEADER && !OLD_HEADERS.includes(l) && !l.startsWith(REPLACED) && !/^(nameserver|search|domain)\s/.test(l));
  const servers = [...new Set(nameservers)];
  return `${[RESOLV_HEADER, `search ${[...new Set([domain, ...search])].join(' ')}`, ...servers.map((n) => `nameserver ${n}`), ...had.map((n) => REPLACED + n), ...keep].join('\n')}\n`;
}
