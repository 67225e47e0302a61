import path from 'node:path';
import { Command } from 'commander';
import { Codes, RemoteError, UsageError } from '../errors.js';
import { answerProblems, clusterFqdn, loadAnswers, parseDraft, saveAnswers, saveDraft, type InstallAnswers } from '../install/answers.js';
import { formatProblem } from '../spec/answers.js';
import { Host } from '../install/host.js';
import { ADMIN_CONF, ANSWERS_DRAFT, ANSWERS_FILE, API_PORT, BUNDLE_DIR } from '../install/paths.js';
import { formatPlan, runPlan, withHostLock, type PlanEntry } from '../install/plan.js';
import type { RecordedFile } from '../install/recording-host.js';
import { writeFileAtomic } from '../util/fsx.js';
import { loadPublicKey } from '../sign/keys.js';
import { makeOutput } from './output.js';
import { InstallQuestions, summary, type Field } from './install-questions.js';
import { canPrompt, confirm, input, PromptCancelled, select } from './prompt.js';
import { collectCsv, examples, globals } from './shared.js';


const PRIVATE_KEY = /-----BEGIN [A-Z ]*PRIVATE KEY-----/;

/** Refuses, before any question, a bundle this machine cannot install: no Kubernetes in it, or another architecture. */
async function refuseBeforeQuestions(bundle: string, ignore: string[]): Promise<void> {
  const { readBundleManifest } = await import('../bundle/inspect.js');
  const m = await readBundleManifest(bundle);
  if (!m.kubernetes?.version) {
    throw new UsageError(Codes.installRefused, `${bundle} (${m.name} ${m.version}) carries no Kubernetes release (its spec has no spec.kubernetes): it cannot install a cluster, so no questions are asked`, {
      hint: 'Install a bundle built from a spec with spec.kubernetes (bundle-spec/kubernetes.yaml); a connected-side bundle such as the demo\'s only moves images and files.',
    });
  }
  const { archOf } = await import('../install/node-steps.js');
  const arch = `linux/${archOf()}`;
  if (!ignore.includes('arch') && !m.platforms.includes(arch)) {
    throw new UsageError(Codes.preflight, `this machine is ${arch}, and ${bundle} carries ${m.platforms.join(', ')}: it cannot install here, so no questions are asked`, {
      hint: "Build a bundle for this platform (spec.platforms), or install on a machine of the bundle's.",
    });
  }
}

/**
 * The questions, then (but in a dry run) the summary, from which the operator installs, stops, or
 * changes any answer. Stopping there or Ctrl-C keeps what was answered as a draft (ANSWERS_DRAFT,
 * 0600), which the next run offers as its defaults; a dry run writes none.
 */
async function askWithDraft(bundle: string, root: string, dryRun: boolean, yes: boolean, reporter: { info(l: string): void; warn(l: string): void }): Promise<InstallAnswers> {
  const { readBundleManifest } = await import('../bundle/inspect.js');
  const { promises: fs } = await import('node:fs');
  const m = await readBundleManifest(bundle);
  const draftFile = path.join(root, ANSWERS_DRAFT);
  const draft = parseDraft(await fs.readFile(draftFile, 'utf8').catch(() => undefined));
  if (draft) reporter.info(`the answers of an unfinished ferry install (${draftFile}) are offered as the defaults: Enter keeps each`);
  const q = new InstallQuestions(InstallQuestions.cnisOf(m.charts), draft);
  const keepDraft = async (): Promise<boolean> => {
    if (dryRun || !Object.keys(q.given).length) return false;
    try {
      await saveDraft(draftFile, q.given);
      return true;
    } catch (e) {
      reporter.warn(`could not keep a draft of the answers in ${draftFile}: ${(e as Error).message}`);
      return false;
    }
  };
  try {
    let answers = await q.askAll();
    if (dryRun) return answers;
    for (;;) {
      process.stderr.write(`\n${summary(answers)}\n\n`);
      if (yes) return answers;
      const problems = answerProblems(answers);
      if (problems.length) process.stderr.write(`These answers cannot install: ${problems.map(formatProblem).join('; ')}\nChange one of them.\n\n`);
      const choices = q.summaryChoices().filter((c) => c.value !== 'yes' || !problems.length);
      // Every choice on one screen: no scrolling to find the answer to change.
      const choice = await select('Install with these answers?', '--yes', choices, 'no', choices.length);
      if (choice === 'yes') return answers;
      if (choice === 'no') {
        const kept = await keepDraft();
        throw new UsageError(Codes.usage, `installation cancelled: nothing was written${kept ? ` but a draft of the answers, ${draftFile}` : ''}`, {
          hint: kept ? 'Run ferry install again: it offers these answers as the defaults. --yes installs without this question.' : 'Run again to answer differently, or pass --yes to install without this question.',
        });
      }
      answers = await q.change(choice.slice('change:'.length) as Field);
    }
  } catch (e) {
    if (e instanceof PromptCancelled && (await keepDraft())) reporter.info(`the answers given so far are kept in ${draftFile}: the next ferry install offers them as the defaults`);
    throw e;
  }
}

