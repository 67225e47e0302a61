import { spawn } from 'node:child_process';
import { createPublicKey } from 'node:crypto';
import { existsSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { Command, Option } from 'commander';
import { QUIET_DEPRECATIONS } from '../bundle/format.js';
import { Codes, UsageError } from '../errors.js';
import { Host } from '../install/host.js';
import { ADMIN_CONF, STORE_DIR } from '../install/paths.js';
import { loadPublicKey } from '../sign/keys.js';
import { siteAccess } from './join-commands.js';
import { makeOutput } from './output.js';
import { confirm } from './prompt.js';
import { examples, globals } from './shared.js';
import { setVerdictExit } from './verdict.js';

/* `ferry upgrade BUNDLE`: the rolling upgrade of the whole site from any server (src/ops/upgrade.ts). */

interface UpgradeFlags {
  trust?: string;
  dryRun?: boolean;
  yes?: boolean;
  maxUnavailable: string;
  wait?: boolean;
  acceptNewHostKeys?: boolean;
  inProcess?: boolean;
  root: string;
}

export function upgradeCommand(): Command {
  return new Command('upgrade')
    .description("upgrade the whole site from a newer bundle (full or delta): Kubernetes one minor at a time, node by node, workloads kept running")
    .argument('<bundle>', 'the newer bundle (its .tar, or its parts.json)')
    .option('--trust <pub>', "the bundle signer's public key (default: the key the site's bundle was signed with)")
    .option('--dry-run', 'print the plan, the refusals and the preflight; change nothing')
    .option('--yes', 'do not ask for confirmation')
    .option('--max-unavailable <n>', 'agents upgraded at once', '1')
    .option('--wait', 'wait while another operation holds the site instead of refusing')
    .option('--accept-new-host-keys', 'record host keys that known_hosts has never seen (never a changed one)')
    .addOption(new Option('--in-process', 'run the upgrade in this ferry, not the new bundle\'s (for tests)').hideHelp())
    .option('--root <dir>', "this server's host-file prefix (for tests)", '/')
    .addHelpText('after', `${examples([
      'ferry upgrade /srv/kubernetes-0.2.0.ferry.tar --dry-run   # needs a server where ferry install finished, and SSH to every node',
      'ferry upgrade /srv/kubernetes-0.2.0.ferry.tar --yes   # needs a server where ferry install finished, and SSH to every node',
      'ferry upgrade /srv/kubernetes-0.2.0.ferry.tar.parts.json --trust /srv/ferry.pub --max-unavailable 2   # a split bundle; asks first (default No)',
    ])}
A failed or killed upgrade resumes when the same command runs again: upgraded nodes are skipped.
`)
    .action(async (bundle: string, o: UpgradeFlags, c: Command) => {
      const out = makeOutput(globals(c));
      const host = new Host(path.resolve(o.root));
      if (!(await host.exists(ADMIN_CONF))) throw new UsageError(Codes.installMissing, `this machine is not a server where ferry install finished: no ${ADMIN_CONF}`, { hint: 'Run ferry upgrade on a server of the site.' });
      const maxUnavailable = Number(o.maxUnavailable);
      const file = path.resolve(bundle);
      const { bundleManifest } = await import('../install/cluster.js');
      const installed = await bundleManifest(host);
      const trust = o.trust ? await loadPublicKey(o.trust) : installed ? createPublicKey(installed.signer.publicKey) : undefined;
      if (!trust) throw new UsageError(Codes.usage, 'no key to check the bundle with', { hint: 'Pass --trust ferry.pub (the key the site trusts).' });
      const { site, lease } = await siteAccess({ kubeconfig: host.p(ADMIN_CONF), root: host.root, reporter: out.reporter });
      const confirmHostKey = async (h: string, fp: string) => !!o.acceptNewHostKeys || (out.reporter.warn(`${h} offers host key ${fp}, which known_hosts has never seen`), false);
      const { planUpgrade, runUpgrade, refuseFailedPreflight, formatUpgradeTable, newFerryOf } = await import('../ops/upgrade.js');
      const opts = { host, site, lease, bundle: file, verify: { trust, reporter: out.reporter }, reporter: out.reporter, maxUnavailable, wait: o.wait, confirmHostKey };
      const plan = await planUpgrade(opts);
      const d = plan.decision;
      if (d.action === 'none') return out.result(d.reason, { dryRun: !!o.dryRun, action: 'none', reason: d.reason });
      const lines = [
        `ferry upgrade from ${d.from} to ${d.to}${d.kubernetes ? ` (Kubernetes ${d.kubernetes.from} → ${d.kubernetes.to})` : ''}${plan.offered.delta ? `, a delta on ${plan.offered.delta}` : ''}, run from ${plan.self}:`,
        'preflight:',
        ...plan.preflight.map((p) => `  ${p.ok ? 'ok    ' : 'FAILED'} ${p.name}: ${p.detail}`),
        'steps:',
        ...plan.steps.map((s, i) => `  ${String(i + 1).padStart(2)}. ${s.what}`),
      ];
      const doc = { action: 'upgrade', from: d.from, to: d.to, kubernetes: d.kubernetes ?? null, self: plan.self, preflight: plan.preflight, steps: plan.steps };
      if (o.dryRun) {
        out.human(lines.join('\n'));
        refuseFailedPreflight(plan.preflight);
        return out.result('(dry run: nothing was changed)', { dryRun: true, ...doc });
      }
      // The new bundle's ferry, started by this command, has its plan printed already.
      if (!process.env.FERRY_UPGRADE_CHILD) out.human(lines.join('\n'));
      refuseFailedPreflight(plan.preflight);
      if (!o.yes && !process.env.FERRY_UPGRADE_CHILD && !(await confirm(`Upgrade the site to ${d.to}?`, '--yes'))) return out.result('nothing was changed', { dryRun: false, action: 'cancelled' });

      // The new release's ferry runs its own upgrade, from the store where its tree was verified.
      if (!o.inProcess && !process.env.FERRY_UPGRADE_CHILD) {
        const { SiteStore } = await import('../bundle/store.js');
        const store = await SiteStore.open(host.p(STORE_DIR), { create: false });
        const r = await store.add(file, { trust, reporter: out.reporter });
        const next = newFerryOf(host, r.id, r.manifest);
        const me = realpathSync(process.argv[1] ?? '.');
        if (next && existsSync(next.node) && existsSync(next.mjs) && realpathSync(next.mjs) !== me) {
          out.reporter.info(`running the upgrade with ${d.to}'s own ferry (${next.mjs})`);
          const code = await new Promise<number>((resolve, reject) => {
            const child = spawn(next.node, [...QUIET_DEPRECATIONS, next.mjs, ...process.argv.slice(2), '--yes'], { stdio: 'inherit', env: { ...process.env, FERRY_UPGRADE_CHILD: '1' } });
            child.on('error', reject);
            child.on('close', (n) => resolve(n ?? 1));
          });
          // Its error is printed already; its exit code is this command's.
          setVerdictExit(code);
          return;
        }
      }
      const r = await runUpgrade(opts);
      out.reporter.done();
      if (r.action === 'none') return out.result(r.reason ?? 'nothing to do', { dryRun: false, ...r });
      out.result(`${formatUpgradeTable(r.nodes)}\nupgraded the site to ${r.to}${r.kubernetes ? ` (Kubernetes ${r.kubernetes.to})` : ''} in ${r.seconds.toFixed(0)} s; the pre-upgrade etcd snapshot is ${r.snapshot} on every server`, { dryRun: false, ...r });
    });
}
