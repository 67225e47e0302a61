import { describe, expect, it } from 'vitest';
import { walkManifests } from '../../src/oci/graph.js';
import type { Descriptor } from '../../src/oci/media.js';

/** Issue 10 item 7: the walk's caps. A graph by name: each node lists the names of its children. */
const d = (name: string): Descriptor => ({ mediaType: '', digest: name, size: 0 });
function walk(graph: (n: string) => string[]) {
  const reads: string[] = [];
  return { reads, read: async (x: Descriptor) => (reads.push(x.digest), x.digest), next: (n: string) => graph(n).map(d) };
}

describe('the manifest graph walk caps depth and size', () => {
  it('refuses a chain deeper than maxDepth with what tooLarge returns, reading no further', async () => {
    const w = walk((n) => (Number(n) < 100 ? [String(Number(n) + 1)] : []));
    await expect(walkManifests([d('0')], { ...w, maxDepth: 8, tooLarge: (o) => new Error(`${o.limit} ${o.max} at ${o.digest}`) })).rejects.toThrow('depth 8 at 9');
    expect(w.reads).toHaveLength(9);
  });

  it('refuses more than maxNodes distinct manifests, while shared children never count twice', async () => {
    const wide = walk((n) => (n === 'top' ? Array.from({ length: 100 }, (_, i) => `m${i}`) : []));
    await expect(walkManifests([d('top')], { ...wide, maxNodes: 50, tooLarge: (o) => new Error(o.limit) })).rejects.toThrow('nodes');
    expect(wide.reads.length).toBeLessThanOrEqual(50);
    // 30 names of one child at every level of 20: 21 reads, well under the cap.
    const shared = walk((n) => (Number(n) < 20 ? Array(30).fill(String(Number(n) + 1)) : []));
    const out = await walkManifests([d('0')], { ...shared, maxNodes: 50, maxDepth: 25, concurrency: 8, tooLarge: (o) => new Error(o.limit) });
    expect(out).toHaveLength(21);
    expect(shared.reads).toHaveLength(21);
  });

  it('without tooLarge, stops at a cap and returns what it read (what the site serves)', async () => {
    const w = walk((n) => (Number(n) < 100 ? [String(Number(n) + 1)] : []));
    expect(await walkManifests([d('0')], { ...w, maxDepth: 3 })).toEqual(['3', '2', '1', '0']);
  });
});
