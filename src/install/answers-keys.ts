import { PATCH_TARGETS } from './patches.js';

/*
 * Unknown keys in an answers file. A misspelt key (podCIDR) would otherwise be ignored and its
 * default used, which the operator finds out after kubeadm init. The shape below is the
 * InstallAnswers interface in answers.ts; test/unit/answers-keys.test.ts keeps the two equal.
 */

/** A mapping's known keys, each with the shape of its value; `leaf` is a value ferry checks elsewhere. */
type Shape = 'leaf' | { [key: string]: Shape } | [Shape];

const hostFields = { host: 'leaf', name: 'leaf', role: 'leaf', ip: 'leaf' } as const;

export const ANSWERS_SHAPE = {
  apiVersion: 'leaf',
  kind: 'leaf',
  domain: 'leaf',
  clusterFqdn: 'leaf',
  node: { name: 'leaf', ip: 'leaf' },
  podCidr: 'leaf',
  serviceCidr: 'leaf',
  cni: 'leaf',
  records: [{ name: 'leaf', ip: 'leaf' }],
  upstreamDns: 'leaf',
  ssh: { user: 'leaf', identityFile: 'leaf', knownHosts: 'leaf', port: 'leaf' },
  join: [hostFields],
  cgroupV1: 'leaf',
  ignoreKubeadmPreflight: 'leaf',
  // Each patch is kubeadm's own document, checked by kubeadm: only the targets are ferry's.
  patches: Object.fromEntries(PATCH_TARGETS.map((t) => [t, 'leaf'])) as Record<(typeof PATCH_TARGETS)[number], 'leaf'>,
} as const satisfies Record<string, Shape>;

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

/** Where else in the shape a key name is known, as dotted paths (`identityFile` → ssh.identityFile). */
function elsewhere(key: string, shape: Shape, at: string[] = []): string[] {
  if (shape === 'leaf') return [];
  if (Array.isArray(shape)) return elsewhere(key, shape[0], [...at, '[]']);
  return Object.entries(shape).flatMap(([k, v]) => [...(at.length && closestKey(key, [k]) ? [[...at, k].join('.').replaceAll('.[]', '[]')] : []), ...elsewhere(key, v, [...at, k])]);
}

const isMapping = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

/**
 * Every key of an answers file that ferry does not know, with a did-you-mean. Paths are those of
 * answerProblems (so `positionOf(y, path, 'key')` gives file:line:column). Values of the wrong
 * type are left to answerProblems.
 */
export function unknownAnswerKeys(value: unknown): { path: (string | number)[]; msg: string }[] {
  const out: { path: (string | number)[]; msg: string }[] = [];
  const walk = (v: unknown, shape: Shape, path: (string | number)[]) => {
    if (shape === 'leaf') return;
    if (Array.isArray(shape)) {
      if (Array.isArray(v)) v.forEach((item, i) => walk(item, shape[0], [...path, i]));
      return;
    }
    if (!isMapping(v)) return;
    const known = Object.keys(shape);
    for (const [k, child] of Object.entries(v)) {
      const s = shape[k];
      if (s !== undefined) {
        walk(child, s, [...path, k]);
        continue;
      }
      const near = closestKey(k, known);
      const other = near ? [] : elsewhere(k, ANSWERS_SHAPE);
      const where = path.length ? `in ${path.filter((p) => typeof p === 'string').join('.')}` : 'at the top level';
      out.push({
        path: [...path, k],
        msg: near
          ? `is not a known key ${where}; did you mean ${near}?`
          : other.length
            ? `is not a known key ${where}; did you mean ${other.join(' or ')}?`
            : `is not a known key ${where} (known: ${known.join(', ')})`,
      });
    }
  };
  walk(value, ANSWERS_SHAPE, []);
  return out;
}
