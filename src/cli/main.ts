import { Command, CommanderError } from 'commander';
import { FERRY_VERSION } from '../bundle/format.js';
import { ExitCode, UsageError, Codes } from '../errors.js';
import { answersCommand } from './answers-commands.js';
import { bundleCommand } from './bundle-commands.js';
import { imagesCommand } from './images-commands.js';
import { installCommand, nodeJoinCommand, nodeUpgradeCommand } from './install-commands.js';
import { upgradeCommand } from './upgrade-commands.js';
import { joinCommand } from './join-commands.js';
import { keyCommand } from './key-commands.js';
import { lockCommand } from './lock-commands.js';
import { containerdCommand, pkiCommand, serveCommand } from './site-commands.js';
import { reportCancelled, reportError } from './output.js';
import { cancelledPrompt } from './prompt.js';
import { specCommand } from './spec-commands.js';
import { stateCommand } from './state-commands.js';
import { certsCommand, nodeCertsRenewCommand } from './certs-commands.js';
import { nodeResetCommand, resetCommand } from './reset-commands.js';
import { statusCommand } from './status-commands.js';
import { supportBundleCommand } from './support-commands.js';
import { backupCommand } from './backup-commands.js';
import { takeVerdictExit } from './verdict.js';

const EXIT_CODES = `
Exit codes:
  0  success
  1  internal error (a bug: please report it)
  2  bad usage or input (command line, spec, lock, answers)
  3  drift: the lock no longer matches the spec or upstream
  4  registry or network failure (unreachable, auth, not found)
  5  integrity failure (digest, size or signature mismatch)
  6  local filesystem failure (permissions, disk full)
  10  ferry status, certs check: degraded (a server down, a certificate near expiry)
  11  ferry status: down (no API, or etcd without quorum)
  130  cancelled at a prompt (Ctrl-C): nothing more was done

Errors print as "error[CODE]: message" and a hint; with --json also as {"error": {...}} on stdout.
`;

/** Every command's options and help, defined up front; each action imports its implementation when it runs. */
function buildProgram(): Command {
  const program = new Command('ferry')
    .description('Carry a whole Kubernetes installation across an air gap.')
    .version(FERRY_VERSION, '-V, --version')
    .option('--json', 'machine-readable output on stdout')
    .option('-q, --quiet', 'only errors')
    .option('-v, --verbose', 'more detail, including retries')
    .addHelpText(
      'after',
      `
Examples:
  $ ferry lock bundle-spec/kubernetes.yaml                 # pin every image to a digest
  $ ferry images pull bundle-spec/kubernetes.yaml --out store
  $ ferry images push --store store --to harbor.site.example/ferry
  $ ferry key generate --out keys
  $ ferry bundle build bundle-spec/kubernetes.yaml --key keys/ferry.key --split-size
  $ ferry bundle verify kubernetes-0.1.0.ferry.tar --trust keys/ferry.pub
${EXIT_CODES}`,
    );
  program.addCommand(lockCommand());
  program.addCommand(imagesCommand());
  program.addCommand(specCommand());
  program.addCommand(keyCommand());
  program.addCommand(bundleCommand());
  program.addCommand(serveCommand());
  program.addCommand(pkiCommand());
  program.addCommand(containerdCommand());
  program.addCommand(installCommand());
  program.addCommand(joinCommand());
  program.addCommand(answersCommand());
  program.addCommand(stateCommand());
  program.addCommand(nodeJoinCommand(), { hidden: true });
  program.addCommand(nodeUpgradeCommand(), { hidden: true });
  program.addCommand(statusCommand());
  program.addCommand(certsCommand());
  program.addCommand(resetCommand());
  program.addCommand(upgradeCommand());
  program.addCommand(supportBundleCommand());
  program.addCommand(backupCommand());
  program.addCommand(nodeCertsRenewCommand(), { hidden: true });
  program.addCommand(nodeResetCommand(), { hidden: true });
  const exitOverride = (c: Command) => {
    c.exitOverride();
    // main() prints commander's errors as error[USAGE] lines; commander printing them too said it twice.
    c.configureOutput({ outputError: () => {} });
    c.commands.forEach(exitOverride);
  };
  exitOverride(program);
  return program;
}

/** The CLI entry: the only place that turns errors into output and exit codes. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  const json = argv.includes('--json');
  try {
    takeVerdictExit();
    await program.parseAsync(argv, { from: 'user' });
    return takeVerdictExit() ?? ExitCode.ok;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.exitCode === 0 || e.code === 'commander.helpDisplayed' || e.code === 'commander.version') return ExitCode.ok;
      return reportError(new UsageError(Codes.usage, e.message.replace(/^error: /, ''), { hint: 'See --help for the usage and examples.' }), json);
    }
    const cancelled = cancelledPrompt(e);
    if (cancelled) return reportCancelled(cancelled.question, json);
    return reportError(e, json);
  }
}
