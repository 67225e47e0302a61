import { promises as fs } from 'node:fs';

/* Linux capabilities of this process, which ferry's services inherit from the same bounding set. */

const CAP_SYS_RESOURCE = 24;

/** Whether the effective set holds a capability, from /proc/self/status (CapEff, hex). */
export async function hasCapability(bit: number, status?: string): Promise<boolean> {
  const text = status ?? (await fs.readFile('/proc/self/status', 'utf8').catch(() => ''));
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(text)?.[1];
  if (!hex) return true;
  return ((BigInt(`0x${hex}`) >> BigInt(bit)) & 1n) === 1n;
}

/**
 * A host that denies CAP_SYS_RESOURCE (a container, a sandboxed VM) cannot lower a process's
 * oom_score_adj, which runc does for every pod that kubelet ranks above the default (static pods,
 * the pause sandbox): runc then fails with "can't get final child's PID from pipe". containerd's
 * restrict_oom_score_adj clamps those scores to its own instead.
 */
export const mayLowerOomScore = (status?: string) => hasCapability(CAP_SYS_RESOURCE, status);
