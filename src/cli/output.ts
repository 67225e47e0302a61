import { Codes, ExitCode, type FerryError, InternalError, isFerryError } from '../errors.js';
import { ConsoleReporter, type Reporter, type Verbosity } from '../util/progress.js';

export interface GlobalOptions {
  json?: boolean;
  quiet?: boolean;
  verbose?: boolean;
}

export interface Output {
  json: boolean;
  verbosity: Verbosity;
  reporter: Reporter;
  /** A result: JSON on stdout with --json (an object gets `ok: true`), else the human text. */
  result(human: string, data: unknown): void;
  /** Human text on stdout that --json leaves out (its one document comes from result or the error). */
  human(text: string): void;
}

/** What a shell reports for a process ended by SIGINT; used when Ctrl-C ends a prompt. */
export const CANCELLED_EXIT = 130;

export function makeOutput(g: GlobalOptions): Output {
  const verbosity: Verbosity = g.quiet ? 'quiet' : g.verbose ? 'verbose' : 'normal';
  const json = !!g.json;
  // With --json, stdout carries only the result; progress still goes to stderr.
  const reporter = new ConsoleReporter({ verbosity: json && !g.verbose ? 'quiet' : verbosity });
  return {
    json,
    verbosity,
    reporter,
    result(human, data) {
      if (json) process.stdout.write(`${JSON.stringify(withOk(data), null, 2)}\n`);
      else this.human(human);
    },
    human(text) {
      if (!json && text && verbosity !== 'quiet') process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
    },
  };
}

const withOk = (data: unknown) => (data && typeof data === 'object' && !Array.isArray(data) ? { ok: true, ...data } : data);

/** Ctrl-C at a prompt: a calm line (and with --json a result that says so), exit 130. */
export function reportCancelled(question: string, json: boolean): number {
  if (json) process.stdout.write(`${JSON.stringify({ ok: false, cancelled: true, question }, null, 2)}\n`);
  process.stderr.write(`\ncancelled at "${question}": nothing more was done.\n`);
  return CANCELLED_EXIT;
}

/** The one error boundary: prints `error[CODE]: message` and a hint, and picks the exit code. */
export function reportError(e: unknown, json: boolean): number {
  const fe: FerryError = isFerryError(e)
    ? e
    : new InternalError(Codes.internal, (e as Error)?.message ?? String(e), {
        hint: 'This is a bug in ferry. Re-run with --verbose and report the output.',
        cause: e,
      });
  if (json) {
    process.stdout.write(`${JSON.stringify({ ok: false, error: fe.toJSON() }, null, 2)}\n`);
  }
  process.stderr.write(`error[${fe.code}]: ${fe.message}\n`);
  if (fe.hint) process.stderr.write(`  hint: ${fe.hint}\n`);
  if (process.env.FERRY_DEBUG && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
  return ExitCode[fe.exit];
}
