import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomLayer, writeImage } from '../../fixtures/images.js';
import { RegistryClient } from '../../src/oci/client.js';
import { Pusher } from '../../src/oci/copy.js';
import { Layout } from '../../src/oci/layout.js';
import { ferry, FERRY } from '../helpers/cli.js';
import { listTree, miniProject, type MiniProject } from '../helpers/mini-bundle.js';
import { execFileP, startRegistry, tmpdir, type RegistryPeer } from '../helpers/peers.js';
import { writeSpec } from '../helpers/spec.js';

/*
 * Issue 10 item 12: an interrupted run leaves nothing behind that the next run does not use. A
 * build stopped by SIGINT or SIGTERM removes its temp archive; temp files of dead ferry processes
 * are swept at the next start (only ferry's own names, only dead writers); a pull stopped mid-blob
 * keeps the bytes it checked, and the next pull resumes them with a Range request.
 */
let work: string;

beforeAll(async () => {
  work = await tmpdir('ferry-interrupted-');
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

/** Starts the real CLI and resolves how it ended. */
function start(args: string[], env: NodeJS.ProcessEnv): { proc: ChildProcess; ended: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> } {
  const proc = spawn(process.execPath, [FERRY, ...args], { env: { ...process.env, ...env } });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const ended = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((r) => proc.on('exit', (code, signal) => r({ code, signal, stderr })));
  return { proc, ended };
}

/** Polls until some file in `dir` matching `re` has at least `min` bytes; returns its path. */
async function waitForFile(dir: string, re: RegExp, min: number, timeoutMs = 60_000): Promise<string> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    for (const n of await fs.readdir(dir).catch(() => [] as string[])) {
      if (!re.test(n)) continue;
      const st = await fs.stat(path.join(dir, n)).catch(() => undefined);
      if (st && st.size >= min) return path.join(dir, n);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`no file matching ${re} of ${min} bytes in ${dir}`);
}

/** A pid that no process has any more. */
async function deadPid(): Promise<number> {
  const p = spawn('true');
  await new Promise((r) => p.on('exit', r));
  return p.pid!;
}

describe('an interrupted build leaves no temp files, and the next build sweeps dead ones', () => {
  let p: MiniProject;
  beforeAll(async () => {
    p = await miniProject(path.join(work, 'build'), { binaries: { big1: 120 << 20, big2: 120 << 20 } });
    // Warm the cache, so a build's time is the archive it writes.
    const warm = await p.build(path.join(work, 'warm', 'mini.ferry.tar'));
    expect(warm.code, warm.stderr).toBe(0);
    await fs.rm(path.join(work, 'warm'), { recursive: true });
  }, 180_000);

  it.each([
    ['SIGINT', 'one file', []],
    ['SIGTERM', 'one file', []],
    ['SIGINT', 'parts', ['--split-size', '50MiB']],
  ] as [NodeJS.Signals, string, string[]][])('%s while the archive is written (%s) removes the temp archive', async (sig, _what, extra) => {
    const out = path.join(work, `out-${sig}-${extra.length}`, 'mini.ferry.tar');
    await fs.mkdir(path.dirname(out), { recursive: true });
    const run = start(['bundle', 'build', p.specFile, '--key', p.key, '--out', out, ...extra], p.env);
    await waitForFile(path.dirname(out), /^\.mini\.ferry\.tar.*\.tmp$/, 1 << 20);
    run.proc.kill(sig);
    const r = await run.ended;
    expect(r.signal).toBe(sig);
    expect(await fs.readdir(path.dirname(out))).toEqual([]);
  });

  it('a build sweeps the temp files dead ferry processes left for its output, and nothing else', async () => {
    const dir = path.join(work, 'sweep');
    await fs.mkdir(dir, { recursive: true });
    const dead = await deadPid();
    const live = spawn('sleep', ['60']);
    try {
      const names = {
        deadWhole: `.mini.ferry.tar.${dead}.0123456789ab.tmp`,
        deadPart: `.mini.ferry.tar.part002.${dead}.0123456789ab.tmp`,
        livePid: `.mini.ferry.tar.${live.pid}.0123456789ab.tmp`,
        otherTarget: `.other.ferry.tar.${dead}.0123456789ab.tmp`,
        notFerrys: '.mini.ferry.tar.notes.tmp',
        userFile: 'notes.txt',
      };
      for (const n of Object.values(names)) await fs.writeFile(path.join(dir, n), 'x'.repeat(1000));
      const r = await p.build(path.join(dir, 'mini.ferry.tar'));
      expect(r.code, r.stderr).toBe(0);
      expect((await fs.readdir(dir)).sort()).toEqual([names.livePid, names.otherTarget, names.notFerrys, names.userFile, 'mini.ferry.tar'].sort());
    } finally {
      live.kill();
    }
  });
});

describe('an interrupted pull keeps what it checked, and the next pull resumes it with Range', () => {
  let reg: RegistryPeer;
  let throttle: { host: string; slow: boolean; requests: { url: string; range?: string; bytes: number }[]; close(): Promise<void> };
  let layerHex: string;
  let layerSize: number;

  beforeAll(async () => {
    reg = await startRegistry();
    const fx = await Layout.open(path.join(work, 'fx'));
    const layer = await randomLayer(fx, 'big', 24 << 20);
    layerHex = layer.desc.digest.slice(7);
    layerSize = layer.desc.size;
    const { platform: _p, ...img } = await writeImage(fx, { platform: 'linux/amd64', layers: [layer] });
    await new Pusher({ client: new RegistryClient({ retries: 2, backoffMs: 5 }), store: fx }).push(img, { repo: { registry: reg.host, repository: 'big/img' }, tag: 'v1' });
    // A pass-through to the real registry that can serve blobs slowly, and records what it served.
    const state = { host: '', slow: true, requests: [] as { url: string; range?: string; bytes: number }[], close: async () => {} };
    const server = http.createServer((req, res) => {
      const rec = { url: req.url ?? '', ...(req.headers.range ? { range: req.headers.range } : {}), bytes: 0 };
      state.requests.push(rec);
      const up = http.request({ host: '127.0.0.1', port: Number(reg.host.split(':')[1]), method: req.method, path: req.url, headers: { ...req.headers, host: reg.host } }, async (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        const slow = state.slow && req.url!.includes('/blobs/');
        for await (const c of ur) {
          for (let o = 0; o < (c as Buffer).length; o += 32 << 10) {
            const piece = (c as Buffer).subarray(o, o + (32 << 10));
            if (!res.write(piece)) await new Promise((r) => res.once('drain', r));
            rec.bytes += piece.length;
            if (slow) await new Promise((r) => setTimeout(r, 10));
          }
        }
        res.end();
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    state.host = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    state.close = () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
    throttle = state;
  }, 120_000);
  afterAll(async () => {
    await throttle?.close();
    await reg?.stop();
  });

  it('SIGINT mid-blob, then a second pull asks only for the rest and stores the right blob', async () => {
    const dir = path.join(work, 'pull');
    const spec = await writeSpec(dir, [{ ref: `${throttle.host}/big/img:v1`, platforms: ['linux/amd64'] }], { platforms: ['linux/amd64'] });
    const env = { FERRY_CACHE_DIR: path.join(dir, 'cache') };
    expect((await ferry(['lock', spec], { env })).code).toBe(0);
    const blobs = path.join(dir, 'cache', 'oci', 'blobs', 'sha256');
    const args = ['images', 'pull', spec, '--out', path.join(dir, 'store')];

    const first = start(args, env);
    await waitForFile(blobs, new RegExp(`^\\.${layerHex}\\.\\d+\\.[0-9a-f]{12}\\.tmp$`), 4 << 20);
    first.proc.kill('SIGINT');
    expect((await first.ended).signal).toBe('SIGINT');
    const partial = (await fs.readdir(blobs)).filter((n) => n.startsWith(`.${layerHex}.`));
    expect(partial).toHaveLength(1);
    const kept = (await fs.stat(path.join(blobs, partial[0]!))).size;
    expect(kept).toBeGreaterThanOrEqual(1 << 20);
    expect(kept).toBeLessThan(layerSize);

    throttle.slow = false;
    throttle.requests.length = 0;
    const second = await ferry(args, { env });
    expect(second.code, second.stderr).toBe(0);
    const gets = throttle.requests.filter((r) => r.url.endsWith(`/blobs/sha256:${layerHex}`));
    expect(gets).toHaveLength(1);
    expect(gets[0]!.range).toBe(`bytes=${kept}-`);
    expect(gets[0]!.bytes).toBe(layerSize - kept);
    // The stored blob is the real one, and no partial is left.
    const { stdout } = await execFileP('sha256sum', [path.join(blobs, layerHex)]);
    expect(stdout.split(' ')[0]).toBe(layerHex);
    expect((await listTree(blobs)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    expect(await fs.stat(path.join(dir, 'store', 'blobs', 'sha256', layerHex))).toBeTruthy();
  });

  it('a partial that does not check out (damaged on disk) is fetched whole instead, and the pull succeeds', async () => {
    const dir = path.join(work, 'pull-damaged');
    const spec = await writeSpec(dir, [{ ref: `${throttle.host}/big/img:v1`, platforms: ['linux/amd64'] }], { platforms: ['linux/amd64'] });
    const env = { FERRY_CACHE_DIR: path.join(dir, 'cache') };
    expect((await ferry(['lock', spec], { env })).code).toBe(0);
    const blobs = path.join(dir, 'cache', 'oci', 'blobs', 'sha256');
    await fs.mkdir(blobs, { recursive: true });
    await fs.writeFile(path.join(blobs, `.${layerHex}.${await deadPid()}.0123456789ab.tmp`), Buffer.alloc(3 << 20, 7));
    throttle.requests.length = 0;
    const r = await ferry([...['images', 'pull', spec, '--out', path.join(dir, 'store')], '--verbose'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('does not check out; fetching it whole');
    const gets = throttle.requests.filter((q) => q.url.endsWith(`/blobs/sha256:${layerHex}`));
    expect(gets.map((g) => g.range)).toEqual([`bytes=${3 << 20}-`, undefined]);
    const { stdout } = await execFileP('sha256sum', [path.join(blobs, layerHex)]);
    expect(stdout.split(' ')[0]).toBe(layerHex);
    expect((await fs.readdir(blobs)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('a dead pull\'s partial of a blob that is already complete is swept at the next start', async () => {
    const dir = path.join(work, 'pull');
    const blobs = path.join(dir, 'cache', 'oci', 'blobs', 'sha256');
    const stale = path.join(blobs, `.${layerHex}.${await deadPid()}.0123456789ab.tmp`);
    await fs.writeFile(stale, 'leftover');
    const spec = path.join(dir, 'bundle-spec', 'test.yaml');
    const r = await ferry(['images', 'pull', spec, '--out', path.join(dir, 'store')], { env: { FERRY_CACHE_DIR: path.join(dir, 'cache') } });
    expect(r.code, r.stderr).toBe(0);
    await expect(fs.access(stale)).rejects.toThrow();
  });
});
