import path from 'node:path';
import { Command } from 'commander';
import { Codes, UsageError } from '../errors.js';
import { Host } from '../install/host.js';
import { ADMIN_CONF } from '../install/paths.js';
import { siteAccess } from './join-commands.js';
import { makeOutput } from './output.js';
import { confirm } from './prompt.js';
import { examples, globals } from './shared.js';

/* `ferry reset NODE` (from any server) and `ferry reset --local` (on the node itself). */

interface ResetFlags {
  local?: boolean;
  dryRun?: boolean;
  yes?: boolean;
  force?: boolean;
  wait?: boolean;
  acceptNewHostKeys?: boolean;
  root: string;
}

export function resetCommand(): Command {
  return new Command('reset')
    .description('take a node out of the cluster and back to before ferry, so that ferry join of the same host works again with no reboot')
    .argument('[node]', 'the node to reset, by its name in the site state (ferry state show)')
    .option('--local', "clean this machine only (kubeadm reset, ferry's units, CNI, iptables, state); the cluster is not told")
    .option('--dry-run', 'list what would be removed, change nothing')
    .option('--yes', 'do not ask for confirmation')
    .option('--force', "remove a server's etcd member even when that loses quorum; forget a node that cannot be reached")
    .option('--wait', 'wait while another operation holds the site instead of refusing')
    .option('--accept-new-host-keys', 'record host keys that known_hosts has never seen (never a changed one)')
    .option('--root <dir>', "this machine's host-file prefix (for tests)", '/')
    .addHelpText('after', examples([
      'ferry reset k8s-agent-03 --dry-run   # needs a server where ferry install finished, and SSH to the node',
      'ferry reset k8s-agent-03   # needs a server where ferry install finished, and SSH to the node; asks first (default No)',
      'ferry reset k8s-server-02 --yes   # needs another server where ferry install finished, and SSH to the node',
      'ferry reset --local   # needs root on the node itself, which ferry installed or joined',
    ]))
    .action(async (nodeArg: string | undefined, o: ResetFlags, c: Command) => {
      const out = makeOutput(globals(c));
      const host = new Host(path.resolve(o.root));
      if (o.local) {
        if (nodeArg) throw new UsageError(Codes.usage, 'give either NODE or --local, not both', { hint: 'ferry reset NODE on a server, or ferry reset --local on the node itself.' });
        const { nodeResetPlan, runNodeReset } = await import('../ops/node-reset.js');
        const os = await import('node:os');
        const p = { name: os.hostname(), role: ((await host.exists('/etc/kubernetes/manifests/kube-apiserver.yaml')) ? 'server' : 'agent') as 'server' | 'agent' };
        const items = await nodeResetPlan(host, p);
        const list = items.map((i) => `  - ${i.what}`).join('\n');
        if (o.dryRun) return out.result(`ferry reset --local would remove (nothing was changed):\n${list}`, { dryRun: true, removed: items.map((i) => i.what) });
        if (!o.yes && !(await confirm(`Reset this machine (${p.name})? This removes:\n${list}\n`, '--yes'))) return out.result('nothing was changed', { dryRun: false, removed: [] });
        const removed = await runNodeReset(host, p, { log: (l) => out.reporter.info(l) });
        return out.result(`reset ${p.name}: ${removed.length} items removed; ferry join can add it again`, { dryRun: false, removed });
      }
      if (!nodeArg) throw new UsageError(Codes.usage, 'which node?', { hint: 'ferry reset NODE (from a server), or ferry reset --local (on the node).' });
      if (!(await host.exists(ADMIN_CONF))) throw new UsageError(Codes.installMissing, `this machine is not a server where ferry install finished: no ${ADMIN_CONF}`, { hint: `Run ferry reset ${nodeArg} on a server, or ferry reset --local on the node itself.` });
      const { planReset, resetNode } = await import('../ops/reset.js');
      const { site, lease } = await siteAccess({ kubeconfig: host.p(ADMIN_CONF), root: host.root, reporter: out.reporter });
      const confirmHostKey = async (h: string, fp: string) => !!o.acceptNewHostKeys || (out.reporter.warn(`${h} offers host key ${fp}, which known_hosts has never seen`), false);
      const opts = { host, site, lease, node: nodeArg, reporter: out.reporter, force: o.force, wait: o.wait, confirmHostKey };
      if (o.dryRun || !o.yes) {
        const plan = await planReset(opts);
        const lines = [
          `ferry reset ${plan.node.name} (${plan.node.role}, ${plan.node.ip}) would:`,
          ...plan.steps.map((s) => `  - ${s.what}`),
          ...(plan.etcd ? [`  etcd: ${plan.etcd.voters} members, ${plan.etcd.healthy} answering; without ${plan.node.name}: ${plan.etcd.keepsQuorum ? 'keeps quorum' : 'NO QUORUM (refused without --force)'}`] : []),
          `on ${plan.node.name}:`,
          ...(plan.onNode.length ? plan.onNode.map((w) => `  - ${w}`) : [`  (not reached: ${plan.onNodeError ?? 'nothing to remove'})`]),
        ];
        if (o.dryRun) return out.result(lines.join('\n'), { dryRun: true, ...plan });
        out.human(lines.join('\n'));
        if (!(await confirm(`Reset ${plan.node.name}?`, '--yes'))) return out.result('nothing was changed', { dryRun: false, reset: false });
      }
      const r = await resetNode(opts);
      out.reporter.done();
      out.result(`reset ${r.node} in ${r.seconds.toFixed(0)}s: gone from the cluster, the site state, DNS and the LB${r.warnings.length ? `\nwarnings:\n  ${r.warnings.join('\n  ')}` : ''}`, { dryRun: false, reset: true, ...r });
    });
}

export function nodeResetCommand(): Command {
  return new Command('node-reset')
    .description('(internal) the cleanup a node runs on itself; started by ferry reset')
    .option('--root <dir>', 'host-file prefix', '/')
    .option('--dry-run', 'list only')
    .action(async (o: { root: string; dryRun?: boolean }, c: Command) => {
      const out = makeOutput(globals(c));
      let text = '';
      for await (const chunk of process.stdin) text += (chunk as Buffer).toString('utf8');
      const { readNodeResetPayload, runNodeReset } = await import('../ops/node-reset.js');
      const p = readNodeResetPayload(text);
      const removed = await runNodeReset(new Host(path.resolve(o.root)), p, { dryRun: o.dryRun, log: (l) => process.stderr.write(`${l}\n`) });
      out.result(`${o.dryRun ? 'would remove' : 'removed'} on ${p.name}:\n  ${removed.join('\n  ')}`, { removed });
    });
}
