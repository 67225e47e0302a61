import cluster, { type Worker } from 'node:cluster';
import { DriftError, FerryError, HostError, IntegrityError, InternalError, kindOf, RegistryError, RemoteError, SpecError, StoreError, UsageError, Codes, type Code } from '../errors.js';
import { Metrics, type MetricsSnapshot } from './metrics.js';
import { connectionsFor, DEFAULT_CEILING, openFileLimit, shareOf } from './connections.js';
import { clean, shareBuffers } from './respond.js';
import { startServer, type ServeLimits, type ServeOptions, type SiteServer } from './server.js';

/*
 * The site service on every core: a primary that holds the listening socket and hands each new
 * connection to a worker (node:cluster, round robin), and one worker per core that serves. The
 * primary keeps the socket through a restart, so a roll refuses nobody: a connection offered to a
 * worker that has just stopped listening goes to another. Workers send their log lines and counters
 * to the primary, which writes the one log and adds up /metrics.
 */

/** What crosses IPC between the primary and a worker; `ferry` marks ours among cluster's own. */
type ToPrimary =
  | { ferry: 'ready'; url: string; maxConnections: number }
  | { ferry: 'failed'; error: { code?: string; message: string; hint?: string } }
  | { ferry: 'log'; lines: string[] }
  | { ferry: 'metrics?'; id: number }
  | { ferry: 'snap'; id: number; snap: MetricsSnapshot }
  | { ferry: 'final'; snap: MetricsSnapshot };
type ToWorker = { ferry: 'drain' } | { ferry: 'snap?'; id: number } | { ferry: 'metrics'; id: number; text: string };

/** How long a scrape waits for the workers' counters before it uses the last ones they sent. */
const SCRAPE_WAIT_MS = 1000;
/** Past its shutdown timeout, a worker that has not exited is killed after this much more. */
const KILL_GRACE_MS = 5000;
/** How long a new worker may take to listen. */
const START_TIMEOUT_MS = 60_000;
/** Crash backoff: the delay doubles with each crash in the last minute, up to the cap. */
const BACKOFF_FIRST_MS = 100;
const BACKOFF_MAX_MS = 10_000;
const CRASH_WINDOW_MS = 60_000;
/**
 * When the last serving worker dies, its replacement starts at once, not after the backoff: node's
 * cluster closes the shared listening socket with the last worker that listens on it, and the
 * port refuses connections until a new one listens. Each later start waits at least this long, so
 * a worker that dies as soon as it listens cannot make the primary fork without pause.
 */
const LAST_WORKER_GAP_MS = 1000;
/** The primary tells each worker how many share the service (its caps are split that many ways). */
const WORKERS_ENV = 'FERRY_SERVE_WORKERS';

export interface WorkerOptions extends Omit<ServeOptions, 'log' | 'metricsText'> {
  /** Resolves when this worker should stop on its own (SIGTERM/SIGINT reach every process of a terminal or cgroup). */
  stop: Promise<unknown>;
  shutdownTimeoutMs: number;
}

export const isWorker = () => cluster.isWorker;

const send = (m: ToPrimary, then?: () => void) => {
  if (process.connected) process.send!(m, undefined, undefined, then ? () => then() : undefined);
  else then?.();
};

/**
 * One worker: serves until the primary asks it to drain or it is signalled, then finishes its
 * in-flight responses (cut after the shutdown timeout), sends its last counters and disconnects.
 * A worker that cannot start says why to the primary, which reports it.
 */
