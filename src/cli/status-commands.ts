import path from 'node:path';
import { Command } from 'commander';
import { Codes, UsageError } from '../errors.js';
import { Host } from '../install/host.js';
import { ADMIN_CONF } from '../install/paths.js';
import { makeOutput } from './output.js';
import { examples, globals } from './shared.js';
import { setVerdictExit } from './verdict.js';

/* `ferry status`: is the site healthy? One screen, and an exit code a probe or cron job can use. */

interface StatusFlags {
  wait?: string;
  timeout: string;
  root: string;
}

export function durationOption(flag: string, v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
  if (!m) throw new UsageError(Codes.usage, `${flag} ${v} is not a duration`, { hint: 'Write it as 30s, 5m, 1h or a number of seconds.' });
  return Number(m[1]) * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h']);
}

export function statusCommand(): Command {
  return new Command('status')
    .description("the site's health in one screen: nodes, etcd, each server's site service, DNS, the agents' LB backends, bundles, certificates, disk")
    .option('--wait <duration>', 'check again until the site is healthy or the duration is over (e.g. 5m)')
    .option('--timeout <duration>', "each probe's bound: a server, etcd or the API that does not answer within it counts as down", '10s')
    .option('--root <dir>', "this server's host-file prefix (for tests)", '/')
    .addHelpText('after', `${examples([
      'ferry status   # needs a server where ferry install finished',
      'ferry status --json | jq .reasons   # needs a server where ferry install finished',
      'ferry status --wait 10m   # needs a server where ferry install finished; exits 0 as soon as the site is healthy',
    ])}
Exit codes (apart from the error codes 1-6):
  0   healthy
  10  degraded: a node, etcd member, site service, DNS answer or LB backend is down, or a certificate has under 30 days
  11  down: the API does not answer, or etcd has no quorum
`)
    .action(async (o: StatusFlags, c: Command) => {
      const out = makeOutput(globals(c));
      const timeoutMs = durationOption('--timeout', o.timeout);
      const waitMs = o.wait ? durationOption('--wait', o.wait) : 0;
      const host = new Host(path.resolve(o.root));
      if (!(await host.exists(ADMIN_CONF))) throw new UsageError(Codes.installMissing, `this machine is not a server where ferry install finished: no ${ADMIN_CONF}`, { hint: 'Run ferry status on a server.' });
      const { gatherStatus, formatStatus } = await import('../ops/status.js');
      const { openSiteState } = await import('../cluster/site.js');
      const site = openSiteState({ kubeconfig: host.p(ADMIN_CONF), root: host.root });
      const readState = async () => {
        const r = await site.readFrom();
        return r ? { state: r.state, source: r.source } : undefined;
      };
      const end = Date.now() + waitMs;
      let r = await gatherStatus({ host, readState, timeoutMs });
      while (r.verdict !== 'healthy' && Date.now() < end) {
        out.reporter.info(`${r.verdict}: ${r.reasons[0] ?? ''}; checking again`);
        await new Promise((res) => setTimeout(res, Math.min(5000, Math.max(0, end - Date.now()))));
        r = await gatherStatus({ host, readState, timeoutMs });
      }
      out.result(formatStatus(r), r);
      setVerdictExit(r.exitCode);
    });
}
