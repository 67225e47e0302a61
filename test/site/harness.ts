import { spawn } from 'node:child_process';
import path from 'node:path';
import { ROOT } from '../../scripts/site/config.js';

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
