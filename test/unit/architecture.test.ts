import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/cli.js';

/** Every module of src/ and the src/ modules it imports (static, dynamic and type-only alike). */
function importGraph(): Map<string, string[]> {
  const src = path.join(ROOT, 'src');
  const files = (readdirSync(src, { recursive: true }) as string[]).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'));
  const g = new Map<string, string[]>();
  for (const f of files) {
    const text = readFileSync(path.join(src, f), 'utf8');
    const specs = [...text.matchAll(/(?:from|import\()\s*'(\.{1,2}\/[^']+)'/g)].map((m) => m[1]!);
    g.set(f, specs.map((s) => path.normalize(path.join(path.dirname(f), s)).replace(/\.js$/, '.ts')));
  }
  return g;
}

const room = (f: string) => (f.includes('/') ? f.split('/')[0]! : f.replace(/\.ts$/, ''));

/** Rooms in order from the inside out: a room may import only rooms before it (and itself). */
const LAYERS = [['errors'], ['util'], ['oci', 'sign', 'spec'], ['bundle'], ['site'], ['kube'], ['cluster'], ['install'], ['ops'], ['cli']];
const depth = (r: string) => LAYERS.findIndex((l) => l.includes(r));

describe('the layout of src/', () => {
  it('has no import cycles', () => {
    const g = importGraph();
    const cycles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const visit = (f: string, trail: string[]) => {
      if (state.get(f) === 'done') return;
      if (state.get(f) === 'open') {
        cycles.push([...trail.slice(trail.indexOf(f)), f].join(' → '));
        return;
      }
      state.set(f, 'open');
      for (const d of g.get(f) ?? []) visit(d, [...trail, f]);
      state.set(f, 'done');
    };
    for (const f of g.keys()) visit(f, []);
    expect(cycles).toEqual([]);
  });

  it('points every import inward: no room imports a room outside it', () => {
    const outward: string[] = [];
    for (const [f, deps] of importGraph()) {
      for (const d of deps) if (depth(room(d)) > depth(room(f))) outward.push(`${f} → ${d}`);
    }
    expect(LAYERS.flat().sort()).toEqual([...new Set([...importGraph().keys()].map(room))].sort());
    expect(outward).toEqual([]);
  });
});
