import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderBackupUnits, renderServeUnit } from '../../src/install/units.js';
import { execFileP, tmpdir, which } from '../helpers/peers.js';

let work: string;
let hasAnalyze = false;
beforeAll(async () => {
  work = await tmpdir('ferry-units-');
  hasAnalyze = await which('systemd-analyze');
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

/** systemd-analyze verify: exit status and every warning it prints. */
async function verify(unitText: string): Promise<{ code: number; stderr: string }> {
  const file = path.join(work, 'ferry-serve.service');
  await fs.writeFile(file, unitText);
  return execFileP('systemd-analyze', ['verify', file]).then(
    (r) => ({ code: 0, stderr: r.stderr }),
    (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
  );
}

describe('ferry-serve.service under systemd-analyze', () => {
  it('verifies with no warnings, and the check catches a broken unit', async (ctx) => {
    if (!hasAnalyze) ctx.skip();
    // verify checks that ExecStart's program exists, so point it at this machine's node.
    const ferryMjs = path.join(work, 'ferry.mjs');
    await fs.writeFile(ferryMjs, '');
    const unit = renderServeUnit({ listen: '0.0.0.0:5443', tlsCert: '/etc/ferry/pki/registry.crt', tlsKey: '/etc/ferry/pki/registry.key', node: process.execPath, ferry: ferryMjs, bundleDir: '/srv/ferry bundle' });
    expect(await verify(unit)).toEqual({ code: 0, stderr: '' });
    const bogus = await verify(unit.replace('Restart=always', 'Restart=always\nRestartBogus=1'));
    expect(bogus.stderr).toMatch(/Unknown key 'RestartBogus'/);
    const missing = await verify(renderServeUnit({ listen: '0.0.0.0:5443', tlsCert: '/c', tlsKey: '/k', node: path.join(work, 'no-node'), ferry: ferryMjs }));
    expect(missing.code).not.toBe(0);
  });
});

describe('ferry-backup.service and .timer under systemd-analyze', () => {
  it('verify with no warnings, the service and its timer together', async (ctx) => {
    if (!hasAnalyze) ctx.skip();
    const ferryMjs = path.join(work, 'ferry.mjs');
    await fs.writeFile(ferryMjs, '');
    const dir = path.join(work, 'backup-units');
    await fs.mkdir(dir, { recursive: true });
    const u = renderBackupUnits({ node: process.execPath, ferry: ferryMjs });
    await fs.writeFile(path.join(dir, 'ferry-backup.service'), u.service);
    await fs.writeFile(path.join(dir, 'ferry-backup.timer'), u.timer);
    const r = await execFileP('systemd-analyze', ['verify', path.join(dir, 'ferry-backup.service'), path.join(dir, 'ferry-backup.timer')]).then(
      (x) => ({ code: 0, stderr: x.stderr }),
      (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
    );
    expect(r).toEqual({ code: 0, stderr: '' });
    // Every 6 hours: four elapses a day.
    const cal = await execFileP('systemd-analyze', ['calendar', '--iterations', '5', '00/6:00']);
    const times = [...cal.stdout.matchAll(/(\d{2}):00:00/g)].map((m) => m[1]);
    expect(new Set(times)).toEqual(new Set(['00', '06', '12', '18']));
  });
});
