import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Command, Option } from 'commander';
import type { LeaseProvider, SiteStateAccess } from '../cluster/state.js';
import { Codes, RemoteError, UsageError } from '../errors.js';
import { DEFAULTS, loadAnswers, type InstallAnswers } from '../install/answers.js';
import { Host } from '../install/host.js';
import { ADMIN_CONF, BUNDLE_DIR } from '../install/paths.js';
import type { JoinOutcome, JoinTarget } from '../ops/join.js';
import { parseOrder } from '../ops/rollout.js';
import type { Reporter } from '../util/progress.js';
import { askJoinHosts } from './install-commands.js';
import { makeOutput } from './output.js';
import { canPrompt, confirm } from './prompt.js';
import { collectCsv, examples, globals } from './shared.js';

/**
 * The site's state and its operation lease, as every multi-node command reaches them: the
 * ConfigMap (with this server's mirror when the API does not answer) and the Lease object. A test
 * passes a module of stand-ins instead (`--site-standin`, whose `siteStandin()` gives both).
 */
export async function siteAccess(o: { kubeconfig: string; root: string; reporter: Reporter; standin?: string }): Promise<{ site: SiteStateAccess; lease: LeaseProvider }> {
  if (o.standin) return (await import(pathToFileURL(path.resolve(o.standin)).href)).siteStandin();
  const { openSiteState } = await import('../cluster/site.js');
  const { kubeLease } = await import('../cluster/lease.js');
  return { site: await openSiteState({ kubeconfig: o.kubeconfig, root: o.root, reporter: o.reporter }), lease: await kubeLease({ kubeconfig: o.kubeconfig }) };
}

/** Where ferry install saves the answers (the first server only). */
const SAVED_ANSWERS = '/etc/ferry/answers.yaml';

interface JoinFlags {
  name?: string;
  role?: string;
  ip?: string;
  answers?: string;
  bundle?: string;
  only?: string[];
  wait?: boolean;
  order: string;
  acceptNewHostKeys?: boolean;
  root: string;
  remoteRoot?: string;
  remotePath?: string;
  dryRun?: boolean;
  allowDowngrade?: boolean;
  siteStandin?: string;
}

/** The nodes to join: one named on the command line, or an answers file's join: list (with its ssh: settings). */
async function targetsOf(host: Host, hostArg: string | undefined, o: JoinFlags): Promise<{ targets: JoinTarget[]; answers?: InstallAnswers }> {
  if (hostArg) {
    if (o.answers) throw new UsageError(Codes.usage, 'give either a HOST or --answers FILE, not both', { hint: 'ferry join HOST --name NAME --role server|agent, or ferry join --answers FILE.' });
    if (!o.name || (o.role !== 'server' && o.role !== 'agent')) throw new UsageError(Codes.usage, `joining ${hostArg} needs --name NAME and --role server|agent`, { hint: `ferry join ${hostArg} --name k8s-agent-01 --role agent` });
    return { targets: [{ host: hostArg, name: o.name, role: o.role, ...(o.ip ? { ip: o.ip } : {}) }] };
  }
  if (o.name || o.role || o.ip) throw new UsageError(Codes.usage, '--name, --role and --ip describe the HOST argument, which is missing', { hint: 'ferry join HOST --name NAME --role server|agent [--ip IP]' });
  // On the first server, the answers ferry install saved still list the nodes to join.
  const file = o.answers ?? ((await host.read(SAVED_ANSWERS)) !== undefined ? host.p(SAVED_ANSWERS) : undefined);
  if (!file) return { targets: [] };
  const answers = await loadAnswers(file);
  const list = answers.join ?? [];
  const unknown = (o.only ?? []).filter((n) => !list.some((j) => j.name === n));
  if (unknown.length) throw new UsageError(Codes.usage, `--only names ${unknown.join(', ')}, which the answers do not list under join:`, { hint: `Choose from: ${list.map((j) => j.name).join(', ')}.` });
  return { answers, targets: list.filter((j) => !o.only?.length || o.only.includes(j.name)) };
}

