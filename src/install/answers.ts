import { promises as dns } from 'node:dns';
import net from 'node:net';
import os from 'node:os';
import { parse, stringify } from 'yaml';
import { Codes, SpecError } from '../errors.js';
import { answersSchema, crossFieldProblems, DEFAULTS, SITE_SCHEMAS, type AnswerProblem, type InstallAnswers, type JoinHost } from '../spec/answers.js';
import { answersValidator } from '../spec/answers-validator.js';
import { describeSchemaProblems, schemaProblems } from '../spec/schema-errors.js';
import { formatPath, loadYaml, positionOf, type LoadedYaml } from '../spec/yamlpos.js';
import { writeFileAtomic } from '../util/fsx.js';

/*
 * Loading, resolving and saving answers. Their shape and rules are the document in
 * src/spec/answers.ts; what needs this machine or the network (DNS, addresses) is here.
 */

export { clusterFqdn, DEFAULTS, defaultClusterFqdn, registryFqdn, type InstallAnswers, type JoinHost } from '../spec/answers.js';

let validator: ReturnType<typeof answersValidator> | undefined;
function validate(value: unknown) {
  validator ??= answersValidator();
  return validator(value) ? [] : [...(validator.errors ?? [])];
}

const IP_FIELD = /^(node\.ip|join\[\d+\]\.ip|records\[\d+\]\.ip)$/;
const NAME_FIELD = /^(domain|clusterFqdn|node\.name|join\[\d+\]\.name|records\[\d+\]\.name)$/;

/**
 * What a pattern's refusal means, in the operator's words: `10.0.0.300` is not an IP address, and
 * a capital letter in a DNS name is named. Undefined when the plain schema message says it best.
 */
export function plainerProblem(field: string, value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  if (IP_FIELD.test(field) && !net.isIP(value)) return `"${value}" is not an IP address (an IPv4 address such as 10.0.0.11; ferry is IPv4-only today)`;
  if (NAME_FIELD.test(field)) {
    const cap = /[A-Z]/.exec(value);
    // Only when the capital is the one fault: "Bad_Name" has another.
    const pattern = new RegExp((/name$/.test(field) && !field.startsWith('records') ? SITE_SCHEMAS.nodeName : SITE_SCHEMAS.domain).pattern);
    if (cap && pattern.test(value.toLowerCase())) return `"${value}" has a capital letter (${cap[0]}): DNS names here are lowercase, write "${value.toLowerCase()}"`;
  }
  return undefined;
}

/** The value at a path of the answers. */
const valueAt = (a: unknown, p: (string | number)[]) => p.reduce<unknown>((v, k) => (v && typeof v === 'object' ? (v as Record<string | number, unknown>)[k] : undefined), a);

/** What the schema finds wrong, each at its path. */
const schemaAnswerProblems = (a: unknown): AnswerProblem[] =>
  schemaProblems(validate(a), answersSchema, { valueForPattern: true }).map((p) => ({ path: p.path, msg: plainerProblem(formatPath(p.path), valueAt(a, p.path)) ?? `${p.message}${p.expected ? ` (expected: ${p.expected})` : ''}` }));

/** Every problem with a set of answers, schema and rules across fields alike (the prompts' check; no file positions). */
export function answerProblems(a: unknown, resolved: Map<number, string> = new Map()): AnswerProblem[] {
  return [...schemaAnswerProblems(a), ...crossFieldProblems((a ?? {}) as Partial<InstallAnswers>, resolved)];
}

/** Join hosts given by name: each resolved to its one IPv4 address, or why it cannot be. */
export interface ResolvedHosts {
  ips: Map<number, string>;
  problems: AnswerProblem[];
}

/**
 * Resolves the join hosts that are names and have no ip: the cluster state, the DNS records and
 * the LB backends need an address, and a name there breaks every later install.
 */
export async function resolveJoinHosts(join: unknown): Promise<ResolvedHosts> {
  const out: ResolvedHosts = { ips: new Map(), problems: [] };
  if (!Array.isArray(join)) return out;
  const hostName = new RegExp(answersSchema.properties.join.items.properties.host.pattern);
  await Promise.all(
    (join as Partial<JoinHost>[]).map(async (j, i) => {
      const host = j?.host;
      if (typeof host !== 'string' || net.isIP(host) || !hostName.test(host) || j.ip !== undefined) return;
      const problem = (msg: string) => out.problems.push({ path: ['join', i, 'host'], msg });
      let found: string[];
      try {
        found = [...new Set((await dns.lookup(host, { all: true, family: 4 })).map((x) => x.address))];
      } catch (e) {
        return problem(`"${host}" does not resolve to an IPv4 address (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): give its IP as host, or add ip:`);
      }
      if (found.length !== 1) return problem(`"${host}" resolves to ${found.length ? `several IPv4 addresses (${found.join(', ')})` : 'no IPv4 address'}: add ip: with the node's address on the cluster network`);
      out.ips.set(i, found[0]!);
    }),
  );
  return out;
}

