import path from 'node:path';
import { Command } from 'commander';
import { Codes, UsageError } from '../errors.js';
import { ADMIN_CONF } from '../install/paths.js';
import { makeOutput, type Output } from './output.js';
import { confirm } from './prompt.js';
import { examples, globals } from './shared.js';

/* `ferry state …`: the site state kept in the cluster (src/cluster/), as an operator sees and repairs it. */

interface Where {
  kubeconfig?: string;
  root: string;
}

const withWhere = (c: Command) =>
  c.option('--kubeconfig <file>', `the cluster's admin kubeconfig (default: ${ADMIN_CONF} under --root)`).option('--root <dir>', "this server's host-file prefix (for tests)", '/');

const kubeconfigOf = (o: Where) => o.kubeconfig ?? path.join(path.resolve(o.root), ADMIN_CONF);

function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  return [head, ...rows].map((r) => r.map((c, i) => (c ?? '').padEnd(w[i]!)).join('  ').trimEnd()).join('\n');
}

async function showState(o: Where, out: Output): Promise<void> {
  const { openSiteState } = await import('../cluster/site.js');
  const { leaseHolder } = await import('../cluster/lease.js');
  const site = openSiteState({ kubeconfig: kubeconfigOf(o), root: path.resolve(o.root), reporter: out.reporter });
  const r = await site.readFrom();
  if (!r) throw new UsageError(Codes.stateMissing, 'there is no site state in the cluster', { hint: 'ferry install writes it on the first server; on a server an older ferry installed, run ferry install again to migrate nodes.json.' });
  const lease = r.source === 'cluster' ? await leaseHolder({ kubeconfig: kubeconfigOf(o) }).catch(() => undefined) : undefined;
  const s = r.state;
  const lines = [
    `site ${s.answers.domain} (cluster ${s.answers.clusterFqdn}), from ${r.source === 'cluster' ? site.cluster.where : `${site.mirror.file} (copied ${r.copiedAt})`}, resourceVersion ${r.version}`,
    '',
    table(['NODE', 'IP', 'ROLE', 'PLATFORM', 'KUBERNETES', 'BUNDLE', 'JOINED'], s.nodes.map((n) => [n.name, n.ip, n.role, n.platform, n.kubernetesVersion, n.bundle, n.joinedAt])),
    '',
    table(['BUNDLE', 'VERSION', 'KUBERNETES', 'SIGNER', 'CURRENT'], s.bundles.map((b) => [b.id, b.version, b.kubernetesVersion ?? '-', b.fingerprint, b.id === s.current ? '*' : ''])),
    '',
    s.operation ? `operation: ${s.operation.kind} ${s.operation.id}, started ${s.operation.startedAt} by ${s.operation.holder}, ${s.operation.journal.length} steps done` : 'operation: none',
    r.source === 'cluster' ? `lease: ${lease ? `${lease.holder} (${lease.live ? 'live' : 'expired'}, renewed ${lease.renewTime ?? '?'})` : 'free'}` : 'lease: unknown (the API does not answer)',
  ];
  out.result(lines.join('\n'), { source: r.source, resourceVersion: r.version, ...(r.copiedAt ? { copiedAt: r.copiedAt } : {}), state: s, ...(r.source === 'cluster' ? { lease: lease ?? null } : {}) });
}

