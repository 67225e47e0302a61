import { promises as fs } from 'node:fs';
import { isMap, isNode, isScalar, LineCounter, parseDocument, type Document } from 'yaml';
import { Codes, SpecError } from '../errors.js';

export interface LoadedYaml {
  file: string;
  doc: Document;
  lines: LineCounter;
  value: unknown;
}

/** Reads YAML keeping positions, so later checks can name file:line:column. */
export async function loadYaml(file: string, what: string): Promise<LoadedYaml> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    throw new SpecError(Codes.specRead, `cannot read ${what} ${file}: ${(e as Error).message}`, {
      hint: `Check the path. ${what === 'spec' ? 'Specs live in bundle-spec/, for example bundle-spec/kubernetes.yaml.' : ''}`.trim(),
      cause: e,
    });
  }
  return parseYamlText(text, file, what);
}

export function parseYamlText(text: string, file: string, what: string): LoadedYaml {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const err = doc.errors[0];
  if (err) {
    const pos = lines.linePos(err.pos[0]);
    throw new SpecError(what === 'lock' ? Codes.lockParse : Codes.specParse, `${file}:${pos.line}:${pos.col}: ${what} is not valid YAML: ${err.message.split('\n')[0]}`, {
      hint: 'Fix the YAML syntax at that position (indentation, quoting, duplicate keys).',
    });
  }
  return { file, doc, lines, value: doc.toJS() };
}

/** `file:line:col` of the node at a path (or the nearest parent that exists). */
export function positionOf(y: LoadedYaml, path: (string | number)[], at: 'value' | 'key' = 'value'): string {
  if (at === 'key' && path.length) {
    const parent = path.length === 1 ? y.doc.contents : y.doc.getIn(path.slice(0, -1), true);
    if (isMap(parent)) {
      const pair = parent.items.find((p) => isScalar(p.key) && p.key.value === path[path.length - 1]);
      if (pair && isNode(pair.key) && pair.key.range) {
        const p = y.lines.linePos(pair.key.range[0]);
        return `${y.file}:${p.line}:${p.col}`;
      }
    }
  }
  for (let n = path.length; n >= 0; n--) {
    const node = n === 0 ? y.doc.contents : y.doc.getIn(path.slice(0, n), true);
    if (isNode(node) && node.range) {
      const p = y.lines.linePos(node.range[0]);
      return `${y.file}:${p.line}:${p.col}`;
    }
  }
  return `${y.file}:1:1`;
}

/** `spec.images[1].ref` */
export function formatPath(path: (string | number)[]): string {
  return path.reduce<string>((acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc ? `${acc}.${p}` : p), '') || '(top level)';
}

/** Ajv's `/spec/images/1` to a path array. */
export function pointerToPath(ptr: string): (string | number)[] {
  if (!ptr) return [];
  return ptr
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}
