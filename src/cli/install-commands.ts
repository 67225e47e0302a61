import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { Codes, RemoteError, UsageError } from '../errors.js';
import { answerProblems, checkCidr, clusterFqdn, DEFAULTS, detectAddresses, loadAnswers, saveAnswers, type InstallAnswers } from '../install/answers.js';
import { Host } from '../install/host.js';
import { ADMIN_CONF, API_PORT, BUNDLE_DIR } from '../install/paths.js';
import { describePlan, formatPlan, runPlan, type PlanEntry } from '../install/plan.js';
import { writeFileAtomic } from '../util/fsx.js';
import { loadPublicKey } from '../sign/keys.js';
import { makeOutput } from './output.js';
import { canPrompt, confirm, input, PromptCancelled, select } from './prompt.js';
import { collectCsv, examples, globals } from './shared.js';


const KNOWN_CNIS = ['flannel', 'calico', 'tigera-operator', 'cilium'];

/** Asks every question an answers file would hold; refuses without a terminal. */
async function askAnswers(bundle: string): Promise<InstallAnswers> {
  const hint = '--answers FILE';
  const { readBundleManifest } = await import('../bundle/inspect.js');
  const m = await readBundleManifest(bundle);
  const check = (probe: Partial<InstallAnswers>, field: string) => (v: string): true | string => {
    const p = answerProblems({ apiVersion: 'ferry.dev/v1alpha1', kind: 'InstallAnswers', domain: 'a.example', node: { name: 'n', ip: '10.0.0.1' }, podCidr: DEFAULTS.podCidr, serviceCidr: '10.96.0.0/12', ...probe }).find((x) => x.path.join('.') === field);
    return p ? `${field} ${p.msg}` : true;
  };
  const domain = await input('Site DNS domain', hint, { default: 'site.example', validate: (v) => check({ domain: v }, 'domain')(v) });
  const fqdn = await input('Cluster FQDN (every node reaches the API by this name)', hint, { default: `k8s-cluster.${domain}`, validate: (v) => check({ clusterFqdn: v }, 'clusterFqdn')(v) });
  const name = await input("This node's name", hint, { default: os.hostname().toLowerCase().split('.')[0], validate: (v) => check({ node: { name: v, ip: '10.0.0.1' } }, 'node.name')(v) });
  const ips = detectAddresses();
  const ip = ips.length
    ? await select("This node's IP", hint, [...ips.map((a) => ({ value: a })), { value: 'other', name: 'another address…' }], ips[0])
    : 'other';
  const nodeIp = ip === 'other' ? await input("This node's IP", hint, { validate: (v) => check({ node: { name: 'n', ip: v } }, 'node.ip')(v) }) : ip;
  const podCidr = await input('Pod CIDR', hint, { default: DEFAULTS.podCidr, validate: (v) => checkCidr(v) ?? true });
  const serviceCidr = await input('Service CIDR', hint, { default: DEFAULTS.serviceCidr, validate: (v) => check({ podCidr, serviceCidr: v }, 'serviceCidr')(v) });
  const cnis = m.charts.filter((c) => KNOWN_CNIS.includes(c.name)).map((c) => c.name);
  const cni = cnis.length ? await select('CNI', hint, cnis.map((c) => ({ value: c }))) : undefined;
  const recordsText = await input('Extra site DNS records, as name=ip separated by commas (empty for none)', hint, {
    default: '',
    validate: (v) => {
      const recs = v.split(',').map((s) => s.trim()).filter(Boolean).map((s) => ({ name: s.split('=')[0] ?? '', ip: s.split('=')[1] ?? '' }));
      // With the cluster FQDN as answered: a record must not shadow it either.
      const p = answerProblems({ apiVersion: 'ferry.dev/v1alpha1', kind: 'InstallAnswers', domain, clusterFqdn: fqdn, node: { name, ip: nodeIp }, podCidr, serviceCidr, records: recs });
      return p.length ? p.map((x) => `${x.path.join('.')} ${x.msg}`).join('; ') : true;
    },
  });
  const records = recordsText.split(',').map((s) => s.trim()).filter(Boolean).map((s) => ({ name: s.split('=')[0]!, ip: s.split('=')[1]! }));
  return {
    apiVersion: 'ferry.dev/v1alpha1',
    kind: 'InstallAnswers',
    domain,
    ...(fqdn !== `k8s-cluster.${domain}` ? { clusterFqdn: fqdn } : {}),
    node: { name, ip: nodeIp },
    podCidr,
    serviceCidr,
    ...(cni ? { cni } : {}),
    ...(records.length ? { records } : {}),
  };
}

