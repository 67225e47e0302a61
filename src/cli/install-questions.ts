import { readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { answerProblems, clusterFqdn, DEFAULTS, defaultClusterFqdn, detectAddresses, type DraftAnswers, type InstallAnswers } from '../install/answers.js';
import { formatProblem } from '../spec/answers.js';
import { formatPath } from '../spec/yamlpos.js';
import { input, select } from './prompt.js';

/*
 * ferry install's questions: each answer checked by the answers' schema and every rule across
 * fields at the prompt that can fix it; a summary from which any answer can be changed (asked again
 * with its current value as the default, every rule checked again); and a draft of what was given,
 * which the caller keeps when the operator declines or presses Ctrl-C, offered as defaults next time.
 */

const KNOWN_CNIS = ['flannel', 'calico', 'tigera-operator', 'cilium'];
const HINT = '--answers FILE';

/** The questions, in the order they are asked; each is a line of the summary. */
export const FIELDS = ['domain', 'clusterFqdn', 'node.name', 'node.ip', 'podCidr', 'serviceCidr', 'cni', 'records', 'upstreamDns'] as const;
export type Field = (typeof FIELDS)[number];

const LABELS: Record<Field, string> = {
  domain: 'domain',
  clusterFqdn: 'cluster FQDN',
  'node.name': 'node name',
  'node.ip': 'node IP',
  podCidr: 'pod CIDR',
  serviceCidr: 'service CIDR',
  cni: 'CNI',
  records: 'extra records',
  upstreamDns: 'upstream DNS',
};

/** This host's resolvers from /etc/resolv.conf, less loopback stubs (systemd-resolved's 127.0.0.53). */
function hostResolvers(): string[] {
  let text = '';
  try {
    text = readFileSync('/etc/resolv.conf', 'utf8');
  } catch {
    return [];
  }
  return [...text.matchAll(/^nameserver\s+(\S+)/gm)].map((m) => m[1]!).filter((ip) => net.isIPv4(ip) && !ip.startsWith('127.'));
}

const parseRecords = (v: string) => v.split(',').map((s) => s.trim()).filter(Boolean).map((s) => ({ name: s.split('=')[0] ?? '', ip: s.split('=')[1] ?? '' }));
const parseList = (v: string) => [...new Set(v.split(/[\s,]+/).filter(Boolean))];

/** The answers with one field set from its typed text (an empty list, or the default FQDN, leaves the field out). */
function withField(a: InstallAnswers, f: Field, v: string): InstallAnswers {
  const next: InstallAnswers = { ...a, node: { ...a.node } };
  switch (f) {
    case 'domain':
      next.domain = v;
      break;
    case 'clusterFqdn':
      if (v === defaultClusterFqdn(next.domain)) delete next.clusterFqdn;
      else next.clusterFqdn = v;
      break;
    case 'node.name':
      next.node.name = v;
      break;
    case 'node.ip':
      next.node.ip = v;
      break;
    case 'podCidr':
      next.podCidr = v;
      break;
    case 'serviceCidr':
      next.serviceCidr = v;
      break;
    case 'cni':
      if (v) next.cni = v;
      else delete next.cni;
      break;
    case 'records':
      if (v.trim()) next.records = parseRecords(v);
      else delete next.records;
      break;
    case 'upstreamDns':
      if (v.trim()) next.upstreamDns = parseList(v);
      else delete next.upstreamDns;
      break;
  }
  return next;
}

/** A field's current value as it is typed. */
function textOf(a: InstallAnswers, f: Field): string {
  switch (f) {
    case 'domain':
      return a.domain;
    case 'clusterFqdn':
      return clusterFqdn(a);
    case 'node.name':
      return a.node.name;
    case 'node.ip':
      return a.node.ip;
    case 'podCidr':
      return a.podCidr;
    case 'serviceCidr':
      return a.serviceCidr;
    case 'cni':
      return a.cni ?? '';
    case 'records':
      return (a.records ?? []).map((r) => `${r.name}=${r.ip}`).join(',');
    case 'upstreamDns':
      return (a.upstreamDns ?? []).join(',');
  }
}

/** A draft's value of a field as it is typed; undefined when the draft has none. */
function draftText(d: DraftAnswers | undefined, f: Field): string | undefined {
  if (!d) return undefined;
  switch (f) {
    case 'node.name':
      return d.node?.name;
    case 'node.ip':
      return d.node?.ip;
    case 'records':
      return d.records ? d.records.map((r) => `${r.name}=${r.ip}`).join(',') : undefined;
    case 'upstreamDns':
      return d.upstreamDns ? d.upstreamDns.join(',') : undefined;
    default:
      return d[f];
  }
}

/** The summary shown before installing. */
export function summary(a: InstallAnswers): string {
  return [
    `domain          ${a.domain}`,
    `cluster FQDN    ${clusterFqdn(a)}`,
    `this node       ${a.node.name} (${a.node.ip})`,
    `pod CIDR        ${a.podCidr}`,
    `service CIDR    ${a.serviceCidr}`,
    `CNI             ${a.cni ?? '(none in the bundle)'}`,
    `extra records   ${(a.records ?? []).map((r) => `${r.name}=${r.ip}`).join(', ') || '(none)'}`,
    `upstream DNS    ${(a.upstreamDns ?? []).join(', ') || '(none: only the site domain answers)'}`,
    `nodes to join   ${(a.join ?? []).map((j) => `${j.name} (${j.role}, ${j.host})`).join(', ') || '(none)'}`,
  ].join('\n');
}

export class InstallQuestions {
  /** The answers so far: placeholders until each question is answered. */
  private sofar: InstallAnswers = { apiVersion: 'ferry.dev/v1alpha1', kind: 'InstallAnswers', domain: 'a.example', node: { name: 'n', ip: '10.0.0.1' }, podCidr: DEFAULTS.podCidr, serviceCidr: DEFAULTS.serviceCidr };
  /** What the operator has answered (the draft kept when they stop). */
  readonly given: DraftAnswers = {};

  constructor(
    private readonly cnis: string[],
    private readonly draft?: DraftAnswers,
  ) {}

  /** From a bundle's charts: the CNIs it offers. */
  static cnisOf(charts: { name: string }[]): string[] {
    return charts.filter((c) => KNOWN_CNIS.includes(c.name)).map((c) => c.name);
  }

  /**
   * This field's problems, and any rule across fields this answer breaks that the answers so far do
   * not already break (pod CIDR 10.0.0.0/8 with node IP 10.0.0.30 is caught at the pod CIDR).
   */
  private check(f: Field) {
    return (v: string): true | string => {
      const before = new Set(answerProblems(this.sofar).map(formatProblem));
      const p = answerProblems(withField(this.sofar, f, v)).filter((x) => formatPath(x.path).startsWith(f) || !before.has(formatProblem(x)));
      return p.length ? p.map(formatProblem).join('; ') : true;
    };
  }

  private set(f: Field, v: string): void {
    this.sofar = withField(this.sofar, f, v);
    const a = this.sofar;
    const g = this.given;
    if (f === 'node.name' || f === 'node.ip') g.node = { ...g.node, [f === 'node.name' ? 'name' : 'ip']: v };
    else if (f === 'records') g.records = a.records ?? [];
    else if (f === 'upstreamDns') g.upstreamDns = a.upstreamDns ?? [];
    else if (f === 'clusterFqdn') g.clusterFqdn = clusterFqdn(a);
    else g[f] = v;
  }

  private async text(f: Field, q: string, def: string | undefined): Promise<void> {
    this.set(f, await input(q, HINT, { ...(def !== undefined ? { default: def } : {}), validate: this.check(f) }));
  }

  /** Asks one field; `current` is the default (a change), else the draft's value, else ferry's default. */
  private async ask(f: Field, current?: string): Promise<void> {
    const def = current ?? draftText(this.draft, f);
    const domain = this.sofar.domain;
    switch (f) {
      case 'domain':
        return this.text(f, 'Site DNS domain', def ?? 'site.example');
      case 'clusterFqdn':
        // A draft's FQDN that was its own domain's default follows the domain as answered now.
        return this.text(f, 'Cluster FQDN (every node reaches the API by this name)', current ?? (def && this.draft?.domain && def !== defaultClusterFqdn(this.draft.domain) ? def : defaultClusterFqdn(domain)));
      case 'node.name':
        return this.text(f, "This node's name", def ?? os.hostname().toLowerCase().split('.')[0]);
      case 'node.ip': {
        const ips = detectAddresses();
        for (;;) {
          const choice = ips.length ? await select("This node's IP", HINT, [...ips.map((a) => ({ value: a })), { value: 'other', name: 'another address…' }], def && ips.includes(def) ? def : def ? 'other' : ips[0]) : 'other';
          if (choice === 'other') return this.text(f, "This node's IP", def && !ips.includes(def) ? def : undefined);
          // A listed address is checked too: the rules across fields may still refuse it.
          const ok = this.check(f)(choice);
          if (ok === true) return this.set(f, choice);
          process.stderr.write(`> ${ok}\n`);
        }
      }
      case 'podCidr':
        return this.text(f, 'Pod CIDR', def ?? DEFAULTS.podCidr);
      case 'serviceCidr':
        return this.text(f, 'Service CIDR', def ?? DEFAULTS.serviceCidr);
      case 'cni':
        if (this.cnis.length) this.set(f, await select('CNI', HINT, this.cnis.map((c) => ({ value: c })), def && this.cnis.includes(def) ? def : undefined));
        return;
      case 'records':
        // With the cluster FQDN as answered: a record must not shadow it either.
        return this.text(f, 'Extra site DNS records, as name=ip separated by commas (empty for none)', def ?? '');
      case 'upstreamDns':
        // Names outside the site domain: offered as this host resolves them today.
        return this.text(f, `Upstream DNS servers for names outside ${domain}, separated by commas (empty: answer only the site domain)`, def ?? hostResolvers().join(','));
    }
  }

  /** Every question, in order. */
  async askAll(): Promise<InstallAnswers> {
    for (const f of FIELDS) await this.ask(f);
    return this.answers();
  }

  /** Asks one answer again, its current value the default; the others stay. */
  async change(f: Field): Promise<InstallAnswers> {
    await this.ask(f, textOf(this.sofar, f));
    return this.answers();
  }

  answers(): InstallAnswers {
    return structuredClone(this.sofar);
  }

  /** The choices at the summary: stop (the default), install, or change one answer. */
  summaryChoices(): { value: string; name: string }[] {
    const a = this.sofar;
    return [
      { value: 'no', name: 'No: stop here (the answers are kept as a draft for next time)' },
      { value: 'yes', name: 'Yes: install' },
      ...FIELDS.filter((f) => f !== 'cni' || this.cnis.length).map((f) => ({ value: `change:${f}`, name: `Change the ${LABELS[f]} (${textOf(a, f) || 'none'})` })),
    ];
  }
}
