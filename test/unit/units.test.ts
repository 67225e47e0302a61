import { describe, expect, it } from 'vitest';
import { backupTimerStep } from '../../src/install/backup-timer.js';
import { RecordingHost } from '../../src/install/recording-host.js';
import { renderBackupUnits, renderServeUnit, renderStateMirrorUnits, systemdArg } from '../../src/install/units.js';
import { tmpdir } from '../helpers/peers.js';

const base = { listen: '0.0.0.0:5443', tlsCert: '/etc/ferry/pki/registry.crt', tlsKey: '/etc/ferry/pki/registry.key' };
const key = (unit: string, k: string) => unit.split('\n').filter((l) => l.startsWith(`${k}=`)).map((l) => l.slice(k.length + 1));

describe('ferry-serve.service', () => {
  it('runs the bundled runtime on the bundle, before kubelet, restarting, hardened', () => {
    const u = renderServeUnit(base);
    expect(key(u, 'ExecStart')).toEqual(['/var/lib/ferry/runtime/node --disable-warning=DEP0040 --disable-warning=DEP0169 /var/lib/ferry/ferry/ferry.mjs serve --bundle /var/lib/ferry/bundle --listen 0.0.0.0:5443 --tls-cert /etc/ferry/pki/registry.crt --tls-key /etc/ferry/pki/registry.key']);
    expect(key(u, 'Before')).toEqual(['kubelet.service']);
    expect(key(u, 'Restart')).toEqual(['always']);
    // The default --workers (one per core); reload rolls them, stop goes to the primary.
    expect(key(u, 'ExecReload')).toEqual(['/bin/kill -HUP $MAINPID']);
    expect(key(u, 'KillMode')).toEqual(['mixed']);
    expect(key(u, 'NoNewPrivileges')).toEqual(['yes']);
    expect(key(u, 'ProtectSystem')).toEqual(['strict']);
    expect(key(u, 'ReadOnlyPaths')).toEqual(['/var/lib/ferry /etc/ferry/pki/registry.crt /etc/ferry/pki/registry.key']);
    expect(key(u, 'CapabilityBoundingSet')).toEqual(['']);
    expect(key(u, 'WantedBy')).toEqual(['multi-user.target']);
    expect(u.indexOf('[Unit]')).toBeLessThan(u.indexOf('[Service]'));
    expect(u.indexOf('[Service]')).toBeLessThan(u.indexOf('[Install]'));
  });

  it('keeps only CAP_NET_BIND_SERVICE for a low port, and grants it to a non-root user', () => {
    expect(key(renderServeUnit({ ...base, listen: '0.0.0.0:443' }), 'CapabilityBoundingSet')).toEqual(['CAP_NET_BIND_SERVICE']);
    const u = renderServeUnit({ ...base, listen: '0.0.0.0:443', user: 'ferry' });
    expect(key(u, 'User')).toEqual(['ferry']);
    expect(key(u, 'AmbientCapabilities')).toEqual(['CAP_NET_BIND_SERVICE']);
  });

  it('quotes arguments so systemd neither splits nor expands them', () => {
    expect(systemdArg('/plain/path')).toBe('/plain/path');
    expect(systemdArg('/with space/x')).toBe('"/with space/x"');
    expect(systemdArg('/100%/$HOME')).toBe('/100%%/$$HOME');
    expect(systemdArg('/a"b\\c')).toBe('"/a\\"b\\\\c"');
    const u = renderServeUnit({ ...base, bundleDir: '/srv/my bundle' });
    expect(key(u, 'ExecStart')[0]).toContain('--bundle "/srv/my bundle" --listen');
  });

  it('refuses relative paths, control characters and a listen address without a port', () => {
    expect(() => renderServeUnit({ ...base, tlsKey: 'registry.key' })).toThrow(expect.objectContaining({ code: 'UNIT_INVALID' }));
    expect(() => renderServeUnit({ ...base, bundleDir: '/a\nExecStartPre=/bin/rm' })).toThrow(expect.objectContaining({ code: 'UNIT_INVALID' }));
    expect(() => renderServeUnit({ ...base, listen: '0.0.0.0' })).toThrow(expect.objectContaining({ code: 'UNIT_INVALID' }));
  });
});

