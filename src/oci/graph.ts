import { Codes, StoreError } from '../errors.js';
import type { Layout } from './layout.js';
import { parseManifest, type Descriptor, type ParsedManifest } from './media.js';

/*
 * The one walk over a manifest graph (index → manifests → config and layers). Pulling, pushing,
 * bundling and serving differ in where a manifest's bytes come from and what they keep of it, so
 * those are the caller's; the order, the each-digest-once rule, the parallelism and the guards
 * are here.
 */

/** What names a manifest: a descriptor, or as little of one as a pinned digest. */
export type ManifestRef = Pick<Descriptor, 'digest' | 'mediaType'> & { size?: number };

export interface GraphWalk<N, D extends ManifestRef = Descriptor> {
  /**
   * Reads the manifest `desc` names (a root, or an entry of `parent`). Undefined leaves it out, as
   * a store narrowed to some platforms leaves out the others. Throwing stops the walk.
   */
  read(desc: D, parent: N | undefined): Promise<N | undefined>;
  /** The entries of a node to walk on to: an index's manifests, or the chosen ones. */
  next(node: N): D[];
  /** Manifests read at once; the default 1 reads breadth-first in order. */
  concurrency?: number;
  /** Reads at most this many manifests: a guard against a hostile graph. */
  maxNodes?: number;
  /** Reads nothing deeper than this below the roots (a root is depth 0). */
  maxDepth?: number;
  /**
   * What going past maxNodes or maxDepth throws. Without it the walk stops short and returns what
   * it read (the site serves what its store holds); pulls refuse the graph instead.
   */
  tooLarge?: (over: GraphOver) => unknown;
  /** Aborted on the first failure, so reads still running can stop; the walk waits for them. */
  abort?: AbortController;
}

/** Which cap a graph went past, and at which manifest. */
export interface GraphOver {
  limit: 'nodes' | 'depth';
  max: number;
  digest: string;
}

/** The caps for every graph ferry pulls or packs: real images have a few dozen manifests, nested at most twice. */
export const GRAPH_LIMITS = { maxNodes: 512, maxDepth: 8 } as const;

/**
 * Walks from `roots`, reading each digest once however many parents name it, and returns the
 * nodes read, children before parents (the order a registry accepts them in).
 */
export async function walkManifests<N, D extends ManifestRef = Descriptor>(roots: readonly D[], w: GraphWalk<N, D>): Promise<N[]> {
  const limit = Math.max(1, w.concurrency ?? 1);
  const seen = new Set<string>();
  const read = new Map<string, { node: N; next: string[] }>();
  const queue = roots.map((desc) => ({ desc, parent: undefined as N | undefined, depth: 0 }));
  let failure: { e: unknown } | undefined;
  const fail = (e: unknown) => {
    if (failure) return;
    failure = { e };
    w.abort?.abort(e);
  };
  /** Past a cap: refuse the graph, or stop reading and keep what was read. */
  const over = (o: GraphOver) => {
    if (w.tooLarge) fail(w.tooLarge(o));
    else queue.length = 0;
  };
  await new Promise<void>((done) => {
    let active = 0;
    const pump = () => {
      while (!failure && active < limit && queue.length) {
        const { desc, parent, depth } = queue.shift()!;
        if (seen.has(desc.digest)) continue;
        if (w.maxDepth !== undefined && depth > w.maxDepth) {
          over({ limit: 'depth', max: w.maxDepth, digest: desc.digest });
          continue;
        }
        if (w.maxNodes !== undefined && seen.size >= w.maxNodes) {
          over({ limit: 'nodes', max: w.maxNodes, digest: desc.digest });
          continue;
        }
        seen.add(desc.digest);
        active++;
        Promise.resolve()
          .then(() => w.read(desc, parent))
          .then((node) => {
            if (node === undefined || failure) return;
            const next = w.next(node);
            read.set(desc.digest, { node, next: next.map((d) => d.digest) });
            for (const d of next) if (!seen.has(d.digest)) queue.push({ desc: d, parent: node, depth: depth + 1 });
          })
          .catch(fail)
          .finally(() => {
            active--;
            pump();
          });
      }
      if (active === 0) done();
    };
    pump();
  });
  if (failure) throw (failure as { e: unknown }).e;
  return childrenFirst(roots, read);
}

/** Depth-first post-order over what was read, without recursion (a graph may be deep). */
function childrenFirst<N>(roots: readonly ManifestRef[], read: Map<string, { node: N; next: string[] }>): N[] {
  const out: N[] = [];
  const entered = new Set<string>();
  const stack = roots.map((d) => ({ digest: d.digest, exit: false })).reverse();
  while (stack.length) {
    const { digest, exit } = stack.pop()!;
    const r = read.get(digest);
    if (!r) continue;
    if (exit) {
      out.push(r.node);
      continue;
    }
    if (entered.has(digest)) continue;
    entered.add(digest);
    stack.push({ digest, exit: true });
    for (let i = r.next.length - 1; i >= 0; i--) stack.push({ digest: r.next[i]!, exit: false });
  }
  return out;
}

export interface StoreNode {
  /** The descriptor it was reached by. */
  desc: Descriptor;
  bytes: Buffer;
  parsed: ParsedManifest;
}

/**
 * Reads an image's manifests from a store, children before parents. What the store lacks is left
 * out and handed to `onMissing`; `follow` picks which entries of an index to walk on to.
 */
export function walkStore(
  store: Layout,
  roots: readonly Descriptor[],
  o: { follow?: (child: Descriptor, parent: StoreNode) => boolean; onMissing?: (d: Descriptor) => void } = {},
): Promise<StoreNode[]> {
  return walkManifests<StoreNode>(roots, {
    ...GRAPH_LIMITS,
    tooLarge: (x) => {
      const { message, hint } = graphTooLarge(x, `the image ${roots[0]?.digest ?? ''} in ${store.dir}`);
      return new StoreError(Codes.storeInvalid, message, { hint });
    },
    read: async (desc) => {
      if (!(await store.hasBlob(desc.digest, desc.size))) {
        o.onMissing?.(desc);
        return undefined;
      }
      const bytes = await store.readBlob(desc.digest);
      return { desc, bytes, parsed: parseManifest(bytes, desc.mediaType, desc.digest) };
    },
    next: (n) => (n.parsed.kind === 'index' ? n.parsed.index.manifests.filter((c) => !o.follow || o.follow(c, n)) : []),
  });
}

/** What to say of a graph past a cap: the message after `what`, and the hint. */
export function graphTooLarge(o: GraphOver, what: string): { message: string; hint: string } {
  const past = o.limit === 'depth' ? `nests indexes more than ${o.max} deep (at ${o.digest})` : `names more than ${o.max} distinct manifests (the next is ${o.digest})`;
  return {
    message: `${what} ${past}; ferry refuses a manifest graph that large`,
    hint: 'Real images hold a few dozen manifests, nested at most twice: this one is broken or hostile. Check the image with its publisher.',
  };
}
