import { promises as fs } from 'node:fs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { BundleFile } from '../../src/bundle/format.js';
import { Host } from '../../src/install/host.js';
import { nodeJoinSteps, type NodeJoinPayload } from '../../src/install/node-join.js';
import { DOWNLOADS_DIR, STATE_DIR } from '../../src/install/paths.js';
import { archOf, carriedBinaries, installUnits, unitBinariesMissing } from '../../src/install/node-steps.js';
import { describePlan, formatPlan, runPlan, type Step } from '../../src/install/plan.js';
import { ConsoleReporter } from '../../src/util/progress.js';
import { tmpdir } from '../helpers/peers.js';

/* Issue 12 items 4 and 6: steps say what they really do and how long they took; rates are rounded. */

afterEach(() => {
  vi.useRealTimers();
});

const file = (name: string, archive = false, platform = `linux/${archOf()}`): BundleFile => ({ name, version: 'v1', platform, path: `files/${name}/v1/x/${name}`, sha256: '0'.repeat(64), size: 1, archive, url: 'u' });

describe('the units and binaries steps', () => {
  it('names what the bundle carries for this machine, not a fixed list', () => {
    expect(carriedBinaries([file('kubeadm'), file('helm', true), file('kubelet', false, 'linux/s390x')])).toEqual(['kubeadm v1', 'helm v1']);
  });

  it('refuses units whose binaries the bundle lacks, naming each, before writing any unit', async () => {
    expect(unitBinariesMissing([file('kubelet'), file('containerd'), file('runc')])).toEqual([]);
    // runc may ride in containerd's archive.
    expect(unitBinariesMissing([file('kubelet'), file('containerd', true)])).toEqual([]);
    expect(unitBinariesMissing([file('kubelet', false, 'linux/s390x'), file('containerd')])).toEqual(['runc (for containerd.service)', 'kubelet (for kubelet.service)']);
    const host = new Host(await tmpdir());
    await expect(installUnits(host, true, [file('kubeadm')])).rejects.toMatchObject({
      code: 'BUNDLE_BINARY_MISSING',
      message: expect.stringContaining('the bundle carries no containerd (for containerd.service), runc (for containerd.service), kubelet (for kubelet.service)'),
    });
    await expect(fs.readdir(host.p('/etc'))).rejects.toThrow(/ENOENT/);
  });
});

describe('a joining node', () => {
  const payload: NodeJoinPayload = {
    role: 'agent', name: 'k8s-agent-01', ip: '10.0.0.21', domain: 'site.test', fqdn: 'k8s-cluster.site.test', serverIps: ['10.0.0.11'], firstServerIp: '10.0.0.11',
    registries: [], pauseImage: 'registry.k8s.io/pause:3.10', kubernetesVersion: 'v1.37.2', join: { token: 'abcdef.0123456789abcdef', caCertHash: `sha256:${'0'.repeat(64)}` },
  };
  // versions.json as the site serves it (paths below files/), as the binaries step keeps it.
  const versions = (files: BundleFile[]) => `${JSON.stringify(files.map((f) => ({ ...f, path: `${f.name}/${f.version}/${f.platform.replace('/', '-')}/${f.name}` })))}\n`;

  it("refuses its units when the site's binaries lack one they run, naming each, before writing any unit", async () => {
    const host = new Host(await tmpdir());
    await host.write(`${DOWNLOADS_DIR}/files/versions.json`, versions([file('kubeadm'), file('containerd', true), file('kubelet', false, 'linux/s390x')]));
    const units = nodeJoinSteps(host, payload).find((s) => s.id === 'units')!;
    await expect(units.apply(() => {})).rejects.toMatchObject({
      code: 'BUNDLE_BINARY_MISSING',
      message: `the bundle carries no kubelet (for kubelet.service) for linux/${archOf()}`,
    });
    await expect(fs.readdir(host.p('/etc'))).rejects.toThrow(/ENOENT/);
    expect(await host.read(`${STATE_DIR}/units`)).toBeUndefined();
  });
});

describe('a plan run', () => {
  it('records each step with its status and duration, the shape a dry run lists, and prints the durations', async () => {
    const host = new Host(await tmpdir());
    let done = false;
    const steps: Step[] = [
      { id: 'slow', title: 'take a while', check: async () => done, apply: async () => { await new Promise((r) => setTimeout(r, 250)); done = true; } },
      { id: 'ready', title: 'already so', check: async () => true, apply: async () => {} },
      { id: 'look', title: 'preflight', always: true, check: async () => false, apply: async () => {} },
    ];
    const before = await describePlan(steps);
    expect(before.map((s) => [s.id, s.status])).toEqual([['slow', 'todo'], ['ready', 'done'], ['look', 'todo']]);
    const lines: string[] = [];
    const stream = { write: (s: string) => lines.push(s), isTTY: false } as unknown as NodeJS.WriteStream;
    const r = await runPlan(host, 'test', steps, new ConsoleReporter({ verbosity: 'normal', stream, tty: false }));
    expect(r.steps.map((s) => [s.id, s.status, s.done])).toEqual([['slow', 'applied', true], ['ready', 'skipped', true], ['look', 'checked', true]]);
    expect(r.steps[0]!.seconds).toBeGreaterThanOrEqual(0.2);
    expect(Object.keys(r.steps[0]!).sort()).toEqual([...Object.keys(before[0]!), 'seconds'].sort());
    // The step slept 250 ms: at least 0.2 s is shown everywhere, and however long a loaded machine took, the same figure.
    const shown = (text: string, re: RegExp) => {
      const m = re.exec(text);
      expect(m, text).not.toBeNull();
      return m![1]!;
    };
    const printed = shown(lines.join(''), /^\s+done in (\d+\.\d)s$/m);
    expect(Number(printed)).toBeGreaterThanOrEqual(0.2);
    expect(shown(formatPlan(r.steps), /slow\s+take a while \((\d+\.\d)s\)/)).toBe(printed);
    expect(shown(await fs.readFile(r.logFile, 'utf8'), /step slow: done in (\d+\.\d)s/)).toBe(printed);
  });
});

describe('progress rates', () => {
  it('are whole bytes per second, never 63.505503810330225 B/s', () => {
    vi.useFakeTimers();
    const lines: string[] = [];
    const stream = { write: (s: string) => lines.push(s), isTTY: false } as unknown as NodeJS.WriteStream;
    const r = new ConsoleReporter({ verbosity: 'normal', stream, tty: false });
    r.blobStart(1000);
    r.bytes(127);
    vi.advanceTimersByTime(3_000);
    r.done();
    const rates = lines.join('').match(/ (\S+) B\/s/g) ?? [];
    expect(rates.length).toBeGreaterThan(0);
    for (const x of rates) expect(x).toMatch(/^ \d+ B\/s$/);
  });
});
