import type { ErrorObject } from 'ajv';
import { formatPath, pointerToPath } from './yamlpos.js';

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

/**
 * Turns Ajv's errors (allErrors, verbose) into one problem per place. A oneOf or anyOf reports
 * every branch; the branch errors that went deepest say more than the summary, so the summary
 * goes, and so does "must be string" where the object branch failed deeper.
 */
export function schemaProblems(errors: ErrorObject[]): SchemaProblem[] {
  const out = new Map<string, SchemaProblem>();
  const sorted = [...errors].sort((a, b) => b.instancePath.length - a.instancePath.length);
  for (const e of sorted) {
    if (e.keyword === 'oneOf' || e.keyword === 'anyOf') continue;
    let path = pointerToPath(e.instancePath);
    let message = e.message ?? 'is invalid';
    let at: SchemaProblem['at'] = 'value';
    if (e.keyword === 'additionalProperties') {
      path = [...path, (e.params as { additionalProperty: string }).additionalProperty];
      message = 'is not a known field';
      at = 'key';
    } else if (e.keyword === 'required') {
      message = `is missing required field "${(e.params as { missingProperty: string }).missingProperty}"`;
    } else if (e.keyword === 'const') {
      message = `must be ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}`;
    }
    const where = formatPath(path);
    if (e.keyword === 'type' && [...out.keys()].some((k) => k.startsWith(`${where}.`) || k.startsWith(`${where}[`))) continue;
    if (out.has(where)) continue;
    const expected = (e.parentSchema as { description?: string } | undefined)?.description;
    out.set(where, { path, where, at, message, ...(expected ? { expected } : {}) });
  }
  return [...out.values()];
}
