import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Codes, FerryError, HostError } from '../errors.js';
import type { Reporter } from '../util/progress.js';
import type { Host } from './host.js';

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
  done: boolean;
}

export interface RunOutcome {
  /** Steps that changed the host. */
  applied: string[];
  /** Steps whose check passed: nothing to do. */
  skipped: string[];
  /** Check-only steps (preflight): they ran, and change nothing. */
  checked: string[];
  logFile: string;
}

export async function describePlan(steps: Step[]): Promise<PlanEntry[]> {
  const out: PlanEntry[] = [];
  for (const s of steps) out.push({ id: s.id, title: s.title, done: await s.check().catch(() => false) });
  return out;
}

export function formatPlan(entries: PlanEntry[]): string {
  return entries.map((e, i) => `${String(i + 1).padStart(2)}. [${e.done ? 'done' : 'todo'}] ${e.id.padEnd(22)} ${e.title}`).join('\n');
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
  try {
    for (const [i, s] of steps.entries()) {
      const label = `[${i + 1}/${steps.length}] ${s.title}`;
      if (await s.check()) {
        skipped.push(s.id);
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
      await write(`step ${s.id}: done`);
    }
  } finally {
    await log.close();
  }
  return { applied, skipped, checked, logFile };
}