/** What the operator needs once the first server is up, as kubeadm and k3s print it. */
function nextSteps(a: InstallAnswers, adminConf: string, answersFile: string, bundle: string) {
  const join = `ferry join --answers ${answersFile} --bundle ${bundle}`;
  const skeleton = ['join:', '  - {host: 10.0.0.12, name: k8s-server-02, role: server}', '  - {host: 10.0.0.21, name: k8s-agent-01, role: agent}', 'ssh: {user: root, identityFile: ~/.ssh/id_ed25519}'].join('\n');
  const check = `kubectl --kubeconfig ${adminConf} get nodes -o wide`;
  return { adminKubeconfig: adminConf, join, joinAnswersSkeleton: skeleton, check, api: `https://${clusterFqdn(a)}:${API_PORT}` };
}

function formatNext(n: ReturnType<typeof nextSteps>, answersFile: string): string {
  return [
    '',
    `The cluster answers at ${n.api}.`,
    `  admin kubeconfig: ${n.adminKubeconfig} (export KUBECONFIG=${n.adminKubeconfig})`,
    `  check it:         ${n.check}`,
    `  join more nodes:  add them to ${answersFile}, e.g.`,
    ...n.joinAnswersSkeleton.split('\n').map((l) => `      ${l}`),
    `    then run:       ${n.join}`,
  ].join('\n');
}

const stepTimes = (steps: PlanEntry[]) => steps.map((s) => `  ${s.id.padEnd(22)} ${s.status.padEnd(8)} ${(s.seconds ?? 0).toFixed(1).padStart(6)}s`).join('\n');

