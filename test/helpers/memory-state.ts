import { Codes, UsageError } from '../../src/errors.js';
import type { LeaseProvider, OperationLease, SiteState, SiteStateAccess } from '../../src/cluster/state.js';

/*
 * STAND-INS for the fast suite: the site state and its lease kept in this process's memory. The real
 * ones live in the cluster (ConfigMap and Lease, src/cluster/); the site suite proves those.
 */

export function memoryState(initial?: SiteState): SiteStateAccess & { current(): SiteState | undefined; writes: number } {
  let doc = initial ? structuredClone(initial) : undefined;
  const self = {
    writes: 0,
    current: () => (doc ? structuredClone(doc) : undefined),
    read: async () => self.current(),
    update: async (fn: (s: SiteState) => SiteState | void) => {
      if (!doc) throw new Error('memoryState: no state to update');
      const draft = structuredClone(doc);
      const next = fn(draft) ?? draft;
      doc = structuredClone(next);
      self.writes++;
      return structuredClone(next);
    },
  };
  return self;
}

export function memoryLease(): LeaseProvider & { holder(): string | undefined } {
  let held: string | undefined;
  return {
    holder: () => held,
    acquire: async (holder: string, o: { wait?: boolean; onWait?: (h: string) => void } = {}): Promise<OperationLease> => {
      while (held && held !== holder) {
        if (!o.wait) throw new UsageError(Codes.operationInProgress, `another operation holds the site's lease: ${held}`, { hint: 'Wait for it, or pass --wait.' });
        o.onWait?.(held);
        await new Promise((r) => setTimeout(r, 50));
      }
      held = holder;
      return { holder, release: async () => void (held === holder && (held = undefined)) };
    },
  };
}