export function joinCommand(): Command {
  return new Command('join')
    .description('join servers and agents to the cluster over SSH, from any server, by the cluster FQDN, using only bundled content')
    .argument('[host]', 'the address of one node to join (with --name and --role)')
    .option('--name <name>', 'the node name of HOST')
    .option('--role <role>', 'server or agent')
    .option('--ip <ip>', "HOST's IP on the cluster network, when HOST is not it")
    .option('--answers <file>', 'answers file with join: hosts (and ssh: settings that override the site\'s)')
    .option('--bundle <file>', 'the bundle file, for joining servers (they verify and serve it too)')
    .option('--only <names>', 'join only these nodes of the answers (comma-separated)', collectCsv)
    .option('--wait', 'wait while another operation holds the site instead of refusing')
    .option('--order <order>', 'all, serial, servers-first or batches:N', 'all')
    .option('--accept-new-host-keys', 'record host keys that known_hosts has never seen (never a changed one)')
    .option('--root <dir>', "this server's host-file prefix (for tests)", '/')
    .option('--remote-root <dir>', 'host-file prefix on each joining node, {name} is replaced (for tests)')
    .option('--remote-path <dirs>', 'directories put first on the remote PATH (for tests)')
    .addOption(new Option('--site-standin <module>', 'a module whose siteStandin() gives the site state and lease (for tests)').hideHelp())
    .option('--dry-run', 'check the nodes and this server, list the nodes it would join; connects to none')
    .option('--allow-downgrade', "let a joining server's bundle replace a newer one unpacked there")
    .addHelpText('after', examples([
      'ferry join 10.0.0.21 --name k8s-agent-01 --role agent   # needs any server where ferry install finished, and SSH to the node',
      'ferry join 10.0.0.12 --name k8s-server-02 --role server --bundle site.ferry.tar --wait   # needs any server where ferry install finished, and SSH to the node',
      'ferry join --answers answers.yaml --bundle site.ferry.tar --json   # needs any server where ferry install finished, and SSH to the nodes',
      'ferry join --answers /etc/ferry/answers.yaml --dry-run   # needs a first server where ferry install finished',
    ]))
    .action(async (hostArg: string | undefined, o: JoinFlags, c: Command) => {
      const out = makeOutput(globals(c));
      const order = (() => {
        try {
          return parseOrder(o.order);
        } catch (e) {
          throw new UsageError(Codes.usage, (e as Error).message, { hint: '--order all|serial|servers-first|batches:N' });
        }
      })();
      const { joinNodes, formatJoinTable, checkTargets } = await import('../ops/join.js');
      const host = new Host(path.resolve(o.root));
      let { targets, answers } = await targetsOf(host, hostArg, o);
      if (!targets.length) {
        if (o.dryRun || !canPrompt()) throw new UsageError(o.dryRun ? Codes.usage : Codes.promptNoTty, 'no hosts to join', { hint: 'ferry join HOST --name NAME --role server|agent, or list them under join: in an answers file and pass --answers FILE.' });
        targets = await askJoinHosts(answers ?? ({ apiVersion: 'ferry.dev/v1alpha1', kind: 'InstallAnswers', domain: 'site.invalid', node: { name: '', ip: '192.0.2.1' }, podCidr: DEFAULTS.podCidr, serviceCidr: DEFAULTS.serviceCidr } as InstallAnswers));
      }
      if (o.dryRun) {
        if (!(await host.read(ADMIN_CONF)) || !(await host.read(`${BUNDLE_DIR}/bundle.json`))) {
          throw new UsageError(Codes.installMissing, `this machine (root ${host.root}) is not a server where ferry install finished: no ${ADMIN_CONF} or unpacked bundle`, { hint: 'Run ferry join on a server, after ferry install.' });
        }
        checkTargets(targets, o);
        if (o.bundle) await (await import('../bundle/inspect.js')).readBundleManifest(o.bundle);
        const rows: JoinOutcome[] = targets.map((j) => ({ name: j.name, host: j.host, role: j.role, ok: true, seconds: 0 }));
        return out.result(`ferry join would join (nothing was contacted):\n${formatJoinTable(rows)}`, { dryRun: true, nodes: rows });
      }
      const { site, lease } = await siteAccess({ kubeconfig: host.p(ADMIN_CONF), root: host.root, reporter: out.reporter, standin: o.siteStandin });
      const rows = await joinNodes({
        host,
        site,
        lease,
        targets,
        ...(answers?.ssh ? { ssh: answers.ssh } : {}),
        bundle: o.bundle,
        reporter: out.reporter,
        wait: o.wait,
        order,
        remoteRoot: o.remoteRoot,
        remotePath: o.remotePath,
        allowDowngrade: o.allowDowngrade,
        confirmHostKey: async (h, fp) => {
          if (o.acceptNewHostKeys) return true;
          out.reporter.warn(`${h} offers host key ${fp}, which known_hosts has never seen`);
          return confirm(`Trust the host key ${fp} of ${h}?`, '--accept-new-host-keys (after checking the fingerprint), or add the key to known_hosts');
        },
      });
      out.reporter.done();
      const failed = rows.filter((r) => !r.ok);
      if (!failed.length) return out.result(formatJoinTable(rows), { dryRun: false, nodes: rows });
      // With --json the error is the one document, and carries the rows.
      out.human(formatJoinTable(rows));
      throw new RemoteError(Codes.joinFailed, `${failed.length} of ${rows.length} nodes did not join: ${failed.map((f) => f.name).join(', ')}`, {
        hint: 'Fix each cause above, then run the same ferry join again: the nodes and steps that finished are skipped.',
        details: { dryRun: false, nodes: rows },
      });
    });
}
