/** Runs at most `n` tasks at once. Tiny on purpose: a queue and a counter. */
export function limiter(n: number): <T>(task: () => Promise<T>) => Promise<T> {
  let active = 0;
  const queue: (() => void)[] = [];
  const next = () => {
    if (active >= n) return;
    const run = queue.shift();
    if (run) {
      active++;
      run();
    }
  };
  return <T>(task: () => Promise<T>) =>
    new Promise<T>((resolve, reject) => {
      queue.push(() => {
        task()
          .then(resolve, reject)
          .finally(() => {
            active--;
            next();
          });
      });
      next();
    });
}

/** Shares one in-flight promise per key, so two images that need the same blob fetch it once. */
export class SingleFlight<T> {
  private readonly inflight = new Map<string, Promise<T>>();
  run(key: string, fn: () => Promise<T>): Promise<T> {
    const have = this.inflight.get(key);
    if (have) return have;
    const p = fn().finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Promise.all that, on the first failure, aborts the others through `ac` and waits for them to
 * settle before it rethrows, so no transfer is still writing when the caller cleans up or reports.
 */
export async function allOrAbort<T>(ps: Promise<T>[], ac: AbortController): Promise<T[]> {
  let first: { e: unknown } | undefined;
  const results = await Promise.allSettled(
    ps.map((p) =>
      p.catch((e: unknown) => {
        if (!first) {
          first = { e };
          ac.abort(e);
        }
        throw e;
      }),
    ),
  );
  if (first) throw first.e;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}
