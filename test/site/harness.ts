import { spawn } from 'node:child_process';
import { afterAll, beforeAll, expect } from 'vitest';
import path from 'node:path';
import { ROOT, type Release } from '../../scripts/site/config.js';
import { loadState, type SiteState } from '../../scripts/site/state.js';

/** Runs `npm run site -- ARGS` (through tsx), passing its progress through to the test's stderr. */
export function site(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [path.join(ROOT, 'node_modules/tsx/dist/cli.mjs'), path.join(ROOT, 'scripts/site/site.ts'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d));
    c.stderr.on('data', (d: Buffer) => {
      stderr += d;
      process.stderr.write(d);
    });
    c.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

/** What a site test file asks of its site beyond its shape. */
export interface SiteOptions {
  /** The release it is installed at (default current; previous to prove an upgrade). */
  release?: Release;
}

/**
 * `site up ARGS`, after a `down`; with FERRY_SITE_REUSE=1 a site that is up with the same hosts and
 * release is used as it is (for working on one test file against a site kept by FERRY_SITE_KEEP=1).
 */
export async function siteUp(servers: number, agents: number, o: SiteOptions = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const s = loadState();
  const release = o.release ?? 'current';
  const want = [...Array.from({ length: servers }, (_, i) => `server-${i + 1}`), ...Array.from({ length: agents }, (_, i) => `agent-${i + 1}`)];
  if (process.env.FERRY_SITE_REUSE && s && (s.release ?? 'current') === release && JSON.stringify(s.hosts.map((h) => h.name)) === JSON.stringify(want)) {
    return site(['status', '--json']);
  }
  await site(['down']);
  return site(['up', '--servers', String(servers), '--agents', String(agents), '--release', release, '--json']);
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Retries fn until it resolves or ms have passed (then its last error); says how long it took. */
export async function within<T>(ms: number, fn: () => Promise<T>): Promise<{ value: T; seconds: number }> {
  const t0 = Date.now();
  for (;;) {
    try {
      return { value: await fn(), seconds: (Date.now() - t0) / 1000 };
    } catch (e) {
      if (Date.now() - t0 > ms) throw e;
      await pause(2500);
    }
  }
}

/**
 * A site of this shape (and release, default current) for the file's tests: up before them (then
 * `ready` on its state), down after unless FERRY_SITE_KEEP.
 */
export function siteForFile(servers: number, agents: number, ready: (s: SiteState) => Promise<void> | void, o: SiteOptions = {}): void {
  beforeAll(async () => {
    const r = await siteUp(servers, agents, o);
    expect(r.code, r.stderr.slice(-3000)).toBe(0);
    await ready(loadState()!);
  }, 3_600_000);
  afterAll(async () => {
    if (!process.env.FERRY_SITE_KEEP) await site(['down']);
  }, 300_000);
}