export async function runWorker(o: WorkerOptions): Promise<void> {
  // Lines are sent a batch per turn of the event loop: one message per request would cost more.
  let batch: string[] = [];
  const flush = () => {
    const lines = batch;
    batch = [];
    if (lines.length) send({ ferry: 'log', lines });
  };
  const log = (line: string) => {
    if (batch.push(line) === 1) setImmediate(flush);
  };
  let nextId = 0;
  const asked = new Map<number, (text: string) => void>();
  let drain!: () => void;
  const drained = new Promise<void>((r) => (drain = r));
  let snapshot: () => MetricsSnapshot = () => new Metrics().snapshot();
  const onMessage = (m: ToWorker) => {
    if (m?.ferry === 'drain') drain();
    else if (m?.ferry === 'snap?') send({ ferry: 'snap', id: m.id, snap: snapshot() });
    else if (m?.ferry === 'metrics') asked.get(m.id)?.(m.text);
  };
  process.on('message', onMessage);
  const { stop, shutdownTimeoutMs, ...serve } = o;
  let srv: SiteServer;
  try {
    const limits = await workerLimits(serve.limits, Number(process.env[WORKERS_ENV]) || 1);
    srv = await startServer({
      ...serve,
      limits,
      log,
      // The whole service's counters, from the primary; this worker's own if it does not answer.
      metricsText: () =>
        new Promise<string>((resolve) => {
          const id = nextId++;
          const t = setTimeout(() => done(local.render()), SCRAPE_WAIT_MS * 2);
          const done = (text: string) => {
            clearTimeout(t);
            asked.delete(id);
            resolve(text);
          };
          asked.set(id, done);
          send({ ferry: 'metrics?', id });
        }),
    });
  } catch (e) {
    flush();
    const f = e as FerryError;
    await new Promise<void>((r) => send({ ferry: 'failed', error: { code: f.code, message: f.message ?? String(e), ...(f.hint ? { hint: f.hint } : {}) } }, r));
    process.off('message', onMessage);
    cluster.worker?.disconnect();
    return;
  }
  const local = { render: () => srv.metrics() };
  snapshot = () => srv.snapshot();
  send({ ferry: 'ready', url: srv.url, maxConnections: srv.maxConnections });
  await Promise.race([drained, stop]);
  await srv.close(shutdownTimeoutMs);
  flush();
  // Messages arrive in order: once this one is written, every log line before it is too.
  await new Promise<void>((r) => send({ ferry: 'final', snap: srv.snapshot() }, r));
  process.off('message', onMessage);
  cluster.worker?.disconnect();
}

/**
 * A worker's limits: its share of the service's connection cap (--max-connections, else the
 * default ceiling, and never more than its open-file limit supports) and of the buffer pools.
 */
export async function workerLimits(limits: ServeLimits | undefined, workers: number): Promise<ServeLimits> {
  shareBuffers(workers);
  const given = limits?.maxConnections;
  const share = shareOf(given ?? DEFAULT_CEILING, workers);
  return { ...limits, maxConnections: given !== undefined ? share : Math.min(share, connectionsFor(await openFileLimit())) };
}

export interface PrimaryOptions {
  workers: number;
  shutdownTimeoutMs: number;
  log?: (line: string) => void;
}

export interface ServicePrimary {
  url: string;
  /** The service's connection cap: each worker's share, added up. */
  maxConnections: number;
  /** The connection cap of each worker. */
  maxConnectionsEach: number;
  /** The pids serving now. */
  pids(): number[];
  /** Starts fresh workers, waits until they listen, then drains the old ones. Resolves when the old ones are gone. */
  restart(): Promise<void>;
  /** Drains every worker; resolves when all have exited. */
  close(): Promise<void>;
}

interface Info {
  worker: Worker;
  pid: number;
  /** The set it belongs to: bumped by each restart. */
  gen: number;
  ready: boolean;
  retiring: boolean;
  /** The last counters it sent, folded into the totals when it exits. */
  snap?: MetricsSnapshot;
  exited: Promise<void>;
}

/** A worker's startup failure, as the class its code belongs to (so the CLI exits as a single process would). */
function rebuild(e: { code?: string; message: string; hint?: string }): FerryError {
  const opts = e.hint ? { hint: e.hint } : {};
  const code = e.code as Code | undefined;
  const kind = code ? kindOf(code) : undefined;
  if (!code || !kind) return new InternalError(Codes.internal, `a worker failed to start: ${e.message}`, opts);
  const classes = { usage: UsageError, spec: SpecError, drift: DriftError, registry: RegistryError, remote: RemoteError, integrity: IntegrityError, store: StoreError, host: HostError, internal: InternalError } as const;
  const Cls = classes[kind] as unknown as new (c: Code, m: string, o: object) => FerryError;
  return new Cls(code, e.message, opts);
}

/**
 * Forks `workers` workers running this same command line, and resolves once all listen; if one
 * cannot start, stops the others and rejects with its error.
 */
