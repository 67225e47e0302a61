import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FERRY_VERSION, INSTALL_SH } from '../../src/bundle/format.js';
import { archOf, archOfUname, nodeArchOf } from '../../src/util/platform.js';
import { shQuote, shWord } from '../../src/util/shell.js';
import { ROOT } from '../helpers/cli.js';

/** Code lines of src/ (comments left out) where `re` matches, as file:line, outside the files allowed to hold it. */
function occurrences(re: RegExp, allowed: string[], under = 'src'): string[] {
  const dir = path.join(ROOT, under);
  const files = (readdirSync(dir, { recursive: true }) as string[]).filter((f) => f.endsWith('.ts'));
  return files.flatMap((f) => {
    const rel = path.join(under, f);
    if (allowed.includes(rel)) return [];
    return readFileSync(path.join(dir, f), 'utf8')
      .split('\n')
      .flatMap((l, i) => (!/^\s*(\*|\/\/|\/\*)/.test(l) && re.test(l) ? [`${rel}:${i + 1}`] : []));
  });
}

describe('each fact written once', () => {
  it("ferry's version: package.json and FERRY_VERSION agree", () => {
    expect(JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version).toBe(FERRY_VERSION);
  });

  it('the arch mapping lives in src/util/platform.ts, and install.sh takes its cases from there', () => {
    expect(occurrences(/x86_64|aarch64|'x64'/, ['src/util/platform.ts'])).toEqual([]);
    expect([archOf('x64'), archOf('arm64'), archOfUname('x86_64\n'), archOfUname('aarch64'), archOfUname('mips'), nodeArchOf('linux/amd64')]).toEqual(['amd64', 'arm64', 'amd64', 'arm64', undefined, 'x64']);
    expect(INSTALL_SH).toContain('  x86_64|amd64) arch=amd64 ;;\n  aarch64|arm64) arch=arm64 ;;\n');
  });

  it('shell quoting lives in src/util/shell.ts', () => {
    expect(occurrences(/'\\\\''/, ['src/util/shell.ts'])).toEqual([]);
    expect([shQuote("it's"), shWord('a/b.tar'), shWord('a b')]).toEqual([`'it'\\''s'`, 'a/b.tar', "'a b'"]);
  });

  it('the cluster FQDN default lives in src/spec/answers.ts', () => {
    expect(occurrences(/k8s-cluster\.\$\{/, ['src/spec/answers.ts'])).toEqual([]);
  });

  it("ferry's host paths live in src/install/paths.ts", () => {
    expect(occurrences(/(^|[\s='"`:])\/(etc\/ferry|var\/lib\/ferry|usr\/local\/bin|opt\/cni)\b/, ['src/install/paths.ts'], 'src/install')).toEqual([]);
  });
});
