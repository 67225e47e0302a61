import { Codes, UsageError } from '../errors.js';
import type { OperationRecord, SiteStateAccess } from './state.js';

/*
 * An operation's journal, kept in the site state: the steps it finished, so that a re-run after
 * ferry, the SSH link or the operator's host died skips them. One operation is recorded at a time;
 * the lease keeps two from running, the record keeps a second kind from starting over a half-done one.
 */

export interface Journal {
  readonly operation: OperationRecord;
  /** Whether a step (`<node>/<step>` or `site/<step>`) finished in this or an earlier run. */
  has(key: string): boolean;
  record(key: string): Promise<void>;
  /** The operation finished: its record is removed from the state. */
  finish(): Promise<void>;
}

const same = (a: Record<string, unknown>, b: Record<string, unknown>) => JSON.stringify(a) === JSON.stringify(b);

/**
 * Starts an operation, or resumes the unfinished one of the same kind and arguments. An unfinished
 * operation of another kind or with other arguments is refused: it must be finished (re-run it) or
 * abandoned first (`ferry state operation abandon`).
 */
export async function beginOperation(site: SiteStateAccess, o: { kind: string; args: Record<string, unknown>; holder: string; id?: string }): Promise<Journal> {
  let op: OperationRecord | undefined;
  let resumed = false;
  await site.update((s) => {
    const cur = s.operation;
    if (cur && !(cur.kind === o.kind && same(cur.args, o.args))) {
      throw new UsageError(Codes.operationUnfinished, `an unfinished ${cur.kind} (${cur.id}, started ${cur.startedAt} by ${cur.holder}) is recorded for this site`, {
        hint: `Finish it by running the same ${cur.kind} again, or abandon it with: ferry state operation abandon ${cur.id}`,
      });
    }
    resumed = !!cur;
    op = cur ? { ...cur, holder: o.holder } : { id: o.id ?? `${o.kind}-${new Date().toISOString().replace(/[-:.]/g, '').slice(0, 15)}`, kind: o.kind, holder: o.holder, startedAt: new Date().toISOString(), args: o.args, journal: [] };
    s.operation = op;
  });
  const done = new Set(op!.journal.map((e) => e.key));
  const journal: Journal & { resumed: boolean } = {
    resumed,
    get operation() {
      return op!;
    },
    has: (key) => done.has(key),
    record: async (key) => {
      if (done.has(key)) return;
      const entry = { key, at: new Date().toISOString() };
      await site.update((s) => {
        if (s.operation?.id !== op!.id) throw new UsageError(Codes.operationUnfinished, `the operation ${op!.id} is no longer recorded for this site`, { hint: 'Another ferry abandoned it; run the command again.' });
        s.operation.journal.push(entry);
        op = s.operation;
      });
      done.add(key);
    },
    finish: async () => {
      await site.update((s) => {
        if (s.operation?.id === op!.id) delete s.operation;
      });
    },
  };
  return journal;
}
