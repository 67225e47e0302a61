import { Codes, FerryError, UsageError } from '../errors.js';
import { getLease, putLease, type LeaseSpec } from '../kube/client.js';
import { sleep } from '../util/limit.js';
import { OPERATION_LEASE, STATE_NAMESPACE, type LeaseProvider, type OperationLease } from './state.js';

/*
 * The site's one operation lease: Lease ferry-operation in ferry-system. Its holder renews it in the
 * background; a holder that died stops renewing, and once renewTime + leaseDurationSeconds has passed
 * the next operation takes it over. Every write names the resourceVersion it read, so two ferries
 * racing for a free or expired lease cannot both get it.
 */

export const DEFAULT_LEASE_SECONDS = 60;

/** MicroTime as the API wants it: RFC 3339 with six fractional digits. */
const microTime = (d = new Date()) => d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

const isConflict = (e: unknown) => e instanceof FerryError && e.code === Codes.stateConflict;

/** Whether a lease names a holder whose last renewal has not yet run out. */
export function liveHolder(spec: LeaseSpec, now = Date.now()): string | undefined {
  if (!spec.holderIdentity) return undefined;
  const renewed = Date.parse(spec.renewTime ?? spec.acquireTime ?? '');
  if (!Number.isFinite(renewed)) return undefined;
  return renewed + (spec.leaseDurationSeconds ?? DEFAULT_LEASE_SECONDS) * 1000 > now ? spec.holderIdentity : undefined;
}

export interface KubeLeaseOptions {
  kubeconfig: string;
  /** How long the lease lasts without a renewal (default 60 s); it is renewed every third of that. */
  durationSeconds?: number;
  /** How often `wait` looks again (default 2 s). */
  pollMs?: number;
}

export function kubeLease(o: KubeLeaseOptions): LeaseProvider {
  const duration = o.durationSeconds ?? DEFAULT_LEASE_SECONDS;
  const poll = o.pollMs ?? 2000;
  const put = (spec: LeaseSpec, rv: string | undefined) => putLease(o.kubeconfig, STATE_NAMESPACE, OPERATION_LEASE, spec, rv);
  const get = () => getLease(o.kubeconfig, STATE_NAMESPACE, OPERATION_LEASE);

  /** One attempt: the lease's resourceVersion once taken, or the live holder that keeps it. */
  const attempt = async (holder: string): Promise<{ rv: string; spec: LeaseSpec } | { held: string; since?: string }> => {
    const cur = await get();
    const now = microTime();
    const mine: LeaseSpec = { holderIdentity: holder, leaseDurationSeconds: duration, acquireTime: now, renewTime: now, leaseTransitions: 0 };
    if (!cur) return { rv: await put(mine, undefined), spec: mine };
    const live = liveHolder(cur.spec);
    if (live && live !== holder) return { held: live, since: cur.spec.acquireTime };
    const spec = { ...mine, leaseTransitions: (cur.spec.leaseTransitions ?? 0) + (cur.spec.holderIdentity === holder ? 0 : 1) };
    return { rv: await put(spec, cur.resourceVersion), spec };
  };

  return {
    acquire: async (holder, opts = {}): Promise<OperationLease> => {
      let taken: { rv: string; spec: LeaseSpec } | undefined;
      let told = '';
      while (!taken) {
        let r: Awaited<ReturnType<typeof attempt>>;
        try {
          r = await attempt(holder);
        } catch (e) {
          // Another ferry took or renewed it between our read and write: look again.
          if (isConflict(e)) continue;
          throw e;
        }
        if ('rv' in r) {
          taken = r;
          break;
        }
        if (!opts.wait) {
          throw new UsageError(Codes.operationInProgress, `another operation holds the site's lease (${STATE_NAMESPACE}/${OPERATION_LEASE}): ${r.held}${r.since ? `, since ${r.since}` : ''}`, {
            hint: `Wait for it to finish, or pass --wait. If its holder is gone (the machine or ferry died), the lease runs out ${duration}s after its last renewal; to free it at once: ferry state lease break`,
          });
        }
        if (r.held !== told) opts.onWait?.(r.held);
        told = r.held;
        await sleep(poll);
      }
      let rv = taken.rv;
      let spec = taken.spec;
      let lost = false;
      // Renewed in the background; the timer must not keep a finished ferry alive.
      const renew = async () => {
        try {
          const next = { ...spec, renewTime: microTime() };
          rv = await put(next, rv);
          spec = next;
        } catch (e) {
          if (isConflict(e)) lost = true;
        }
      };
      let chain: Promise<void> = Promise.resolve();
      const timer = setInterval(() => {
        if (!lost) chain = chain.then(renew);
      }, Math.max(1000, (duration * 1000) / 3));
      timer.unref();
      return {
        holder,
        release: async () => {
          clearInterval(timer);
          await chain;
          if (lost) return;
          try {
            const cur = await get();
            if (cur?.spec.holderIdentity !== holder) return;
            const { holderIdentity: _, ...rest } = cur.spec;
            await put({ ...rest, renewTime: microTime() }, cur.resourceVersion);
          } catch (e) {
            // Someone broke or took it meanwhile: it is not ours to clear.
            if (!isConflict(e)) throw e;
          }
        },
      };
    },
  };
}

/** Clears the lease whoever holds it; returns the holder it named (undefined: it was free). */
export async function breakLease(o: { kubeconfig: string }): Promise<string | undefined> {
  for (;;) {
    const cur = await getLease(o.kubeconfig, STATE_NAMESPACE, OPERATION_LEASE);
    if (!cur?.spec.holderIdentity) return undefined;
    const { holderIdentity, ...rest } = cur.spec;
    try {
      await putLease(o.kubeconfig, STATE_NAMESPACE, OPERATION_LEASE, { ...rest, renewTime: microTime() }, cur.resourceVersion);
      return holderIdentity;
    } catch (e) {
      if (!isConflict(e)) throw e;
    }
  }
}

/** Who holds the lease now, and whether that holder is live (for `ferry state show`). */
export async function leaseHolder(o: { kubeconfig: string }): Promise<{ holder: string; live: boolean; renewTime?: string } | undefined> {
  const cur = await getLease(o.kubeconfig, STATE_NAMESPACE, OPERATION_LEASE);
  if (!cur?.spec.holderIdentity) return undefined;
  return { holder: cur.spec.holderIdentity, live: !!liveHolder(cur.spec), renewTime: cur.spec.renewTime };
}