export async function startPrimary(o: PrimaryOptions): Promise<ServicePrimary> {
  const log = o.log ?? (() => {});
  // Round robin, whatever NODE_CLUSTER_SCHED_POLICY says: the primary must own the socket for a roll to refuse nobody.
  cluster.schedulingPolicy = cluster.SCHED_RR;
  const infos = new Map<Worker, Info>();
  let gen = 0;
  let stopping = false;
  let url = '';
  let maxConnectionsEach = 0;
  const retired = new Metrics();
  const crashes: number[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let scrapeId = 0;
  const scrapes = new Map<number, { want: Set<Worker>; done: () => void }>();

  const fork = (g: number): Promise<Info> =>
    new Promise<Info>((resolve, reject) => {
      const worker = cluster.fork({ [WORKERS_ENV]: String(o.workers) });
      let exited!: () => void;
      const info: Info = { worker, pid: worker.process.pid ?? 0, gen: g, ready: false, retiring: false, exited: new Promise<void>((r) => (exited = r)) };
      infos.set(worker, info);
      let failure: Error | undefined;
      const startTimer = setTimeout(() => {
        failure = new HostError(Codes.serveSocket, `worker ${info.pid} did not listen within ${START_TIMEOUT_MS / 1000} s`);
        worker.process.kill('SIGKILL');
      }, START_TIMEOUT_MS);
      worker.on('message', (m: ToPrimary) => {
        switch (m?.ferry) {
          case 'ready':
            clearTimeout(startTimer);
            info.ready = true;
            url ||= m.url;
            maxConnectionsEach ||= m.maxConnections;
            resolve(info);
            break;
          case 'failed':
            failure = rebuild(m.error);
            break;
          case 'log':
            for (const l of m.lines) log(l);
            break;
          case 'metrics?':
            void scrape().then((text) => worker.isConnected() && worker.send({ ferry: 'metrics', id: m.id, text } satisfies ToWorker));
            break;
          case 'snap':
            info.snap = m.snap;
            scrapes.get(m.id)?.want.delete(worker);
            if (scrapes.get(m.id)?.want.size === 0) scrapes.get(m.id)!.done();
            break;
          case 'final':
            info.snap = m.snap;
            break;
        }
      });
      worker.on('error', () => {});
      worker.once('exit', (code, signal) => {
        clearTimeout(startTimer);
        infos.delete(worker);
        if (info.snap) retired.add(info.snap, true);
        for (const s of scrapes.values()) if (s.want.delete(worker) && s.want.size === 0) s.done();
        exited();
        if (!info.ready) {
          reject(failure ?? new HostError(Codes.serveSocket, `worker ${info.pid} exited (${signal ?? `code ${code}`}) before it listened`));
          return;
        }
        // Any other exit is replaced, a clean one too: a worker only stops when the primary asks.
        if (stopping || info.retiring) return;
        replace(info, signal ? `was killed by ${signal}` : `exited with code ${code}`);
      });
    });

  /** Workers being started to replace dead ones. */
  let replacing = 0;
  let lastUrgent = 0;
  /** Replacements waiting out their backoff, soonest first. */
  const waiting: { dead: Info; start: () => void; t: NodeJS.Timeout }[] = [];
  const listening = () => [...infos.values()].some((i) => i.ready && !i.retiring);

  /**
   * A worker that died on its own is replaced, later and later if they keep dying; but with no
   * worker left listening (and none starting), one replacement starts now (LAST_WORKER_GAP_MS).
   */
  const replace = (dead: Info, how: string) => {
    if (stopping) return;
    const now = Date.now();
    crashes.push(now);
    while (crashes.length && crashes[0]! < now - CRASH_WINDOW_MS) crashes.shift();
    const backoffMs = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (crashes.length - 1));
    const start = () => {
      const i = waiting.indexOf(entry);
      if (i >= 0) waiting.splice(i, 1);
      clearTimeout(entry.t);
      timers.delete(entry.t);
      if (stopping || dead.gen !== gen) return;
      replacing++;
      fork(dead.gen).then(
        (w) => {
          replacing--;
          // A restart finished meanwhile: this one belongs to the old set.
          if (w.gen !== gen || stopping) retire(w);
          else log(`ferry serve: worker ${w.pid} replaces ${dead.pid}`);
        },
        (e: Error) => {
          replacing--;
          replace(dead, `could not be replaced (${clean(e.message)})`);
        },
      );
    };
    const entry = { dead, start, t: setTimeout(() => start(), backoffMs) };
    timers.add(entry.t);
    waiting.push(entry);
    const urgent = !listening() && replacing === 0 && !rolling;
    if (!urgent) {
      const why = listening() ? '' : rolling ? ' (a restart is starting new workers)' : ' (another is already starting)';
      log(`ferry serve: worker ${dead.pid} ${how}; starting another in ${backoffMs} ms${why} (${crashes.length} crash(es) in the last minute)`);
      return;
    }
    // No worker listens: the port refuses connections until one does.
    const soonest = waiting[0]!;
    const delay = Math.max(0, lastUrgent + LAST_WORKER_GAP_MS - now);
    lastUrgent = now + delay;
    clearTimeout(soonest.t);
    timers.delete(soonest.t);
    soonest.t = setTimeout(() => soonest.start(), delay);
    timers.add(soonest.t);
    log(
      `ferry serve: worker ${dead.pid} ${how}; no worker is listening, so the port refuses connections until one does: starting another in ${delay} ms (${crashes.length} crash(es) in the last minute)`,
    );
  };

  const retire = (w: Info): Promise<void> => {
    if (!w.retiring) {
      w.retiring = true;
      // One still starting may not listen for messages yet; it holds no connection either.
      if (w.ready && w.worker.isConnected()) w.worker.send({ ferry: 'drain' } satisfies ToWorker);
      else w.worker.process.kill('SIGTERM');
      setTimeout(() => w.worker.process.kill('SIGKILL'), o.shutdownTimeoutMs + KILL_GRACE_MS).unref();
    }
    return w.exited;
  };

  /** The whole service's counters: every worker's now (or its last, if it is slow), and those of the gone. */
  const scrape = async (): Promise<string> => {
    const live = [...infos.values()].filter((i) => i.ready && i.worker.isConnected());
    const id = scrapeId++;
    await new Promise<void>((resolve) => {
      const t = setTimeout(finish, SCRAPE_WAIT_MS);
      function finish() {
        clearTimeout(t);
        scrapes.delete(id);
        resolve();
      }
      scrapes.set(id, { want: new Set(live.map((i) => i.worker)), done: finish });
      for (const i of live) i.worker.send({ ferry: 'snap?', id } satisfies ToWorker);
      if (live.length === 0) finish();
    });
    const sum = new Metrics();
    sum.add(retired.snapshot(), true);
    const serving: { pid: number; requests: number }[] = [];
    for (const i of infos.values()) {
      if (!i.snap) continue;
      sum.add(i.snap, !i.ready);
      if (i.ready && !i.retiring) serving.push({ pid: i.pid, requests: i.snap.requests.reduce((a, [, v]) => a + v, 0) });
    }
    return sum.render(serving.sort((a, b) => a.pid - b.pid));
  };

  const startSet = async (g: number): Promise<Info[]> => {
    const all = await Promise.allSettled(Array.from({ length: o.workers }, () => fork(g)));
    const failed = all.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (!failed) return all.map((r) => (r as PromiseFulfilledResult<Info>).value);
    await Promise.all(all.map((r) => (r.status === 'fulfilled' ? retire(r.value) : undefined)));
    throw failed.reason;
  };

  let rolling: Promise<void> | undefined;
  await startSet(gen);
  let closed: Promise<void> | undefined;
  return {
    url,
    maxConnections: maxConnectionsEach * o.workers,
    maxConnectionsEach,
    pids: () => [...infos.values()].filter((i) => i.ready && !i.retiring).map((i) => i.pid),
    restart() {
      if (stopping) return Promise.resolve();
      rolling ??= (async () => {
        const old = [...infos.values()];
        try {
          const fresh = await startSet(gen + 1);
          gen++;
          log(`ferry serve: restart: workers ${fresh.map((i) => i.pid).join(', ')} listen; ${old.map((i) => i.pid).join(', ')} finish their requests and exit`);
        } catch (e) {
          log(`ferry serve: restart abandoned, the running workers keep serving: ${clean((e as Error).message)}`);
          return;
        }
        // Everything of an older set goes, including a replacement that started during the roll.
        await Promise.all([...infos.values()].filter((i) => i.gen < gen).map(retire));
        log('ferry serve: restart done');
      })().finally(() => {
        rolling = undefined;
      });
      return rolling;
    },
    close() {
      closed ??= (async () => {
        stopping = true;
        for (const t of timers) clearTimeout(t);
        await Promise.all([...infos.values()].map(retire));
      })();
      return closed;
    },
  };
}
