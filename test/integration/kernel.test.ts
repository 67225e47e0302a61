import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Host } from '../../src/install/host.js';
import { applySysctls, loadModules, sysctlFailures } from '../../src/install/kernel.js';
import { tmpdir } from '../helpers/peers.js';
import { standinCalls, writeStandins } from '../helpers/standins.js';

/**
 * The kernel step on a node directory (--root) with recording stand-ins for modprobe and sysctl;
 * `scripts` replaces a stand-in with one that answers like the real tool on such a host.
 */
async function node(files: Record<string, string>, scripts: Record<string, string> = {}) {
  const root = await tmpdir();
  for (const [f, text] of Object.entries(files)) {
    await fs.mkdir(path.dirname(path.join(root, f)), { recursive: true });
    await fs.writeFile(path.join(root, f), text);
  }
  const bin = await writeStandins(path.join(root, '.bin'));
  for (const [name, body] of Object.entries(scripts)) await fs.writeFile(path.join(bin, name), `#!/bin/sh\nprintf "%s %s\\n" "$(basename "$0")" "$*" >> "$FERRY_ROOT/standins.log"\n${body}\n`, { mode: 0o755 });
  const host = new Host(root, { ...process.env, PATH: `${bin}:${process.env.PATH}` });
  const lines: string[] = [];
  return { root, host, lines, log: (l: string) => lines.push(l), calls: () => standinCalls(root) };
}

const modulesLoad = (root: string) => fs.readFile(path.join(root, 'etc/modules-load.d/ferry-kubernetes.conf'), 'utf8');
const missing = 'echo "modprobe: FATAL: Module $1 not found in directory /lib/modules/6.18.44" >&2; exit 1';

describe('kernel modules', () => {
  it('does not modprobe modules built into the kernel, and leaves them out of modules-load.d', async () => {
    // overlay shows in /sys/module (it has parameters); built-in br_netfilter only by its sysctls.
    const n = await node({ 'sys/module/overlay/parameters/redirect_dir': 'N\n', 'proc/sys/net/bridge/bridge-nf-call-iptables': '1\n' }, { modprobe: missing });
    await loadModules(n.host, n.log);
    expect(await n.calls()).toEqual([]);
    expect(n.lines).toEqual(['overlay: built into the kernel, not loading it', 'br_netfilter: built into the kernel, not loading it']);
    expect(await modulesLoad(n.root)).toBe('# Written by ferry: modules Kubernetes networking needs.\n# built into this kernel: overlay, br_netfilter\n');
  });

  it("knows built-in modules from the kernel's modules.builtin and overlay from /proc/filesystems", async () => {
    const n = await node({ 'proc/sys/kernel/osrelease': '6.1.0-test\n', 'lib/modules/6.1.0-test/modules.builtin': 'kernel/net/bridge/br_netfilter.ko\n', 'proc/filesystems': 'nodev\tproc\nnodev\toverlay\n' }, { modprobe: missing });
    await loadModules(n.host, n.log);
    expect(await n.calls()).toEqual([]);
  });

  it('keeps a loaded module for boot without loading it again, and loads what is missing', async () => {
    const n = await node({ 'proc/modules': 'br_netfilter 32768 0 - Live 0x0000000000000000\nbridge 311296 1 br_netfilter, Live 0x0\n' });
    await loadModules(n.host, n.log);
    expect(await n.calls()).toEqual(['modprobe overlay']);
    expect(n.lines).toEqual(['overlay: loaded', 'br_netfilter: already loaded']);
    expect(await modulesLoad(n.root)).toBe('# Written by ferry: modules Kubernetes networking needs.\noverlay\nbr_netfilter\n');
  });

  it('fails naming the module that is neither built in nor loadable, with what to do', async () => {
    const n = await node({ 'sys/module/overlay/parameters/redirect_dir': 'N\n' }, { modprobe: missing });
    const err = await loadModules(n.host, n.log).then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({
      code: 'KERNEL_MODULE_MISSING',
      exit: 'io',
      message: 'kernel module br_netfilter is neither built into this kernel nor loadable: modprobe br_netfilter: modprobe: FATAL: Module br_netfilter not found in directory /lib/modules/6.18.44',
      hint: expect.stringContaining('linux-modules-$(uname -r)'),
    });
    expect(await n.calls()).toEqual(['modprobe br_netfilter']);
  });
});

describe('sysctls', () => {
  const readOnly = (key: string) => `echo 'sysctl: setting key "${key}": Read-only file system' >&2; exit 255`;

  it('reads the keys out of procps and busybox messages', () => {
    expect(sysctlFailures(['sysctl: setting key "net.ipv4.ip_forward": Read-only file system', "sysctl: permission denied on key 'kernel.yama.ptrace_scope'", 'sysctl: cannot stat /proc/sys/net/bridge/bridge-nf-call-iptables: No such file or directory'].join('\n'))).toEqual([
      'net.ipv4.ip_forward',
      'kernel.yama.ptrace_scope',
      'net.bridge.bridge-nf-call-iptables',
    ]);
  });

  it('passes when a key is read-only here but already as wanted, or is not one of ferry\'s', async () => {
    const n = await node({ 'proc/sys/net/ipv4/ip_forward': '1\n' }, { sysctl: `${readOnly('net.ipv4.ip_forward')}` });
    await applySysctls(n.host, n.log);
    expect(n.lines).toContain('net.ipv4.ip_forward cannot be set here (read-only?) but already is 1');
    const other = await node({}, { sysctl: readOnly('net.netfilter.nf_conntrack_max') });
    await applySysctls(other.host, other.log);
    expect(other.lines[0]).toBe("sysctl --system could not set net.netfilter.nf_conntrack_max, which is not ferry's; left as it is");
    expect(await fs.readFile(path.join(other.root, 'etc/sysctl.d/99-ferry-kubernetes.conf'), 'utf8')).toContain('net.ipv4.ip_forward = 1\n');
  });

  it('fails naming a key of its own that is read-only and wrong, or missing', async () => {
    const n = await node({ 'proc/sys/net/ipv4/ip_forward': '0\n' }, { sysctl: `${readOnly('net.ipv4.ip_forward')}\n` });
    await expect(applySysctls(n.host, n.log)).rejects.toMatchObject({ code: 'SYSCTL_NOT_SET', exit: 'io', message: 'sysctl --system could not set net.ipv4.ip_forward (is 0, needs 1)', hint: expect.stringContaining('sysctl -w') });
    const m = await node({}, { sysctl: "echo 'sysctl: cannot stat /proc/sys/net/bridge/bridge-nf-call-iptables: No such file or directory' >&2; exit 255" });
    await expect(applySysctls(m.host, m.log)).rejects.toMatchObject({ message: 'sysctl --system could not set net.bridge.bridge-nf-call-iptables (is missing, needs 1)' });
  });

  it('fails with the message when sysctl fails without naming a key', async () => {
    const n = await node({}, { sysctl: 'echo "sysctl: out of memory" >&2; exit 3' });
    await expect(applySysctls(n.host, n.log)).rejects.toMatchObject({ code: 'SYSCTL_NOT_SET', message: 'sysctl --system failed (exit 3): sysctl: out of memory' });
  });
});