export function installCommand(): Command {
  return new Command('install')
    .description('install the first server of a cluster from a verified bundle')
    .argument('<bundle>', 'the bundle: FILE or FILE.parts.json')
    .option('--trust <pub>', 'the trusted public key (ferry.pub); without it, confirm the fingerprint at the prompt')
    .option('--answers <file>', 'answers file (InstallAnswers YAML): no questions asked')
    .option('--save-answers <file>', 'where to save the answers given at the prompts', ANSWERS_FILE)
    .option('--dry-run', 'verify the bundle, check the answers against it and print the plan (with --json as JSON); changes nothing, needs no root')
    .option('--show-files', 'with --dry-run: print every file a real run would write')
    .option('--out <dir>', 'with --dry-run: write every file a real run would write under DIR instead')
    .option('--root <dir>', 'put every host file under this prefix (for tests and image builds). Not a sandbox: modprobe, sysctl, systemctl and kubeadm still run on THIS host', '/')
    .option('--ignore-preflight <checks>', 'skip these preflight checks (root,arch,swap,ports,disk,clock)', collectCsv)
    .option('--yes', 'install without asking to confirm the summary (the question defaults to No)')
    .option('--rollout-timeout <seconds>', 'how long to wait for the DNS and LB DaemonSets', '300')
    .option('--allow-downgrade', 'replace the installed bundle of the same name with an older one, or one of unknown order (by version, then signed build time)')
    .option('--allow-signer-change', 'replace the installed bundle with one signed by another key')
    .addHelpText('after', examples([
      'sudo sh install.sh site.ferry.tar --trust ferry.pub   # needs root on a site server, after the openssl and sha256sum steps ferry bundle build printed',
      'ferry install site.ferry.tar --trust ferry.pub --answers answers.yaml   # needs root on a site server and an answers file for it',
      'ferry install site.ferry.tar --trust ferry.pub --answers answers.yaml --dry-run --json   # needs an answers file for this machine (not root)',
      'ferry install site.ferry.tar --trust ferry.pub --answers answers.yaml --dry-run --out rendered/   # needs an answers file for this machine (not root)',
    ]))
    .action(async (bundle: string, o: { trust?: string; answers?: string; saveAnswers: string; dryRun?: boolean; showFiles?: boolean; out?: string; root: string; ignorePreflight?: string[]; yes?: boolean; rolloutTimeout: string; allowDowngrade?: boolean; allowSignerChange?: boolean }, c: Command) => {
      const out = makeOutput(globals(c));
      const { readBundleManifest } = await import('../bundle/inspect.js');
      const { firstServerSteps } = await import('../install/first-server.js');
      const { dryRun } = await import('../install/dry-run.js');
      if ((o.showFiles || o.out) && !o.dryRun) throw new UsageError(Codes.usage, `${o.out ? '--out' : '--show-files'} goes with --dry-run`, { hint: 'Add --dry-run: a real run writes the files where they belong.' });
      // Before any question: the answers are no use to a run that cannot write /etc.
      if (!o.dryRun && process.getuid?.() !== 0 && !o.ignorePreflight?.includes('root')) {
        throw new UsageError(Codes.preflight, 'ferry install must run as root: it writes /etc, /var/lib and /usr/local, and runs modprobe, sysctl, systemctl and kubeadm', {
          hint: 'Run it with sudo (sudo sh install.sh site.ferry.tar --trust ferry.pub), or try it first with --dry-run, which needs no root.',
        });
      }
      // On an initialised node, another Kubernetes version is refused before any question or write.
      const { guardInstallVersion } = await import('../install/site-store.js');
      await guardInstallVersion(new Host(path.resolve(o.root)), bundle);
      let answers: InstallAnswers;
      if (o.answers) answers = await loadAnswers(o.answers);
      else {
        if (!canPrompt()) {
          throw new UsageError(Codes.promptNoTty, 'ferry install needs answers, and there is no terminal to ask them on', {
            hint: 'Pass --answers FILE (an InstallAnswers YAML; see the README), or run on a terminal.',
          });
        }
        // The bundle first: no questions for one that cannot install here.
        await refuseBeforeQuestions(bundle, o.ignorePreflight ?? []);
        answers = await askWithDraft(bundle, path.resolve(o.root), !!o.dryRun, !!o.yes, out.reporter);
      }
      const trust = o.trust ? await loadPublicKey(o.trust) : undefined;
      const host = new Host(path.resolve(o.root));
      // Ctrl-C at the trust question, asked from inside a step, is remembered here, answered as "no",
      // and rethrown as itself once the run stops, whatever the step made of it.
      let cancelled: PromptCancelled | undefined;
      const trustPrompt = async (fp: string) => {
        try {
          return await confirm(`Trust the bundle signed by ${fp}?`, '--trust ferry.pub');
        } catch (e) {
          if (!(e instanceof PromptCancelled)) throw e;
          cancelled = e;
          return false;
        }
      };
      const orCancelled = (e: unknown) => {
        throw cancelled ?? e;
      };
      const ctx = {
        host,
        bundle,
        answers,
        reporter: out.reporter,
        ignorePreflight: o.ignorePreflight,
        rolloutTimeoutMs: Number(o.rolloutTimeout) * 1000,
        allowDowngrade: o.allowDowngrade,
        allowSignerChange: o.allowSignerChange,
        manifest: await readBundleManifest(bundle).catch(() => undefined),
        verify: {
          trust,
          reporter: out.reporter,
          confirm: trustPrompt,
        },
      };
      const steps = firstServerSteps(ctx);
      if (o.dryRun) {
        const d = await dryRun(ctx).catch(orCancelled);
        if (d.problems.length === 1) throw d.problems[0]!;
        if (d.problems.length > 1) {
          throw new UsageError(Codes.installRefused, `a real run would stop, for ${d.problems.length} reasons:\n  ${d.problems.map((p) => `[${p.code}] ${p.message.replace(/\n/g, '\n    ')}`).join('\n  ')}`, {
            hint: 'Fix each, then dry-run again.',
            details: { problems: d.problems.map((p) => p.toJSON()) },
          });
        }
        // The dry run made its own keys for the site CA and the registry: never printed, never written out.
        const shown = (f: RecordedFile) => (f.content !== undefined && !PRIVATE_KEY.test(f.content) ? f.content : undefined);
        const rendered = d.files.filter((f) => shown(f) !== undefined);
        if (o.out) {
          for (const f of rendered) await writeFileAtomic(path.join(path.resolve(o.out), f.path), shown(f)!, 0o600);
        }
        const files = d.files.map((f) => ({ path: f.path, mode: f.mode, size: f.size, ...(f.from ? { from: f.from } : {}), ...(o.showFiles && shown(f) !== undefined ? { content: shown(f) } : {}) }));
        const describe = (f: RecordedFile) => (shown(f) !== undefined ? `\n--- ${f.path}\n${shown(f)!.trimEnd()}` : `\n--- ${f.path} (${f.from ? `from ${f.from}, ` : ''}${f.size} bytes${f.content !== undefined ? ', a private key: not shown' : ''})`);
        out.result(
          [
            `ferry install plan for ${answers.node.name} (${answers.node.ip}), root ${host.root}; bundle ${d.manifest.name} ${d.manifest.version} (Kubernetes ${d.manifest.kubernetes?.version}), signed by ${d.signer}:`,
            formatPlan(d.steps),
            ...(d.unpacked ? [`\nunpack ${d.unpacked.files.length} files into ${d.unpacked.into}`] : []),
            `\ncommands and applies, in order:\n${d.actions.map((a) => `  ${a}`).join('\n') || '  (none)'}`,
            o.out
              ? `\n${rendered.length} files rendered under ${path.resolve(o.out)}; ${d.files.length - rendered.length} more (copied from the bundle, or keys) are listed only`
              : o.showFiles
                ? d.files.map(describe).join('\n')
                : `\n${d.files.length} files would be written: ${d.files.map((f) => f.path).join(', ')} (see them with --show-files or --out DIR)`,
          ].join('\n'),
          { dryRun: true, node: answers.node, root: host.root, signer: d.signer, steps: d.steps, files, unpacked: d.unpacked, actions: d.actions },
        );
        return;
      }
      if (!o.answers) {
        await saveAnswers(host.p(o.saveAnswers), answers);
        await host.rm(ANSWERS_DRAFT);
        out.reporter.info(`answers saved to ${host.p(o.saveAnswers)}: re-run with --answers to repeat without questions`);
      }
      const r = await runPlan(host, 'install', steps, out.reporter).catch(orCancelled);
      out.reporter.done();
      const answersFile = o.answers ?? o.saveAnswers;
      const next = nextSteps(answers, host.p(ADMIN_CONF), answersFile, bundle);
      out.result(
        [
          r.applied.length
            ? `installed ${answers.node.name}: ${r.applied.length} steps applied, ${r.skipped.length} already done; log ${r.logFile}`
            : `${answers.node.name} is already installed as these answers say: nothing changed (${r.skipped.length} steps already done); log ${r.logFile}`,
          stepTimes(r.steps),
          formatNext(next, answersFile),
        ].join('\n'),
        { dryRun: false, node: answers.node, root: host.root, ...r, next },
      );
    });
}

