import semver from 'semver';
import { Codes, UsageError } from '../errors.js';
import { exists } from '../util/fsx.js';
import type { Reporter } from '../util/progress.js';
import type { Host } from './host.js';

export type CgroupDriver = 'systemd' | 'cgroupfs';
export interface NodeCgroups {
  version: 1 | 2;
  /** Who manages cgroups: kubelet and containerd's runc must agree with the init system. */
  driver: CgroupDriver;
}

/**
 * What to do on a cgroup v1 node. `allow` is the default: an air-gapped site often cannot change
 * its hosts' kernel command line on the day of the install, and Kubernetes still runs on v1 when
 * told to; the install warns loudly instead. `refuse` stops at preflight.
 */
export { CGROUP_V1_POLICIES, type CgroupV1Policy } from '../spec/answers.js';
import type { CgroupV1Policy } from '../spec/answers.js';

/** The node's cgroup hierarchy and driver, read through the root prefix (a test's node is a directory). */
export async function detectCgroups(host: Host): Promise<NodeCgroups> {
  return {
    // Only the unified hierarchy lists controllers at the mount root; a hybrid host's cgroup2 sits at
    // /sys/fs/cgroup/unified and counts as v1, as kubelet sees it.
    version: (await exists(host.p('/sys/fs/cgroup/cgroup.controllers'))) ? 2 : 1,
    // sd_booted(): systemd runs as PID 1 exactly when this directory exists.
    driver: (await exists(host.p('/run/systemd/system'))) ? 'systemd' : 'cgroupfs',
  };
}

/** detectCgroups once: several steps of a plan ask, and the answer does not change while it runs. */
export function cgroupsOnce(host: Host): () => Promise<NodeCgroups> {
  let cached: Promise<NodeCgroups> | undefined;
  return () => (cached ??= detectCgroups(host));
}

/** From 1.35 kubelet (failCgroupV1) and kubeadm (SystemVerification) refuse cgroup v1 unless told otherwise. */
export function v1RefusedByDefault(k8sVersion: string): boolean {
  const v = semver.coerce(k8sVersion);
  return !!v && semver.gte(v, '1.35.0');
}

/** KubeletConfiguration fields and kubeadm preflight checks to skip that a node's cgroups call for. */
export function cgroupSettings(cg: NodeCgroups, k8sVersion: string): { kubelet: { cgroupDriver: CgroupDriver; failCgroupV1?: false }; ignorePreflightErrors: string[] } {
  const optIn = cg.version === 1 && v1RefusedByDefault(k8sVersion);
  return {
    kubelet: { cgroupDriver: cg.driver, ...(optIn ? { failCgroupV1: false as const } : {}) },
    ignorePreflightErrors: optIn ? ['SystemVerification'] : [],
  };
}

/** On cgroup v1: refuses when the answers say so, otherwise warns loudly. */
export function checkCgroupV1(cg: NodeCgroups, policy: CgroupV1Policy | undefined, k8sVersion: string, reporter: Pick<Reporter, 'warn'>, node: string): void {
  if (cg.version === 2) return;
  const move = 'Move the node to cgroup v2: add systemd.unified_cgroup_hierarchy=1 to the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and reboot';
  if (policy === 'refuse') {
    throw new UsageError(Codes.cgroupV1Refused, `${node} runs cgroup v1 (no /sys/fs/cgroup/cgroup.controllers), and the answers say cgroupV1: refuse`, {
      hint: `${move}; or set cgroupV1: allow in the answers to install on cgroup v1 anyway.`,
    });
  }
  const done = v1RefusedByDefault(k8sVersion) ? ` ferry sets failCgroupV1: false and skips kubeadm's SystemVerification check so that Kubernetes ${k8sVersion} starts here.` : '';
  reporter.warn(
    `CGROUP V1 ON ${node.toUpperCase()}: cgroup v1 is deprecated and Kubernetes will drop it (refused by default since 1.35).${done} ${move}. Set cgroupV1: refuse in the answers to stop on such hosts.`,
  );
}
