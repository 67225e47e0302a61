import { Codes, IntegrityError } from '../errors.js';
import { STATE_API_VERSION, STATE_KIND, type SiteState } from './state.js';

/*
 * The state document's shape, checked whenever it is read (ConfigMap or mirror): a damaged or
 * foreign document stops ferry with STATE_INVALID instead of being acted on, or overwritten.
 */

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isStr = (v: unknown): v is string => typeof v === 'string' && v.length > 0;

/** What is wrong with a document, as `path: problem` lines (empty: it is a SiteState). */
export function stateProblems(v: unknown): string[] {
  const out: string[] = [];
  if (!isObj(v)) return ['the document is not a JSON object'];
  if (v.apiVersion !== STATE_API_VERSION) out.push(`apiVersion: expected ${STATE_API_VERSION}, found ${JSON.stringify(v.apiVersion)}`);
  if (v.kind !== STATE_KIND) out.push(`kind: expected ${STATE_KIND}, found ${JSON.stringify(v.kind)}`);
  const a = v.answers;
  if (!isObj(a)) out.push('answers: missing or not an object');
  else for (const k of ['domain', 'clusterFqdn', 'podCidr', 'serviceCidr']) if (!isStr(a[k])) out.push(`answers.${k}: missing or not a string`);
  if (!Array.isArray(v.nodes)) out.push('nodes: missing or not a list');
  else {
    v.nodes.forEach((n, i) => {
      if (!isObj(n)) return out.push(`nodes[${i}]: not an object`);
      for (const k of ['name', 'ip', 'platform', 'kubernetesVersion', 'bundle', 'joinedAt']) if (!isStr(n[k])) out.push(`nodes[${i}].${k}: missing or not a string`);
      if (n.role !== 'server' && n.role !== 'agent') out.push(`nodes[${i}].role: expected server or agent, found ${JSON.stringify(n.role)}`);
    });
    const names = (v.nodes as { name?: unknown }[]).map((n) => n?.name);
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup !== undefined) out.push(`nodes: ${JSON.stringify(dup)} is listed twice`);
  }
  if (!Array.isArray(v.bundles)) out.push('bundles: missing or not a list');
  else {
    v.bundles.forEach((b, i) => {
      if (!isObj(b)) return out.push(`bundles[${i}]: not an object`);
      for (const k of ['id', 'name', 'version', 'fingerprint', 'checksums', 'addedAt']) if (!isStr(b[k])) out.push(`bundles[${i}].${k}: missing or not a string`);
    });
  }
  if (typeof v.current !== 'string') out.push('current: missing or not a string');
  if (v.operation !== undefined) {
    const o = v.operation;
    if (!isObj(o)) out.push('operation: not an object');
    else {
      for (const k of ['id', 'kind', 'holder', 'startedAt']) if (!isStr(o[k])) out.push(`operation.${k}: missing or not a string`);
      if (!isObj(o.args)) out.push('operation.args: missing or not an object');
      if (!Array.isArray(o.journal) || !o.journal.every((e) => isObj(e) && isStr(e.key) && isStr(e.at))) out.push('operation.journal: missing or not a list of {key, at}');
    }
  }
  return out;
}

/** Parses and checks a state document read from `where`; STATE_INVALID names what is wrong. */
export function parseState(text: string, where: string): SiteState {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new IntegrityError(Codes.stateInvalid, `the site state in ${where} is not JSON: ${(e as Error).message}`, { hint: stateHint(where), cause: e });
  }
  return checkState(v, where);
}

export function checkState(v: unknown, where: string): SiteState {
  const problems = stateProblems(v);
  if (problems.length) throw new IntegrityError(Codes.stateInvalid, `the site state in ${where} is damaged:\n  ${problems.slice(0, 20).join('\n  ')}`, { hint: stateHint(where) });
  return v as SiteState;
}

const stateHint = (where: string) =>
  `ferry will not act on it or overwrite it. Compare it with a server's mirror (ferry state show --json on another server), and repair it there (${where}).`;

/** The document as stored: stable key order as written, one trailing newline. */
export const renderState = (s: SiteState) => `${JSON.stringify(s, null, 2)}\n`;
