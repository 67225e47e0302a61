import path from 'node:path';
import { Command, Option } from 'commander';
import { Codes, UsageError } from '../errors.js';
import { Host } from '../install/host.js';
import { ADMIN_CONF } from '../install/paths.js';
import { siteAccess } from './join-commands.js';
import { makeOutput } from './output.js';
import { examples, globals } from './shared.js';
import { durationOption } from './status-commands.js';

/* `ferry support-bundle`: one archive with what is needed to diagnose the site, secrets redacted. */

interface SupportFlags {
  out?: string;
  timeout: string;
  root: string;
  siteStandin?: string;
  remoteRoot?: string;
  remotePath?: string;
}

export function supportBundleCommand(): Command {
  return new Command('support-bundle')
    .description(
      "collect what is needed to diagnose the site into one .tar.gz, with secrets redacted: ferry's logs, step markers and journal, the site state, kubelet/containerd/ferry-serve journals, nodes, pods and events, etcd's members, each node's site DNS answer, the LB config, the bundle's identity and disk use; from this server and, over SSH, every node that answers",
    )
    .option('--out <file>', 'the archive to write (default: ferry-support-<time>.tar.gz here)')
    .option('--timeout <duration>', "each node's collection and each query's bound: a node that does not answer within it is listed as such", '60s')
    .option('--root <dir>', "this server's host-file prefix (for tests)", '/')
    .addOption(new Option('--site-standin <module>', 'a module whose siteStandin() gives the site state (for tests)').hideHelp())
    .addOption(new Option('--remote-root <dir>', 'for tests: the root prefix on the nodes ({name} is the node)').hideHelp())
    .addOption(new Option('--remote-path <dir>', 'for tests: PATH entries put first on the nodes').hideHelp())
    .addHelpText(
      'after',
      `${examples([
        'ferry support-bundle   # needs a server where ferry install finished, and SSH to the other nodes',
        'ferry support-bundle --out /tmp/site-support.tar.gz --json   # needs a server where ferry install finished; nodes that do not answer are listed',
      ])}
What it holds (each node under nodes/<name>/): /var/log/ferry and the step markers; the site state and
its operation journal; the last 5000 lines (24 h) of the kubelet, containerd and ferry-serve journals;
kubectl get nodes,pods -A -o wide, events and describe nodes; the ferry-system ConfigMaps (DNS zone,
haproxy config); etcd's member list and endpoint status; each node's DNS answer for the cluster FQDN;
each agent's haproxy stats; bundle.json's id and signer and the store's list; df of /var/lib/ferry,
/var/lib/containerd and /var/lib/etcd. Private keys, tokens, certificate keys, passwords and registry
credentials are replaced by <redacted> before anything is written; read summary.json first.
`,
    )
    .action(async (o: SupportFlags, c: Command) => {
      const out = makeOutput(globals(c));
      const timeoutMs = durationOption('--timeout', o.timeout);
      const host = new Host(path.resolve(o.root));
      if (!(await host.exists(ADMIN_CONF))) throw new UsageError(Codes.installMissing, `this machine is not a server where ferry install finished: no ${ADMIN_CONF}`, { hint: 'Run ferry support-bundle on a server.' });
      const file = o.out ?? `ferry-support-${new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}.tar.gz`;
      const { collectSupportBundle } = await import('../ops/support-bundle.js');
      // No state (the API down and no mirror, a kubeconfig that does not load) still leaves this server's files to collect.
      const state = await siteAccess({ kubeconfig: host.p(ADMIN_CONF), root: host.root, reporter: out.reporter, standin: o.siteStandin })
        .then(({ site }) => site.read())
        .catch((e: Error) => {
          out.reporter.warn(`the site state cannot be read (${e.message.split('\n')[0]}): collecting this server only`);
          return undefined;
        });
      out.reporter.info(`collecting from ${state ? `${state.nodes.length} nodes` : 'this server (there is no site state)'}`);
      const r = await collectSupportBundle({
        host,
        readState: async () => state,
        ssh: state?.answers.ssh,
        out: file,
        timeoutMs,
        remoteRoot: o.remoteRoot,
        remotePath: o.remotePath,
        onNode: (name, ok, detail) => (ok ? out.reporter.info(`${name}: ${detail}`) : out.reporter.warn(`${name}: not collected: ${detail}`)),
      });
      const lines = [
        `wrote ${r.out} (${(r.bytes / 2 ** 20).toFixed(1)} MiB), secrets redacted`,
        ...r.nodes.map((n) => `  ${n.name.padEnd(20)} ${n.collected ? `${n.files} files${n.where === 'here' ? ' (this server)' : ''}${n.error ? `: ${n.error}` : ''}` : `NOT COLLECTED: ${n.error}`}`),
        ...r.failed.map((f) => `  ${f.what}: ${f.error}`),
      ];
      out.result(lines.join('\n'), r);
    });
}
