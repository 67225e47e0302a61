import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import http from 'node:http';
import { createInterface } from 'node:readline';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FERRY } from '../helpers/cli.js';
import { freePort, tmpdir, waitFor } from '../helpers/peers.js';
import { buildSiteBundle, metric, request, type SiteBundle } from '../helpers/site.js';

/*
 * `ferry serve` on every core: the real CLI with --workers, a primary handing connections to worker
 * processes. Which worker answered is read from /metrics (ferry_serve_worker_requests_total{pid}),
 * which also proves the primary adds up every worker's counters.
 */

let work: string;
let b: SiteBundle;
const children: ChildProcess[] = [];

interface Served {
  child: ChildProcess;
  pid: number;
  url: string;
  logs: string[];
  exited: Promise<number | null>;
}

/** `ferry serve` with `args`; quiet, it says nothing, so it listens on a port picked here. */
async function serve(args: string[], o: { fixedPort?: boolean } = {}): Promise<Served> {
  const quiet = args.includes('-q');
  const listen = quiet || o.fixedPort ? `127.0.0.1:${await freePort()}` : '127.0.0.1:0';
  const child = spawn(process.execPath, [FERRY, 'serve', '--bundle', b.dir, '--listen', listen, '--shutdown-timeout', '5', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const logs: string[] = [];
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stderr! }).on('line', (l) => {
      logs.push(l);
      const m = / on (https?:\/\/[^ ]+) \(listening/.exec(l);
      if (m) resolve(m[1]!);
    });
    if (quiet) {
      const u = `http://${listen}`;
      void waitFor(async () => (await request(`${u}/healthz`).catch(() => undefined))?.status === 200, 'ferry serve -q to answer', 60_000).then(() => resolve(u), reject);
    }
    void exited.then((code) => reject(new Error(`ferry serve exited with ${code}:\n${logs.join('\n')}`)));
  });
  return { child, pid: child.pid!, url, logs, exited };
}

/** The pids /metrics says are serving, with the requests each answered. */
async function serving(url: string): Promise<Map<number, number>> {
  const text = (await request(`${url}/metrics`)).text;
  const out = new Map<number, number>();
  for (const m of text.matchAll(/^ferry_serve_worker_requests_total\{pid="(\d+)"\} (\d+)$/gm)) out.set(Number(m[1]), Number(m[2]));
  expect(metric(text, 'ferry_serve_workers')).toBe(out.size);
  return out;
}

const parentOf = async (pid: number) => Number(/^PPid:\s+(\d+)$/m.exec(await fs.readFile(`/proc/${pid}/status`, 'utf8'))![1]);
const childrenOf = async (pid: number) => (await fs.readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).trim().split(/\s+/).filter(Boolean).map(Number);
const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const ACCESS = /^127\.0\.0\.1 "GET \/v2\/ HTTP\/1\.1" 200 2 \d+\.\dms "-"$/;

