import { limiter } from '../util/limit.js';

/*
 * A rollout over nodes: which nodes run at once, and what a failure does to the rest. Pure: the
 * task is given, so upgrade, reset and certificate renewal share one ordering rule with join.
 */

/** all: in parallel (bounded); serial: one at a time; servers-first: servers one at a time, then agents in parallel; batches:N: N at a time, batch after batch. */
export type RolloutOrder = 'all' | 'serial' | 'servers-first' | `batches:${number}`;
/** stop: no node starts after a failure; continue: every node runs. */
export type FailurePolicy = 'stop' | 'continue';

export interface RolloutNode {
  name: string;
  role: 'server' | 'agent';
}

export type RolloutResult<N, R> =
  | { node: N; status: 'ok'; value: R }
  | { node: N; status: 'failed'; error: unknown }
  /** Not started: an earlier node failed under the `stop` policy. */
  | { node: N; status: 'skipped' };

export function parseOrder(s: string): RolloutOrder {
  if (s === 'all' || s === 'serial' || s === 'servers-first') return s;
  const m = /^batches:([1-9]\d*)$/.exec(s);
  if (m) return `batches:${Number(m[1])}`;
  throw new Error(`unknown rollout order "${s}": all, serial, servers-first or batches:N`);
}

/** The waves a rollout runs: each wave's nodes run at most `width` at once, a wave starts when the one before it ended. */
export function waves<N extends RolloutNode>(nodes: N[], order: RolloutOrder, parallel: number): { nodes: N[]; width: number }[] {
  if (!nodes.length) return [];
  if (order === 'all') return [{ nodes, width: parallel }];
  if (order === 'serial') return [{ nodes, width: 1 }];
  if (order === 'servers-first') {
    const servers = nodes.filter((n) => n.role === 'server');
    const agents = nodes.filter((n) => n.role !== 'server');
    return [...(servers.length ? [{ nodes: servers, width: 1 }] : []), ...(agents.length ? [{ nodes: agents, width: parallel }] : [])];
  }
  const size = Number(order.slice('batches:'.length));
  const out: { nodes: N[]; width: number }[] = [];
  for (let i = 0; i < nodes.length; i += size) out.push({ nodes: nodes.slice(i, i + size), width: size });
  return out;
}

/**
 * Runs `task` on every node by the order, and returns one result per node in the nodes' order. A
 * task's error is its node's result, never thrown; under `stop`, nodes not yet started are skipped.
 */
export async function rollout<N extends RolloutNode, R>(
  nodes: N[],
  o: { order: RolloutOrder; onFailure: FailurePolicy; parallel?: number },
  task: (node: N) => Promise<R>,
): Promise<RolloutResult<N, R>[]> {
  const results = new Map<N, RolloutResult<N, R>>();
  let failed = false;
  for (const wave of waves(nodes, o.order, o.parallel ?? 8)) {
    const limit = limiter(Math.max(1, wave.width));
    await Promise.all(
      wave.nodes.map((node) =>
        limit(async () => {
          if (failed && o.onFailure === 'stop') return void results.set(node, { node, status: 'skipped' });
          try {
            results.set(node, { node, status: 'ok', value: await task(node) });
          } catch (error) {
            failed = true;
            results.set(node, { node, status: 'failed', error });
          }
        }),
      ),
    );
  }
  return nodes.map((n) => results.get(n)!);
}
