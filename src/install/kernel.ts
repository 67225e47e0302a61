import { Codes, HostError } from '../errors.js';
import { exists } from '../util/fsx.js';
import type { Host } from './host.js';
import { MODULES_LOAD_FILE, SYSCTL_FILE } from './paths.js';
import { MODULES, modulesConf, SYSCTL_CONF, SYSCTLS } from './system-files.js';

/*
 * Kernel modules and sysctls for Kubernetes networking, on kernels as they come: a module may be
 * built in (no /lib/modules, no modprobe to speak of), and in a network namespace some sysctls are
 * read-only. Host files are read through the root prefix, as everywhere in the plan.
 */

/** What each module is for, for the operator who has to find it. */
const NEEDED_FOR: Record<string, string> = {
  overlay: "containerd's overlayfs snapshotter",
  br_netfilter: 'pod traffic over the bridge through iptables (kube-proxy, the CNI)',
};

/** Where a module shows once the kernel has it, besides /sys/module (absent for a built-in module without parameters). */
const SIGNS: Record<string, { file: string; line?: RegExp }> = {
  overlay: { file: '/proc/filesystems', line: /\toverlay$/m },
  br_netfilter: { file: '/proc/sys/net/bridge/bridge-nf-call-iptables' },
};

const lastLine = (s: string) => s.trim().split('\n').filter(Boolean).slice(-1)[0] ?? '';

/** The host's own tools: the bundle does not carry them, so a missing one is the operator's to install. */
const HOST_TOOL: Record<string, string> = { modprobe: 'kmod', sysctl: 'procps' };

/** Runs a host tool; one that is not installed is named with the package that has it. */
async function runHostTool(host: Host, cmd: string, args: string[]) {
  try {
    return await host.run(cmd, args, { allowFail: true });
  } catch (e) {
    if ((e as { cause?: { code?: string } }).cause?.code !== 'ENOENT') throw e;
    throw new HostError(Codes.hostCommandMissing, `${cmd} is not installed on this host (not found on PATH)`, {
      hint: `ferry uses the host's own ${cmd}; the bundle does not carry it. Install it (package ${HOST_TOOL[cmd]} on Debian, Ubuntu and RHEL), then re-run.`,
      cause: e,
    });
  }
}

export async function moduleState(host: Host, name: string): Promise<'loaded' | 'built in' | undefined> {
  if ((await host.read('/proc/modules'))?.split('\n').some((l) => l.split(' ')[0] === name)) return 'loaded';
  const release = (await host.read('/proc/sys/kernel/osrelease'))?.trim();
  const builtin = release ? await host.read(`/lib/modules/${release}/modules.builtin`) : undefined;
  if (builtin?.split('\n').some((l) => l.endsWith(`/${name}.ko`))) return 'built in';
  // Not a loaded module, yet the kernel has it.
  if (await exists(host.p(`/sys/module/${name}`))) return 'built in';
  const sign = SIGNS[name];
  const seen = sign ? await host.read(sign.file) : undefined;
  return seen !== undefined && (!sign!.line || sign!.line.test(seen)) ? 'built in' : undefined;
}

/** Loads what the kernel lacks; lists for boot only what is a module (systemd-modules-load fails on a built-in one it cannot look up). */
export async function loadModules(host: Host, log: (l: string) => void): Promise<void> {
  const load: string[] = [];
  const builtIn: string[] = [];
  for (const name of MODULES) {
    const state = await moduleState(host, name);
    if (state === 'built in') {
      builtIn.push(name);
      log(`${name}: built into the kernel, not loading it`);
      continue;
    }
    load.push(name);
    if (state === 'loaded') {
      log(`${name}: already loaded`);
      continue;
    }
    const r = await runHostTool(host, 'modprobe', [name]);
    if (r.code !== 0) {
      throw new HostError(Codes.kernelModule, `kernel module ${name} is neither built into this kernel nor loadable: modprobe ${name}: ${lastLine(r.stderr) || `exit ${r.code}`}`, {
        hint: `Kubernetes needs ${name} for ${NEEDED_FOR[name] ?? 'its networking'}. Install this kernel's modules (on Debian and Ubuntu: linux-modules-$(uname -r)) or boot a kernel with ${name} built in, then re-run.`,
      });
    }
    log(`${name}: loaded`);
  }
  await host.write(MODULES_LOAD_FILE, modulesConf(load, builtIn));
}

/** The keys a sysctl run could not set, from its messages (procps: `setting key "k"`, `permission denied on key 'k'`, `cannot stat /proc/sys/…`). */
export function sysctlFailures(stderr: string): string[] {
  const keys = [...stderr.matchAll(/key ["']([^"']+)["']/g)].map((m) => m[1]!);
  for (const m of stderr.matchAll(/cannot stat \/proc\/sys\/(\S+?):/g)) keys.push(m[1]!.replaceAll('/', '.'));
  return [...new Set(keys)];
}

/**
 * Writes ferry's sysctls and applies every sysctl file. A key that cannot be set is fine when it
 * already has ferry's value (read-only in a network namespace), and not ferry's business when it
 * is another file's; any other failure names the key.
 */
export async function applySysctls(host: Host, log: (l: string) => void): Promise<void> {
  await host.write(SYSCTL_FILE, SYSCTL_CONF);
  const r = await runHostTool(host, 'sysctl', ['--system']);
  const failed = sysctlFailures(r.stderr);
  const wrong: string[] = [];
  for (const key of failed) {
    const want = SYSCTLS[key];
    if (want === undefined) {
      log(`sysctl --system could not set ${key}, which is not ferry's; left as it is`);
      continue;
    }
    const have = (await host.read(`/proc/sys/${key.replaceAll('.', '/')}`))?.trim();
    if (have === want) log(`${key} cannot be set here (read-only?) but already is ${want}`);
    else wrong.push(`${key} (is ${have ?? 'missing'}, needs ${want})`);
  }
  const hint = 'Kubernetes networking needs these values: set them on the host (sysctl -w KEY=VALUE, from outside when this node is a container or network namespace whose /proc/sys is read-only; net.bridge.* appear once br_netfilter is there), then re-run.';
  if (wrong.length) throw new HostError(Codes.sysctl, `sysctl --system could not set ${wrong.join(', ')}`, { hint });
  if (r.code !== 0 && !failed.length) throw new HostError(Codes.sysctl, `sysctl --system failed (exit ${r.code}): ${lastLine(r.stderr) || lastLine(r.stdout)}`, { hint });
  log(`applied sysctls (${Object.keys(SYSCTLS).join(', ')})`);
}
