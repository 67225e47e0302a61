import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Codes, FerryError, HostError } from '../errors.js';
import type { Reporter } from '../util/progress.js';
import type { Host } from './host.js';
import { STATE_DIR } from './paths.js';

/**
 * One idempotent step: `check` says whether the host is already as the step wants it (read-only),
 * `apply` makes it so. A re-run skips what checks out and continues where a failure stopped.
 */
export interface Step {
  id: string;
  title: string;
  check(): Promise<boolean>;
  apply(log: (line: string) => void): Promise<void>;
  /** A check-only step (preflight) runs every time and is not re-checked after it applies. */
  always?: boolean;
}

export interface PlanEntry {
  id: string;
  title: string;
  /** Whether the host is as the step wants it (before a dry run; after a real run). */
  done: boolean;
  /** todo/done in a dry run; applied, skipped (already done) or checked (preflight) in a real run. */
  status: 'todo' | 'done' | 'applied' | 'skipped' | 'checked';
  /** How long the step took in a real run, rounded to 0.1 s. */
  seconds?: number;
}

export interface RunOutcome {
  /** Steps that changed the host. */
  applied: string[];
  /** Steps whose check passed: nothing to do. */
  skipped: string[];
  /** Check-only steps (preflight): they ran, and change nothing. */
  checked: string[];
  /** Every step with what happened to it and how long it took: the same shape a dry run lists. */
  steps: PlanEntry[];
  logFile: string;
}

const secondsSince = (t0: number) => Math.round((Date.now() - t0) / 100) / 10;

export async function describePlan(steps: Step[]): Promise<PlanEntry[]> {
  const out: PlanEntry[] = [];
  for (const s of steps) {
    const done = await s.check().catch(() => false);
    out.push({ id: s.id, title: s.title, done, status: done ? 'done' : 'todo' });
  }
  return out;
}

export function formatPlan(entries: PlanEntry[]): string {
  return entries.map((e, i) => `${String(i + 1).padStart(2)}. [${e.done ? 'done' : 'todo'}] ${e.id.padEnd(22)} ${e.title}${e.seconds === undefined ? '' : ` (${e.seconds.toFixed(1)}s)`}`).join('\n');
}

/** Runs the steps in order, logging each to /var/log/ferry/<run>.log under the host root. */
export async function runPlan(host: Host, name: string, steps: Step[], reporter: Reporter): Promise<RunOutcome> {
  const logDir = host.p('/var/log/ferry');
  await fs.mkdir(logDir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const logFile = path.join(logDir, `${name}-${stamp}.log`);
  const log = await fs.open(logFile, 'a', 0o600);
  const write = async (line: string) => {
    await log.write(`${new Date().toISOString()} ${host.redact(line)}\n`);
  };
  const applied: string[] = [];
  const skipped: string[] = [];
  const checked: string[] = [];
  const entries: PlanEntry[] = [];
  try {
    for (const [i, s] of steps.entries()) {
      const label = `[${i + 1}/${steps.length}] ${s.title}`;
      const t0 = Date.now();
      if (await s.check()) {
        skipped.push(s.id);
        entries.push({ id: s.id, title: s.title, done: true, status: 'skipped', seconds: secondsSince(t0) });
        reporter.info(`${label}: already done`);
        await write(`step ${s.id}: check passed, skipped`);
        continue;
      }
      reporter.info(`${label}`);
      await write(`step ${s.id}: applying`);
      const lines: Promise<void>[] = [];
      try {
        await s.apply((line) => {
          lines.push(write(`  ${s.id}: ${line}`));
          reporter.verbose(`  ${host.redact(line)}`);
        });
      } catch (e) {
        await Promise.all(lines);
        await write(`step ${s.id}: FAILED: ${(e as Error).message}`);
        // A FerryError keeps its class, code and exit; only the step's name and the log are added.
        if (e instanceof FerryError) throw e.withContext(`step "${s.title}" failed`, `Fix the cause and re-run; the log is ${logFile}.`);
        throw new HostError(Codes.installStep, `step "${s.title}" failed: ${(e as Error).message}`, { hint: `Fix the cause and re-run: finished steps are skipped. The log is ${logFile}.`, cause: e });
      }
      await Promise.all(lines);
      if (!s.always && !(await s.check())) {
        await write(`step ${s.id}: applied, but its check still fails`);
        throw new HostError(Codes.installStep, `step "${s.title}" ran but the host is still not as it should be`, { hint: `See ${logFile}.` });
      }
      (s.always ? checked : applied).push(s.id);
      const seconds = secondsSince(t0);
      entries.push({ id: s.id, title: s.title, done: true, status: s.always ? 'checked' : 'applied', seconds });
      reporter.info(`${' '.repeat(String(i + 1).length + String(steps.length).length + 3)} done in ${seconds.toFixed(1)}s`);
      await write(`step ${s.id}: done in ${seconds.toFixed(1)}s`);
    }
  } finally {
    await log.close();
  }
  return { applied, skipped, checked, steps: entries, logFile };
}

/**
 * Runs fn while holding a lock file of this node (its pid inside): an operation killed on the
 * machine that started it leaves its node's part running, and a re-run must wait for it, not race it.
 * A lock whose process is gone is taken over.
 */
export async function withHostLock<T>(host: Host, name: string, fn: () => Promise<T>, o: { waitMs?: number; onWait?: (pid: number) => void } = {}): Promise<T> {
  const file = host.p(`${STATE_DIR}/${name}.lock`);
  await fs.mkdir(path.dirname(file), { recursive: true });
  const end = Date.now() + (o.waitMs ?? 30 * 60_000);
  let told = 0;
  for (;;) {
    try {
      await fs.writeFile(file, `${process.pid}\n`, { flag: 'wx' });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number((await fs.readFile(file, 'utf8').catch(() => '')).trim());
      let alive = false;
      try {
        alive = pid > 0 && process.kill(pid, 0);
      } catch (err) {
        alive = (err as NodeJS.ErrnoException).code === 'EPERM';
      }
      if (!alive) {
        await fs.rm(file, { force: true });
        continue;
      }
      if (Date.now() > end) throw new HostError(Codes.installStep, `another ferry (pid ${pid}) is running ${name} on this node`, { hint: `Wait for it to end (or stop it), then run the command again; ${file} names it.` });
      if (told !== pid) o.onWait?.(pid);
      told = pid;
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
  try {
    return await fn();
  } finally {
    await fs.rm(file, { force: true });
  }
}
