import path from 'node:path';
import { Command, Option } from 'commander';
import { Codes, UsageError } from '../errors.js';
import { Host } from '../install/host.js';
import { ADMIN_CONF } from '../install/paths.js';
import { siteAccess } from './join-commands.js';
import { makeOutput } from './output.js';
import { examples, globals } from './shared.js';
import { setVerdictExit } from './verdict.js';

/* `ferry certs check|renew`: every certificate of the site and its expiry; renewal on every server. */

const needServer = async (host: Host) => {
  if (!(await host.exists(ADMIN_CONF))) throw new UsageError(Codes.installMissing, `this machine is not a server where ferry install finished: no ${ADMIN_CONF}`, { hint: 'Run ferry certs on a server.' });
};

const hours = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 24) throw new UsageError(Codes.usage, `--validity-hours ${v}: a whole number of hours, at least 24`, { hint: '--validity-hours 240' });
  return n;
};

export function certsCommand(): Command {
  const certs = new Command('certs').description("the site's certificates: the site CA, each site service's, kubeadm's and kubelet's");

  certs.addCommand(
    new Command('check')
      .description('list every certificate of every node with its expiry (exit 10 when one has under 30 days, or a node does not answer)')
      .option('--timeout <duration>', "each node's bound", '15s')
      .option('--root <dir>', "this server's host-file prefix (for tests)", '/')
      .addHelpText('after', `${examples(['ferry certs check   # needs a server where ferry install finished', 'ferry certs check --json | jq \'.certs[] | select(.daysLeft < 90)\'   # needs a server where ferry install finished'])}
Exit codes (apart from the error codes 1-6): 0 every certificate has 30 days or more; 10 one has fewer, or a node was not reached.
`)
      .action(async (o: { timeout: string; root: string }, c: Command) => {
        const out = makeOutput(globals(c));
        const host = new Host(path.resolve(o.root));
        await needServer(host);
        const { durationOption } = await import('./status-commands.js');
        const ms = durationOption('--timeout', o.timeout);
        const { openSiteState } = await import('../cluster/site.js');
        const { probeNode } = await import('../ops/status.js');
        const { selfOf } = await import('../ops/certs-renew.js');
        const { CERT_WARN_DAYS, expiringWithin, formatCertTable } = await import('../ops/certs.js');
        const r = await openSiteState({ kubeconfig: host.p(ADMIN_CONF), root: host.root }).readFrom();
        if (!r) throw new UsageError(Codes.stateMissing, 'this site has no state', { hint: 'Run ferry certs check on a server where ferry install finished.' });
        const self = selfOf(r.state.nodes)?.name;
        const probes = await Promise.all(r.state.nodes.map(async (n) => ({ n, p: await probeNode({ host, ssh: r.state.answers.ssh }, n, self, ms) })));
        const certsList = probes.flatMap((x) => x.p?.certs ?? []);
        const unreached = probes.filter((x) => !x.p).map((x) => x.n.name);
        const soon = expiringWithin(certsList, CERT_WARN_DAYS);
        const rotationOff = probes.filter((x) => x.p?.kubeletRotation === false).map((x) => x.n.name);
        const lines = [formatCertTable(certsList)];
        for (const s of soon) lines.push(`warning: ${s.node} ${s.name} expires in ${s.daysLeft} days: run ferry certs renew`);
        if (unreached.length) lines.push(`warning: not reached: ${unreached.join(', ')}`);
        if (rotationOff.length) lines.push(`warning: kubelet client certificate rotation is off on ${rotationOff.join(', ')}`);
        out.result(lines.join('\n'), { certs: certsList, expiringSoon: soon.map((s) => `${s.node}/${s.name}`), unreached, kubeletRotationOff: rotationOff });
        setVerdictExit(soon.length || unreached.length ? 10 : 0);
      }),
  );

  certs.addCommand(
    new Command('renew')
      .description("renew kubeadm's certificates on every server one at a time (control plane restarted, API waited for), and re-issue each site service's from the site CA (reloaded without dropping clients)")
      .option('--local', 'this server only, without SSH (what the renewal timer runs)')
      .option('--under-days <n>', 'with --local: only when a renewable certificate has fewer days left (the timer passes 90)')
      .option('--wait', 'wait while another operation holds the site instead of refusing')
      .option('--root <dir>', "this server's host-file prefix (for tests)", '/')
      .addOption(new Option('--validity-hours <n>', 'issue certificates valid this many hours (for tests)').hideHelp())
      .addHelpText('after', examples([
        'ferry certs renew   # needs a server where ferry install finished, and SSH to the other servers',
        'ferry certs renew --local --under-days 90   # needs a server where ferry install finished (what ferry-certs.timer runs daily)',
      ]))
      .action(async (o: { local?: boolean; underDays?: string; wait?: boolean; root: string; validityHours?: string }, c: Command) => {
        const out = makeOutput(globals(c));
        const host = new Host(path.resolve(o.root));
        await needServer(host);
        const validityHours = o.validityHours ? hours(o.validityHours) : undefined;
        const { formatCertTable, CERT_WARN_DAYS } = await import('../ops/certs.js');
        if (o.local) {
          const { renewOwn } = await import('../ops/certs-renew.js');
          const r = await renewOwn({ host, reporter: out.reporter, underDays: o.underDays === undefined ? undefined : Number(o.underDays), validityHours, wait: o.wait });
          return out.result(r.renewed ? `renewed on ${r.node}:\n${formatCertTable(r.result!.after)}` : `${r.node}: nothing to renew (${r.reason})`, r);
        }
        if (o.underDays) throw new UsageError(Codes.usage, '--under-days goes with --local', { hint: 'ferry certs renew --local --under-days 90' });
        const { renewAll } = await import('../ops/certs-renew.js');
        const { site, lease } = await siteAccess({ kubeconfig: host.p(ADMIN_CONF), root: host.root, reporter: out.reporter });
        const rows = await renewAll({ host, site, lease, reporter: out.reporter, wait: o.wait, validityHours });
        out.reporter.done();
        const after = rows.flatMap((r) => r.after);
        const soon = after.filter((x) => x.daysLeft < CERT_WARN_DAYS);
        out.result(`${formatCertTable(after)}${soon.length && !validityHours ? `\nwarning: still under ${CERT_WARN_DAYS} days: ${soon.map((s) => `${s.node}/${s.name}`).join(', ')}` : ''}`, { servers: rows });
      }),
  );
  return certs;
}

export function nodeCertsRenewCommand(): Command {
  return new Command('node-certs-renew')
    .description('(internal) renew this server\'s certificates; started by ferry certs renew')
    .option('--root <dir>', 'host-file prefix', '/')
    .action(async (o: { root: string }, c: Command) => {
      const out = makeOutput(globals(c));
      let text = '';
      for await (const chunk of process.stdin) text += (chunk as Buffer).toString('utf8');
      const { readRenewPayload, renewLocal } = await import('../ops/certs-renew.js');
      const p = readRenewPayload(text);
      const r = await renewLocal(new Host(path.resolve(o.root)), p, (l) => process.stderr.write(`${l}\n`));
      out.result(`renewed on ${p.name}`, r);
    });
}