describe('ferry-state-mirror.timer and its service', () => {
  it("run ferry state mirror every 30 s and soon after boot, once the node has an admin kubeconfig, writing only under /var/lib/ferry", () => {
    const { service, timer } = renderStateMirrorUnits();
    expect(key(service, 'ExecStart')).toEqual(['/var/lib/ferry/runtime/node --disable-warning=DEP0040 --disable-warning=DEP0169 /var/lib/ferry/ferry/ferry.mjs state mirror']);
    expect(key(service, 'Type')).toEqual(['oneshot']);
    expect(key(service, 'ConditionPathExists')).toEqual(['/etc/kubernetes/admin.conf']);
    expect(key(service, 'ReadWritePaths')).toEqual(['/var/lib/ferry']);
    expect(key(timer, 'OnBootSec')).toEqual(['30s']);
    expect(key(timer, 'OnUnitActiveSec')).toEqual(['30s']);
    expect(key(timer, 'WantedBy')).toEqual(['timers.target']);
  });
});

describe('ferry-backup.timer and its service', () => {
  it('save --local then prune every 6 hours (and once after boot when one was missed), on a control-plane node, writing only under /var/lib/ferry', () => {
    const { service, timer } = renderBackupUnits({ keep: 12 });
    const run = '/var/lib/ferry/runtime/node --disable-warning=DEP0040 --disable-warning=DEP0169 /var/lib/ferry/ferry/ferry.mjs';
    // Two ExecStart lines of a oneshot run in order, the second only when the first succeeded.
    expect(key(service, 'ExecStart')).toEqual([`${run} backup save --local`, `${run} backup prune --yes --keep 12`]);
    expect(key(service, 'Type')).toEqual(['oneshot']);
    expect(key(service, 'ConditionPathExists')).toEqual(['/etc/kubernetes/admin.conf']);
    expect(key(service, 'ReadWritePaths')).toEqual(['/var/lib/ferry']);
    expect(key(service, 'UMask')).toEqual(['0077']);
    expect(key(timer, 'OnCalendar')).toEqual(['00/6:00']);
    expect(key(timer, 'Persistent')).toEqual(['true']);
    expect(key(renderBackupUnits().service, 'ExecStart')[1]).toMatch(/--keep 28$/);
  });

  it('the install step makes the site key once (0600), writes the units and enables the timer; a joining server without a key is warned, not given a new one', async () => {
    const root = await tmpdir('ferry-backup-step-');
    const first = new RecordingHost(root);
    const logs: string[] = [];
    await backupTimerStep(first, { makeKey: true }).apply((l) => logs.push(l));
    const key32 = first.recorded.find((r) => r.kind === 'write' && r.path === '/etc/ferry/backup.key');
    expect(key32).toMatchObject({ mode: 0o600, size: 32 });
    expect(first.recorded.filter((r) => r.kind === 'write').map((r) => (r as { path: string }).path)).toEqual(expect.arrayContaining(['/etc/systemd/system/ferry-backup.service', '/etc/systemd/system/ferry-backup.timer', '/var/lib/ferry/state/backup-timer']));
    expect(first.recorded.filter((r) => r.kind === 'run').map((r) => (r as { command: string }).command)).toContain('systemctl enable --now ferry-backup.timer');
    expect(logs.join('\n')).toMatch(/copy it off-site/);

    const joining = new RecordingHost(root);
    const jl: string[] = [];
    await backupTimerStep(joining, { makeKey: false }).apply((l) => jl.push(l));
    expect(joining.recorded.some((r) => r.kind === 'write' && r.path === '/etc/ferry/backup.key')).toBe(false);
    expect(jl.join('\n')).toMatch(/warning: no backup key/);
  });
});