beforeAll(async () => {
  work = await tmpdir('ferry-serve-workers-');
  b = await buildSiteBundle(work, { bigBytes: 16 << 20 });
});
afterEach(async () => {
  for (const c of children.splice(0)) {
    if (c.exitCode === null && c.signalCode === null) {
      const gone = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await gone;
    }
  }
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

describe('ferry serve --workers', () => {
  it('spreads new connections over two worker processes of one primary, which adds up their counters and writes the one access log', async () => {
    // The cap is the service's, split across the workers: memory does not grow with the cores.
    const s = await serve(['--workers', '2', '--max-connections', '20']);
    expect(s.logs.find((l) => l.startsWith('ferry serve: '))).toMatch(/, 2 workers, at most 20 connections in all, 10 each;/);
    for (let i = 0; i < 20; i++) expect((await request(`${s.url}/v2/`)).status).toBe(200);
    const pids = await serving(s.url);
    expect(pids.size).toBe(2);
    for (const [pid, n] of pids) {
      expect(await parentOf(pid)).toBe(s.pid);
      expect(n).toBeGreaterThan(0);
    }
    expect((await childrenOf(s.pid)).sort()).toEqual([...pids.keys()].sort());
    const m = (await request(`${s.url}/metrics`)).text;
    // The 20 requests and the first scrape, whichever worker answered them.
    expect(metric(m, 'ferry_serve_requests_total', { route: 'base' })).toBe(20);
    expect(metric(m, 'ferry_serve_requests_total', { route: 'metrics' })).toBe(1);
    expect(metric(m, 'ferry_serve_connections_max')).toBe(20);
    // One line per request, whole, in the format of a single process.
    await waitFor(async () => s.logs.filter((l) => l.includes('"GET /metrics')).length === 1, 'the log line of the first scrape');
    expect(s.logs.filter((l) => l.includes('"GET /v2/ '))).toHaveLength(20);
    expect(s.logs.filter((l) => l.includes('"GET /v2/ ')).every((l) => ACCESS.test(l))).toBe(true);
    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);
    expect(s.logs).toContain('ferry serve: SIGTERM: finishing in-flight requests (up to 5 s)');
    for (const pid of pids.keys()) expect(existsSync(`/proc/${pid}`)).toBe(false);
  });

  it('writes no access line when quiet: workers never write to the log themselves', async () => {
    const s = await serve(['--workers', '2', '-q']);
    await waitFor(async () => (await serving(s.url)).size === 2, 'both workers', 60_000);
    for (let i = 0; i < 6; i++) expect((await request(`${s.url}/v2/`)).status).toBe(200);
    expect((await serving(s.url)).size).toBe(2);
    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);
    expect(s.logs.filter((l) => l.includes('HTTP/1.1'))).toEqual([]);
  });

  it('on SIGHUP starts new workers, lets the old finish their downloads, and loses no request of a steady stream', async () => {
    const s = await serve(['--workers', '2']);
    const blob = `${s.url}/v2/fx/big/blobs/${b.big!.layer.digest}`;
    const old = [...(await serving(s.url)).keys()];
    // A download that has begun and then waits, its client not reading.
    const slow = new Promise<{ digest: string; status: number }>((resolve, reject) => {
      http.get(blob, { agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.once('data', (c: Buffer) => {
          chunks.push(c);
          res.pause();
          void waitFor(async () => s.logs.some((l) => l.startsWith('ferry serve: restart: workers')), 'the new workers', 60_000).then(() => {
            res.on('data', (d: Buffer) => chunks.push(d));
            res.resume();
          }, reject);
        });
        res.on('end', () => resolve({ digest: sha256(Buffer.concat(chunks)), status: res.statusCode ?? 0 }));
        res.on('error', reject);
      }).on('error', reject);
    });
    // The stream: keep-alive clients (which, as Go's and curl's do, send again on a reused connection
    // the server closed before answering) and clients with a fresh connection per request.
    let stop = false;
    const results = { ok: 0, bad: [] as string[], resent: 0 };
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    // Sockets that carried a response: node sets reusedSocket only when a request finds one free, not when it waited for one.
    const used = new WeakSet<object>();
    const once = (fresh: boolean) =>
      new Promise<void>((resolve) => {
        const req = http.get(blob, { agent: fresh ? false : agent }, (res) => {
          const h = createHash('sha256');
          let n = 0;
          res.on('data', (c: Buffer) => {
            h.update(c);
            n += c.length;
          });
          res.on('end', () => {
            if (req.socket) used.add(req.socket);
            if (res.statusCode === 200 && n === b.big!.layer.size && `sha256:${h.digest('hex')}` === b.big!.layer.digest) results.ok++;
            else results.bad.push(`status ${res.statusCode}, ${n} bytes`);
            resolve();
          });
          res.on('error', (e) => {
            results.bad.push(`body: ${e.message}`);
            resolve();
          });
        });
        req.on('error', (e: NodeJS.ErrnoException) => {
          if (!fresh && (req.reusedSocket || (req.socket !== null && used.has(req.socket))) && e.code === 'ECONNRESET') {
            results.resent++;
            void once(fresh).then(resolve);
          } else {
            results.bad.push(`${fresh ? 'fresh' : 'kept'}: ${e.message}`);
            resolve();
          }
        });
      });
    const loops = [false, false, false, false, true, true].map(async (fresh) => {
      while (!stop) await once(fresh);
    });
    await waitFor(async () => results.ok >= 6, 'the stream to flow', 90_000);
    s.child.kill('SIGHUP');
    await waitFor(async () => s.logs.includes('ferry serve: restart done'), 'the restart to finish', 90_000);
    const fresh = [...(await serving(s.url)).keys()];
    const during = results.ok;
    await waitFor(async () => results.ok >= during + 6, 'the stream to flow on', 90_000);
    stop = true;
    await Promise.all(loops);
    agent.destroy();
    expect(results.bad).toEqual([]);
    expect(await slow).toEqual({ digest: b.big!.layer.digest, status: 200 });
    // Two new workers serve; the old ones are gone.
    expect(fresh).toHaveLength(2);
    expect(fresh.filter((p) => old.includes(p))).toEqual([]);
    for (const pid of old) expect(existsSync(`/proc/${pid}`)).toBe(false);
    const after = await serving(s.url);
    expect([...after.keys()].sort()).toEqual([...fresh].sort());
    expect([...after.values()].every((n) => n > 0)).toBe(true);
    // The totals keep what the old workers answered: every blob GET is counted.
    const m = (await request(`${s.url}/metrics`)).text;
    expect(metric(m, 'ferry_serve_requests_total', { route: 'blob', status: '200' })).toBe(results.ok + 1);
  }, 240_000);

  it('replaces a worker that is killed, and says so', async () => {
    const s = await serve(['--workers', '2']);
    const [victim, other] = [...(await serving(s.url)).keys()];
    process.kill(victim!, 'SIGKILL');
    await waitFor(async () => s.logs.some((l) => new RegExp(`^ferry serve: worker \\d+ replaces ${victim}$`).test(l)), 'the replacement', 60_000);
    expect(s.logs).toContain(`ferry serve: worker ${victim} was killed by SIGKILL; starting another in 100 ms (1 crash(es) in the last minute)`);
    const now = await childrenOf(s.pid);
    expect(now).toHaveLength(2);
    expect(now).toContain(other);
    expect(now).not.toContain(victim);
    for (let i = 0; i < 6; i++) expect((await request(`${s.url}/healthz`)).status).toBe(200);
    expect([...(await serving(s.url)).keys()].sort()).toEqual(now.sort());
  });

  it('when every worker dies, starts one at once instead of waiting out the backoff, so the port opens again', async () => {
    // A fixed port: once no worker listens, node's cluster closes the socket, and port 0 would pick another.
    const s = await serve(['--workers', '2'], { fixedPort: true });
    const first = [...(await serving(s.url)).keys()];
    expect(first).toHaveLength(2);
    // Both at once: the first exit the primary sees leaves one worker listening (a backoff), the second none.
    process.kill(first[0]!, 'SIGKILL');
    process.kill(first[1]!, 'SIGKILL');
    const crashLine = (pid: number) => s.logs.find((l) => l.startsWith(`ferry serve: worker ${pid} was killed by SIGKILL;`));
    await waitFor(async () => !!crashLine(first[0]!) && !!crashLine(first[1]!), 'both crash lines', 60_000);
    const [earlier, later] = s.logs.indexOf(crashLine(first[0]!)!) < s.logs.indexOf(crashLine(first[1]!)!) ? [first[0]!, first[1]!] : [first[1]!, first[0]!];
    expect(crashLine(earlier)).toMatch(/; starting another in 100 ms \(1 crash\(es\) in the last minute\)$/);
    // Never a plain backoff with no worker listening: one starts at once, or one was already starting
    // (the machine stalled past the first one's 100 ms).
    expect(crashLine(later)).toMatch(
      new RegExp(`^ferry serve: worker ${later} was killed by SIGKILL; (no worker is listening, so the port refuses connections until one does: starting another in 0 ms|starting another in 200 ms \\(another is already starting\\)) \\(2 crash\\(es\\) in the last minute\\)$`),
    );
    await waitFor(async () => (await request(`${s.url}/healthz`).catch(() => undefined))?.status === 200, 'the service to answer again', 60_000);
    await waitFor(async () => (await childrenOf(s.pid)).length === 2, 'two workers again', 60_000);
  }, 240_000);

  it('with --workers 1 serves from the one process it starts, with no primary and no child', async () => {
    const s = await serve(['--workers', '1']);
    expect(s.logs.find((l) => l.startsWith('ferry serve: '))).not.toMatch(/\d workers/);
    for (let i = 0; i < 3; i++) expect((await request(`${s.url}/v2/`)).status).toBe(200);
    expect([...(await serving(s.url)).keys()]).toEqual([s.pid]);
    expect(await childrenOf(s.pid)).toEqual([]);
    // A hangup does not stop it (SIGHUP's default would).
    s.child.kill('SIGHUP');
    await waitFor(async () => s.logs.some((l) => l.startsWith('ferry serve: SIGHUP: ignored')), 'the SIGHUP line');
    expect((await request(`${s.url}/healthz`)).status).toBe(200);
    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);
  });

  it('reports a worker that cannot start as the command would with one process, and refuses a bad --workers', async () => {
    const taken = await serve(['--workers', '1']);
    const port = new URL(taken.url).port;
    const child = spawn(process.execPath, [FERRY, 'serve', '--bundle', b.dir, '--listen', `127.0.0.1:${port}`, '--workers', '2'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    expect([code, stderr]).toEqual([2, expect.stringMatching(/^error\[SERVE_LISTEN\]: cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE[\s\S]*hint: Another process holds that port/m)]);
    const bad = spawn(process.execPath, [FERRY, 'serve', '--bundle', b.dir, '--workers', 'many'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let badErr = '';
    bad.stderr!.on('data', (c: Buffer) => (badErr += c.toString()));
    expect(await new Promise((r) => bad.once('exit', r))).toBe(2);
    expect(badErr).toMatch(/--workers must be an integer ≥ 1, not "many"/);
  });
});
