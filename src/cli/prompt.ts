import { Codes, FerryError, UsageError } from '../errors.js';

/**
 * Every question ferry asks goes through here. Without a terminal it refuses, and says which flag
 * answers the question instead, so automation never hangs on a prompt.
 */
export function canPrompt(): boolean {
  return !!process.stdin.isTTY && !!process.stderr.isTTY && !process.env.CI;
}

function noTty(question: string, instead: string): FerryError {
  return new UsageError(Codes.promptNoTty, `ferry needs an answer to "${question}" but there is no terminal to ask on`, {
    hint: `Give the answer with ${instead}.`,
  });
}

/**
 * The operator pressed Ctrl-C at a prompt: not a failure of ferry. Not a FerryError, so that no
 * layer turns it into one; main() finds it anywhere in an error's cause chain and exits 130.
 */
export class PromptCancelled extends Error {
  constructor(readonly question: string) {
    super(`cancelled at "${question}"`);
    this.name = 'PromptCancelled';
  }
}

/** The PromptCancelled an error was caused by, however deep a step wrapped it. */
export function cancelledPrompt(e: unknown): PromptCancelled | undefined {
  for (let c = e, depth = 0; c && depth < 16; c = (c as { cause?: unknown }).cause, depth++) {
    if (c instanceof PromptCancelled) return c;
  }
  return undefined;
}

async function asking<T>(question: string, ask: () => Promise<T>): Promise<T> {
  try {
    return await ask();
  } catch (e) {
    // @inquirer/prompts rejects with ExitPromptError on Ctrl-C (SIGINT while it holds the terminal).
    if ((e as Error)?.name === 'ExitPromptError') throw new PromptCancelled(question);
    throw e;
  }
}

export async function confirm(question: string, instead: string, dflt = false): Promise<boolean> {
  if (!canPrompt()) throw noTty(question, instead);
  const { confirm: ask } = await import('@inquirer/prompts');
  return asking(question, () => ask({ message: question, default: dflt }, { output: process.stderr }));
}

export async function input(question: string, instead: string, opts: { default?: string; validate?: (v: string) => true | string } = {}): Promise<string> {
  if (!canPrompt()) throw noTty(question, instead);
  const { input: ask } = await import('@inquirer/prompts');
  return asking(question, () => ask({ message: question, default: opts.default, validate: opts.validate }, { output: process.stderr }));
}

export async function select<T extends string>(question: string, instead: string, choices: { value: T; name?: string; description?: string }[], dflt?: T, pageSize?: number): Promise<T> {
  if (!canPrompt()) throw noTty(question, instead);
  const { select: ask } = await import('@inquirer/prompts');
  return asking(question, () => ask<T>({ message: question, choices, default: dflt, ...(pageSize ? { pageSize } : {}) }, { output: process.stderr }));
}
