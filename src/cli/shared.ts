import path from 'node:path';
import type { Command } from 'commander';
import { specBaseDir } from '../util/paths.js';
import type { GlobalOptions } from './output.js';

/** `--help` text with examples, the same on every command. */
export const examples = (lines: string[]) => `\nExamples:\n${lines.map((l) => `  $ ${l}`).join('\n')}\n`;

export const globals = (cmd: Command): GlobalOptions => cmd.optsWithGlobals() as GlobalOptions;

/** The lock beside bundle-spec/ (or beside the spec when it lives elsewhere). */
export const defaultLock = (spec: string) => path.join(specBaseDir(spec), 'images.lock');

/** A repeatable option. */
export const collect = (v: string, prev: string[] = []) => [...prev, v];

/** A repeatable option that also takes comma-separated lists. */
export const collectCsv = (v: string, prev: string[] = []) => [...prev, ...v.split(',').filter(Boolean)];

/** --platform on the commands that read a spec: this run carries only these of spec.platforms. */
export const addPlatformOption = (cmd: Command): Command =>
  cmd.option('--platform <os/arch>', "only these of the spec's platforms, e.g. linux/amd64 (repeatable or comma-separated)", collectCsv);
