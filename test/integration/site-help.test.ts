import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/cli.js';
import { execFileP } from '../helpers/peers.js';

/** The site in a box's help: only asked for here, never a command that brings a site up. */
describe('npm run site -- --help', () => {
  for (const args of [['--help'], ['-h'], ['help'], []]) {
    it(`prints the help on stdout and exits 0 for ${JSON.stringify(args.join(' '))}`, async () => {
      const r = await execFileP(`${ROOT}/node_modules/.bin/tsx`, ['scripts/site/site.ts', ...args], { cwd: ROOT });
      expect(r.stdout).toMatch(/^The site in a box: real Kubernetes/);
      expect(r.stdout).toMatch(/npm run site -- up \[--servers N\]/);
      expect(r.stdout).toMatch(/the first run builds them from source: tens of\nminutes on 2 cores/);
      expect(r.stderr).not.toMatch(/error\[/);
    }, 60_000);
  }

  it('an unknown command is an error with the help, exit 2', async () => {
    const r = await execFileP(`${ROOT}/node_modules/.bin/tsx`, ['scripts/site/site.ts', 'frobnicate'], { cwd: ROOT }).then(() => undefined, (e: { code: number; stderr: string }) => e);
    expect(r?.code).toBe(2);
    expect(r?.stderr).toMatch(/^error\[SITE_USAGE\]: unknown command frobnicate\nThe site in a box/);
  }, 60_000);
});
