import { beginOperation, type Journal } from '../cluster/journal.js';
import type { LeaseProvider, SiteStateAccess } from '../cluster/state.js';

export interface OperationContext {
  site: SiteStateAccess;
  lease: LeaseProvider;
  /** join, upgrade, reset, certs-renew, backup, restore */
  kind: string;
  /** What the operation was asked to do: a re-run with the same arguments resumes it. */
  args: Record<string, unknown>;
  /** `<node>/<pid>` */
  holder: string;
  /** Wait for another operation's lease instead of refusing. */
  wait?: boolean;
  onWait?: (holder: string) => void;
}

export interface OperationOptions<T> {
  /** Whether the body's outcome ends the operation (default: yes); a partial one keeps the journal for a re-run. */
  complete?: (out: T) => boolean;
}

/**
 * One multi-node operation: the site's lease, then its journal (a new one, or the unfinished one of
 * the same kind and arguments), the body, and the journal's end. On a failure the journal stays, so
 * that running the same command again resumes; the lease is released either way.
 */
export async function runOperation<T>(o: OperationContext & OperationOptions<T>, body: (journal: Journal) => Promise<T>): Promise<T> {
  const lease = await o.lease.acquire(o.holder, { wait: o.wait, onWait: o.onWait });
  try {
    const journal = await beginOperation(o.site, { kind: o.kind, args: o.args, holder: o.holder });
    const out = await body(journal);
    if (o.complete?.(out) ?? true) await journal.finish();
    return out;
  } finally {
    await lease.release();
  }
}