function summary(a: InstallAnswers): string {
  return [
    `domain          ${a.domain}`,
    `cluster FQDN    ${clusterFqdn(a)}`,
    `this node       ${a.node.name} (${a.node.ip})`,
    `pod CIDR        ${a.podCidr}`,
    `service CIDR    ${a.serviceCidr}`,
    `CNI             ${a.cni ?? '(none in the bundle)'}`,
    `extra records   ${(a.records ?? []).map((r) => `${r.name}=${r.ip}`).join(', ') || '(none)'}`,
    `nodes to join   ${(a.join ?? []).map((j) => `${j.name} (${j.role}, ${j.host})`).join(', ') || '(none)'}`,
  ].join('\n');
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
    .option('--save-answers <file>', 'where to save the answers given at the prompts', '/etc/ferry/answers.yaml')
    .option('--dry-run', 'verify the bundle, check the answers against it and print the plan (with --json as JSON); changes nothing, needs no root')
    .option('--show-files', 'with --dry-run: print every file a real run would write')
    .option('--out <dir>', 'with --dry-run: write every file a real run would write under DIR instead')
    .option('--root <dir>', 'put every host file under this prefix (for tests and image builds). Not a sandbox: modprobe, sysctl, systemctl and kubeadm still run on THIS host', '/')
    .option('--ignore-preflight <checks>', 'skip these preflight checks (root,arch,swap,ports,disk,clock)', collectCsv)
    .option('--yes', 'install without asking to confirm the summary (the question defaults to No)')
    .option('--rollout-timeout <seconds>', 'how long to wait for the DNS and LB DaemonSets', '300')
    .option('--allow-downgrade', 'replace the unpacked bundle with an older one (by creation time or version)')
    .addHelpText('after', examples([
      'sudo sh install.sh site.ferry.tar --trust ferry.pub   # needs root on a site server, after the openssl and sha256sum steps ferry bundle build printed',
      'ferry install site.ferry.tar --trust ferry.pub --answers answers.yaml   # needs root on a site server and an answers file for it',
      'ferry install site.ferry.tar --trust ferry.pub --answers answers.yaml --dry-run --json   # needs an answers file for this machine (not root)',
      'ferry install site.ferry.tar --trust ferry.pub --answers answers.yaml --dry-run --out rendered/   # needs an answers file for this machine (not root)',
    ]))
    .action(async (bundle: string, o: { trust?: string; answers?: string; saveAnswers: string; dryRun?: boolean; showFiles?: boolean; out?: string; root: string; ignorePreflight?: string[]; yes?: boolean; rolloutTimeout: string; allowDowngrade?: boolean }, c: Command) => {
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
      let answers: InstallAnswers;
      if (o.answers) answers = await loadAnswers(o.answers);
      else {
        if (!canPrompt()) {
          throw new UsageError(Codes.promptNoTty, 'ferry install needs answers, and there is no terminal to ask them on', {
            hint: 'Pass --answers FILE (an InstallAnswers YAML; see the README), or run on a terminal.',
          });
        }
        answers = await askAnswers(bundle);
      }
      if (!o.answers && !o.dryRun) {
        process.stderr.write(`\n${summary(answers)}\n\n`);
        if (!o.yes && !(await confirm('Install with these answers?', '--yes', false))) {
          throw new UsageError(Codes.usage, 'installation cancelled: nothing was written', { hint: 'Run again to answer differently, or pass --yes to install without this question.' });
        }
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
        for (const p of d.preflight) out.reporter.warn(`preflight on this machine: ${p}`);
        if (d.problems.length === 1) throw d.problems[0]!;
        if (d.problems.length > 1) {
          throw new UsageError(Codes.installRefused, `a real run would stop, for ${d.problems.length} reasons:\n  ${d.problems.map((p) => `[${p.code}] ${p.message.replace(/\n/g, '\n    ')}`).join('\n  ')}`, {
            hint: 'Fix each, then dry-run again.',
            details: { problems: d.problems.map((p) => p.toJSON()) },
          });
        }
        if (o.out) {
          for (const f of d.files) await writeFileAtomic(path.join(path.resolve(o.out), f.path), f.content, 0o600);
        }
        const plan = await describePlan(steps);
        const files = d.files.map((f) => ({ path: f.path, ...(o.showFiles ? { content: f.content } : {}) }));
        out.result(
          [
            `ferry install plan for ${answers.node.name} (${answers.node.ip}), root ${host.root}; bundle ${d.manifest.name} ${d.manifest.version} (Kubernetes ${d.manifest.kubernetes?.version}), signed by ${d.signer}:`,
            formatPlan(plan),
            o.out ? `\n${d.files.length} files rendered under ${path.resolve(o.out)}` : o.showFiles ? d.files.map((f) => `\n--- ${f.path}\n${f.content.trimEnd()}`).join('\n') : `\n${d.files.length} files would be written (see them with --show-files or --out DIR)`,
          ].join('\n'),
          { dryRun: true, node: answers.node, root: host.root, signer: d.signer, steps: plan, files, preflight: d.preflight },
        );
        return;
      }
      if (!o.answers) {
        await saveAnswers(host.p(o.saveAnswers), answers);
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
        return probs.length ? probs.map((p) => p.msg).join('; ') : true;
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