/** Asks for the hosts to join, one at a time, until an empty address. */
export async function askJoinHosts(a: InstallAnswers): Promise<NonNullable<InstallAnswers['join']>> {
  const hint = '--answers FILE with a join: list';
  const out: NonNullable<InstallAnswers['join']> = [];
  for (;;) {
    const host = await input(`Address of node ${out.length + 1} to join (empty when done)`, hint, { default: '' });
    if (!host) return out;
    const name = await input(`Node name for ${host}`, hint, {
      validate: (v) => {
        const probs = answerProblems({ ...a, join: [...out, { host, name: v, role: 'agent' }] }).filter((p) => p.path[0] === 'join');
        return probs.length ? probs.map(formatProblem).join('; ') : true;
      },
    });
    const role = await select(`Role of ${name}`, hint, [{ value: 'agent' as const, name: 'agent (worker)' }, { value: 'server' as const, name: 'server (control plane)' }]);
    out.push({ host, name, role });
  }
}

/** Run by ferry join on the joining node over SSH; reads its orders (and secrets) from stdin. */
export function nodeJoinCommand(): Command {
  return new Command('node-join')
    .description('(internal) the plan a joining node runs on itself; started by ferry join')
    .option('--root <dir>', 'host-file prefix', '/')
    .option('--bundle <file>', 'bundle uploaded for a joining server')
    .option('--allow-downgrade', 'let the uploaded bundle replace a newer one unpacked here')
    .action(async (o: { root: string; bundle?: string; allowDowngrade?: boolean }, c: Command) => {
      const out = makeOutput(globals(c));
      const { nodeJoinSteps } = await import('../install/node-join.js');
      let text = '';
      for await (const chunk of process.stdin) text += (chunk as Buffer).toString('utf8');
      const { readNodeJoinPayload } = await import('../ops/node-op.js');
      const payload = readNodeJoinPayload(text);
      const host = new Host(path.resolve(o.root), process.env, [payload.join.token, payload.join.certificateKey ?? ''].filter(Boolean));
      const r = await runPlan(host, 'join', nodeJoinSteps(host, payload, { bundleFile: o.bundle, reporter: out.reporter, allowDowngrade: o.allowDowngrade }), out.reporter);
      out.result(`joined ${payload.name}: ${r.applied.length} steps applied`, r);
    });
}