/** A file's schema line `node.ip "10.0.0.300" is not valid (expected: …)` in the operator's words; a missing required field as missing. */
function plainerLine(text: string, v: unknown): string {
  const m = /^(\S+) "(.*)" is not valid/.exec(text);
  const plain = m ? plainerProblem(m[1]!, m[2]) : undefined;
  if (plain) return `${m![1]} ${plain}`;
  const missing = /^\(top level\) is missing required field "([^"]+)"$/.exec(text) ?? /^(\S+) is missing required field "([^"]+)"$/.exec(text);
  if (missing) {
    const field = missing.length === 3 ? `${missing[1]}.${missing[2]}` : missing[1]!;
    return `${field} is missing: it is required${v && typeof v === 'object' ? '' : ' (the file holds no answers)'}`;
  }
  return text;
}

/** In file order (file:line:col), as an operator reads them. */
function inFileOrder(lines: { at?: string; text: string }[]): string[] {
  const key = (at?: string) => (/:(\d+):(\d+)$/.exec(at ?? '') ?? []).slice(1).map(Number);
  return [...lines].sort((x, y) => (key(x.at)[0] ?? 0) - (key(y.at)[0] ?? 0) || (key(x.at)[1] ?? 0) - (key(y.at)[1] ?? 0)).map((l) => (l.at ? `${l.at}: ${l.text}` : l.text));
}

/**
 * Checks answers as a whole against the schema and the rules across fields, join host names
 * resolved: the answers with each resolved address as its host's ip, or a SpecError listing every
 * problem under `heading`. With the YAML they came from, each problem has its file:line:column.
 */
export async function checkAnswers(v: unknown, heading: string, y?: LoadedYaml): Promise<InstallAnswers> {
  const a = (v ?? {}) as Partial<InstallAnswers>;
  const resolved = await resolveJoinHosts(a.join);
  const schema = y ? describeSchemaProblems(y, validate(v), answersSchema, { valueForPattern: true }).map((l) => ({ ...l, text: plainerLine(l.text, v) })) : schemaAnswerProblems(v).map((p) => ({ at: undefined as string | undefined, text: `${formatPath(p.path)} ${p.msg}` }));
  const rules = [...crossFieldProblems(a, resolved.ips), ...resolved.problems].map((p) => ({ at: y ? positionOf(y, p.path) : undefined, text: `${formatPath(p.path)} ${p.msg}` }));
  if (schema.length || rules.length) {
    throw new SpecError(Codes.specInvalid, `${heading}:\n  ${inFileOrder([...schema, ...rules]).join('\n  ')}`, { hint: 'Fix each field above (`ferry answers schema` prints every field); run ferry install on a terminal to be asked instead.' });
  }
  const join = a.join?.map((j, i) => (resolved.ips.has(i) ? { ...j, ip: resolved.ips.get(i)! } : j));
  return { podCidr: DEFAULTS.podCidr, serviceCidr: DEFAULTS.serviceCidr, ...a, ...(join ? { join } : {}) } as InstallAnswers;
}

export async function loadAnswers(file: string): Promise<InstallAnswers> {
  let y: LoadedYaml;
  try {
    y = await loadYaml(file, 'answers');
  } catch (e) {
    throw new SpecError(Codes.specRead, (e as Error).message, { hint: 'Pass --answers FILE: an InstallAnswers YAML, such as the one ferry install saves after its questions.', cause: e });
  }
  return checkAnswers(y.value, `${file} is not a valid answers file`, y);
}

export async function saveAnswers(file: string, a: InstallAnswers): Promise<void> {
  await writeFileAtomic(file, `# Written by ferry install: re-run with --answers ${file}\n${stringify(a)}`, 0o600);
}

/**
 * Answers given at the prompts of an install that was declined or cancelled: offered as defaults the
 * next time. Any subset of the fields, unchecked (the questions check each again). Answers hold no
 * secrets; a draft holds only the fields below.
 */
export interface DraftAnswers {
  domain?: string;
  clusterFqdn?: string;
  node?: { name?: string; ip?: string };
  podCidr?: string;
  serviceCidr?: string;
  cni?: string;
  records?: { name: string; ip: string }[];
  upstreamDns?: string[];
}

export async function saveDraft(file: string, d: DraftAnswers): Promise<void> {
  await writeFileAtomic(file, `# Written by ferry install when its questions were left unfinished: not an answers file.\n# The next ferry install offers these as defaults; it removes this file once it installs.\n${stringify(d)}`, 0o600);
}

/** A draft's fields that have the right types; undefined when there is none or it does not parse. */
export function parseDraft(text: string | undefined): DraftAnswers | undefined {
  if (!text) return undefined;
  let v: unknown;
  try {
    v = parse(text);
  } catch {
    return undefined;
  }
  if (!v || typeof v !== 'object') return undefined;
  const o = v as Record<string, unknown>;
  const str = (x: unknown) => (typeof x === 'string' ? x : undefined);
  const node = o.node && typeof o.node === 'object' ? (o.node as Record<string, unknown>) : {};
  const d: DraftAnswers = {
    domain: str(o.domain),
    clusterFqdn: str(o.clusterFqdn),
    node: { name: str(node.name), ip: str(node.ip) },
    podCidr: str(o.podCidr),
    serviceCidr: str(o.serviceCidr),
    cni: str(o.cni),
    records: Array.isArray(o.records) ? o.records.filter((r): r is { name: string; ip: string } => !!r && typeof r === 'object' && typeof r.name === 'string' && typeof r.ip === 'string') : undefined,
    upstreamDns: Array.isArray(o.upstreamDns) ? o.upstreamDns.filter((x): x is string => typeof x === 'string') : undefined,
  };
  return d;
}

/** This machine's IPv4 addresses; loopback too when asked (preflight's node-IP check). */
export function detectAddresses(o: { loopback?: boolean } = {}): string[] {
  const out: string[] = [];
  for (const list of Object.values(os.networkInterfaces())) {
    for (const i of list ?? []) if ((o.loopback || !i.internal) && i.family === 'IPv4') out.push(i.address);
  }
  return out;
}
