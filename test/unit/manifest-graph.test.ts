import { describe, expect, it } from 'vitest';
import { walkManifests } from '../../src/oci/graph.js';
import type { Descriptor } from '../../src/oci/media.js';

/** A graph by name: each node lists the names of its children. */
const d = (name: string): Descriptor => ({ mediaType: '', digest: name, size: 0 });
const walkOf = (graph: Record<string, string[]>, extra: { missing?: string[] } = {}) => {
  const reads: string[] = [];
  return {
    reads,
    walk: {
      read: async (desc: Descriptor) => {
        reads.push(desc.digest);
        return extra.missing?.includes(desc.digest) ? undefined : desc.digest;
      },
      next: (n: string) => (graph[n] ?? []).map(d),
    },
  };
};

describe('the manifest graph walk', () => {
  it('reads each digest once however many parents name it, and returns children before parents', async () => {
    const graph = { top: ['a', 'b', 'nested'], nested: ['b', 'c'], a: [], b: [], c: [] };
    const { reads, walk } = walkOf(graph);
    const out = await walkManifests([d('top'), d('a')], walk);
    expect(reads.sort()).toEqual(['a', 'b', 'c', 'nested', 'top']);
    expect(new Set(out).size).toBe(out.length);
    for (const [parent, children] of Object.entries(graph)) for (const c of children) expect(out.indexOf(c)).toBeLessThan(out.indexOf(parent));
    expect(out[out.length - 1]).toBe('top');
  });

  it('reads breadth-first in order by default', async () => {
    const { reads, walk } = walkOf({ top: ['i1', 'i2'], i1: ['m1'], i2: ['m2'] });
    await walkManifests([d('top')], walk);
    expect(reads).toEqual(['top', 'i1', 'i2', 'm1', 'm2']);
  });

  it('leaves out what is absent, and stops reading at maxNodes', async () => {
    const absent = walkOf({ top: ['gone', 'here'] }, { missing: ['gone'] });
    expect(await walkManifests([d('top')], absent.walk)).toEqual(['here', 'top']);
    const wide = walkOf({ top: Array.from({ length: 50 }, (_, i) => `m${i}`) });
    expect(await walkManifests([d('top')], { ...wide.walk, maxNodes: 10 })).toHaveLength(10);
    expect(wide.reads).toHaveLength(10);
  });

  it('reads at most `concurrency` at once', async () => {
    let active = 0;
    let peak = 0;
    const children = Array.from({ length: 20 }, (_, i) => d(`m${i}`));
    await walkManifests([d('top')], {
      read: async (desc) => {
        peak = Math.max(peak, ++active);
        await new Promise((r) => setTimeout(r, 5));
        active--;
        return desc.digest;
      },
      next: (n) => (n === 'top' ? children : []),
      concurrency: 4,
    });
    expect(peak).toBe(4);
  });

  it('on the first failure aborts the others, waits for them, and throws that failure', async () => {
    const ac = new AbortController();
    const settled: string[] = [];
    const children = ['fails', 'slow1', 'slow2'].map(d);
    const walk = walkManifests([d('top')], {
      read: async (desc) => {
        if (desc.digest === 'fails') throw new Error('boom');
        if (desc.digest.startsWith('slow')) {
          await new Promise((r) => setTimeout(r, 20));
          settled.push(desc.digest);
        }
        return desc.digest;
      },
      next: (n) => (n === 'top' ? children : []),
      concurrency: Infinity,
      abort: ac,
    });
    await expect(walk).rejects.toThrow('boom');
    expect(ac.signal.aborted).toBe(true);
    expect(settled.sort()).toEqual(['slow1', 'slow2']);
  });
});