export function nodeUpgradeCommand(): Command {
  return new Command('node-upgrade')
    .description('(internal) what a node runs on itself during an upgrade; started by ferry upgrade')
    .option('--root <dir>', 'host-file prefix', '/')
    .option('--bundle <file>', 'the bundle uploaded for a server to stage')
    .action(async (o: { root: string; bundle?: string }, c: Command) => {
      const out = makeOutput(globals(c));
      let text = '';
      for await (const chunk of process.stdin) text += (chunk as Buffer).toString('utf8');
      const { readNodeUpgradePayload } = await import('../ops/node-op.js');
      const payload = readNodeUpgradePayload(text);
      const { nodeUpgradeSteps } = await import('../install/node-upgrade.js');
      const host = new Host(path.resolve(o.root));
      // A run killed on the server that started it may still be at work here: wait for it.
      const r = await withHostLock(host, 'upgrade', () => runPlan(host, `upgrade-${payload.phase}`, nodeUpgradeSteps(host, payload, { bundleFile: o.bundle }), out.reporter), { onWait: (pid) => out.reporter.info(`waiting for an earlier ferry node-upgrade (pid ${pid}) on this node to end`) });
      out.result(`${payload.phase === 'stage' ? 'staged' : 'upgraded'} ${payload.name} to ${payload.bundle}: ${r.applied.length} steps applied`, r);
    });
}