export function stateCommand(): Command {
  const state = new Command('state').description('the site state kept in the cluster (nodes, answers, bundles, the running operation) and its lease');

  state.addCommand(
    withWhere(new Command('show'))
      .description("print the site state: from the cluster, or this server's mirror (with a warning) when the API does not answer")
      .addHelpText('after', examples([
        'ferry state show   # needs a server where ferry install finished',
        'ferry state show --json | jq .state.nodes   # needs a server where ferry install finished',
      ]))
      .action(async (o: Where, c: Command) => showState(o, makeOutput(globals(c)))),
  );

  const lease = new Command('lease').description("the site's operation lease (one multi-node operation at a time)");
  lease.addCommand(
    withWhere(new Command('break'))
      .description('free the lease whoever holds it: for a holder that died (its machine or ferry). A live holder loses it too, so check first')
      .option('--yes', 'break it without asking')
      .addHelpText('after', examples([
        'ferry state lease break   # needs a server where ferry install finished; asks first',
        'ferry state lease break --yes   # needs a server where ferry install finished',
      ]))
      .action(async (o: Where & { yes?: boolean }, c: Command) => {
        const out = makeOutput(globals(c));
        const { breakLease, leaseHolder } = await import('../cluster/lease.js');
        const kubeconfig = kubeconfigOf(o);
        const cur = await leaseHolder({ kubeconfig });
        if (!cur) return out.result('the lease is free: nothing to break', { broken: false, holder: null });
        if (!o.yes) {
          const sure = await confirm(`Break the lease held by ${cur.holder} (${cur.live ? 'LIVE: renewed' : 'expired: last renewed'} ${cur.renewTime ?? '?'})?`, '--yes');
          if (!sure) return out.result(`left the lease with ${cur.holder}`, { broken: false, holder: cur.holder });
        }
        const was = await breakLease({ kubeconfig });
        out.result(was ? `broke the lease held by ${was}` : 'the lease was freed meanwhile', { broken: !!was, holder: was ?? null });
      }),
  );
  state.addCommand(lease);

  state.addCommand(
    withWhere(new Command('mirror'))
      .description("copy the site state from the cluster to this server's mirror, if the cluster's is newer (what ferry-state-mirror.timer runs)")
      .addHelpText('after', examples(['ferry state mirror   # needs a server where ferry install finished']))
      .action(async (o: Where, c: Command) => {
        const out = makeOutput(globals(c));
        const { refreshMirror } = await import('../cluster/site.js');
        const r = await refreshMirror({ kubeconfig: kubeconfigOf(o), root: path.resolve(o.root) });
        if (!r.resourceVersion) return out.result('there is no site state in the cluster yet: nothing to mirror', { updated: false, where: r.where });
        out.result(r.updated ? `${r.where}: copied resourceVersion ${r.resourceVersion}` : `${r.where}: current (resourceVersion ${r.resourceVersion})`, r);
      }),
  );

  const operation = new Command('operation').description('the multi-node operation recorded in the site state');
  operation.addCommand(
    withWhere(new Command('abandon'))
      .description("forget an unfinished operation's record and journal, so that another can start (what it did on the nodes stays)")
      .argument('<id>', 'the operation id (ferry state show prints it)')
      .option('--yes', 'abandon it without asking')
      .addHelpText('after', examples(['ferry state operation abandon join-20261203T102400 --yes   # needs a server where ferry install finished, and that operation recorded']))
      .action(async (id: string, o: Where & { yes?: boolean }, c: Command) => {
        const out = makeOutput(globals(c));
        const { openSiteState } = await import('../cluster/site.js');
        const site = openSiteState({ kubeconfig: kubeconfigOf(o), root: path.resolve(o.root), reporter: out.reporter });
        const s = await site.cluster.read();
        const op = s?.value.operation;
        if (!op || op.id !== id) {
          throw new UsageError(Codes.usage, `no operation ${id} is recorded for this site${op ? ` (the recorded one is ${op.kind} ${op.id})` : ''}`, { hint: 'See ferry state show for the recorded operation.' });
        }
        if (!o.yes && !(await confirm(`Abandon ${op.kind} ${op.id} (started ${op.startedAt} by ${op.holder}, ${op.journal.length} steps done)? A re-run will not resume it`, '--yes'))) {
          return out.result(`kept ${op.id}`, { abandoned: false, id });
        }
        await site.update((st) => {
          if (st.operation?.id === id) delete st.operation;
        });
        out.result(`abandoned ${op.kind} ${id}`, { abandoned: true, id });
      }),
  );
  state.addCommand(operation);
  return state;
}
