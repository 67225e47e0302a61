import type { ErrorObject } from 'ajv';
import { formatPath, pointerToPath, positionOf, type LoadedYaml } from './yamlpos.js';

/** One problem Ajv found: where, whether the key or its value is wrong, and what the schema expects. */
export interface SchemaProblem {
  path: (string | number)[];
  /** `spec.images[1].ref`, as formatPath writes it. */
  where: string;
  at: 'key' | 'value';
  /** Reads after `where`: "is not a known field", "must match pattern …". */
  message: string;
  /** The failing schema's description, when it has one. */
  expected?: string;
}

/** Edit distance, case-insensitive, a swap of neighbours counting one (sevrices → services). */
function distance(a: string, b: string): number {
  const s = a.toLowerCase();
  const t = b.toLowerCase();
  const d = Array.from({ length: s.length + 1 }, (_, i) => Array.from({ length: t.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= s.length; i++) {
    for (let j = 1; j <= t.length; j++) {
      const cost = s[i - 1] === t[j - 1] ? 0 : 1;
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && s[i - 1] === t[j - 2] && s[i - 2] === t[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[s.length]![t.length]!;
}

/** The known key closest to `key`, when it is close enough to be a slip (a third of its letters, at least one). */
export function closestKey(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const dd = distance(key, k);
    if (dd < bestD) [best, bestD] = [k, dd];
  }
  return best !== undefined && bestD <= Math.max(1, Math.floor(key.length / 3)) ? best : undefined;
}

type Node = { properties?: Record<string, Node>; items?: Node };

/** Where else in a schema a key is known, as paths (`identityFile` → ssh.identityFile, `rol` → join[].role). */
function elsewhere(key: string, schema: Node, at = ''): string[] {
  if (schema.items) return elsewhere(key, schema.items, `${at}[]`);
  return Object.entries(schema.properties ?? {}).flatMap(([k, v]) => [...(at && closestKey(key, [k]) ? [`${at}.${k}`] : []), ...elsewhere(key, v, at ? `${at}.${k}` : k)]);
}

/** Why a key is not known, with a did-you-mean: the nearest key here, else where it belongs, else the keys known here. */
function unknownKeyMessage(key: string, here: Node | undefined, root: Node | undefined): string {
  const known = Object.keys(here?.properties ?? {});
  const near = closestKey(key, known);
  if (near) return `is not a known field; did you mean ${near}?`;
  const other = root ? elsewhere(key, root) : [];
  if (other.length) return `is not a known field; did you mean ${other.join(' or ')}?`;
  return known.length ? `is not a known field (known: ${known.join(', ')})` : 'is not a known field';
}

export interface SchemaProblemOptions {
  /** A value failing a described pattern is named, not the pattern ("fd00::1" is not valid (expected: …)). */
  valueForPattern?: boolean;
}

/**
 * Turns Ajv's errors (allErrors, verbose) into one problem per place. A oneOf or anyOf reports
 * every branch; the branch errors that went deepest say more than the summary, so the summary
 * goes, and so does "must be string" where the object branch failed deeper. With the whole
 * schema as `root`, an unknown key's did-you-mean also names where else the key is known.
 */
export function schemaProblems(errors: ErrorObject[], root?: object, o: SchemaProblemOptions = {}): SchemaProblem[] {
  const out = new Map<string, SchemaProblem>();
  const sorted = [...errors].sort((a, b) => b.instancePath.length - a.instancePath.length);
  for (const e of sorted) {
    if (e.keyword === 'oneOf' || e.keyword === 'anyOf') continue;
    let path = pointerToPath(e.instancePath);
    let message = e.message ?? 'is invalid';
    let at: SchemaProblem['at'] = 'value';
    if (e.keyword === 'additionalProperties') {
      const key = (e.params as { additionalProperty: string }).additionalProperty;
      path = [...path, key];
      message = unknownKeyMessage(key, e.parentSchema as Node | undefined, root as Node | undefined);
      at = 'key';
    } else if (e.keyword === 'required') {
      message = `is missing required field "${(e.params as { missingProperty: string }).missingProperty}"`;
    } else if (e.keyword === 'const') {
      message = `must be ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}`;
    } else if (e.keyword === 'pattern' && o.valueForPattern && (e.parentSchema as { description?: string } | undefined)?.description) {
      message = `${JSON.stringify(e.data)} is not valid`;
    } else if (e.keyword === 'enum') {
      message = `must be ${(e.params as { allowedValues: unknown[] }).allowedValues.map(String).join(' or ')}`;
    }
    const where = formatPath(path);
    if (e.keyword === 'type' && [...out.keys()].some((k) => k.startsWith(`${where}.`) || k.startsWith(`${where}[`))) continue;
    if (out.has(where)) continue;
    // An unknown key's or a missing field's schema is the parent's: its description would describe the parent.
    const expected = e.keyword === 'additionalProperties' || e.keyword === 'required' ? undefined : (e.parentSchema as { description?: string } | undefined)?.description;
    out.set(where, { path, where, at, message, ...(expected ? { expected } : {}) });
  }
  return [...out.values()];
}

/** One line per problem: file:line:col, where, what is wrong and what the schema expects. */
export function describeSchemaProblems(y: LoadedYaml, errors: ErrorObject[], root?: object, o: SchemaProblemOptions = {}): { at: string; text: string }[] {
  return schemaProblems(errors, root, o).map((p) => ({ at: positionOf(y, p.path, p.at), text: `${p.where} ${p.message}${p.expected ? ` (expected: ${p.expected})` : ''}` }));
}
