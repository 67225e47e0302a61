import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { beginOperation } from '../../src/cluster/journal.js';
import { kubeLease } from '../../src/cluster/lease.js';
import { openSiteState } from '../../src/cluster/site.js';
import type { SiteState } from '../../src/cluster/state.js';
import { getLease } from '../../src/kube/client.js';
import { ferry } from '../helpers/cli.js';
import { startFakeApi } from '../helpers/fake-api.js';
import { tmpdir } from '../helpers/peers.js';

/* `ferry state …` as an operator runs it, against the STAND-IN API server (test/helpers/fake-apiserver.mjs). */

const state: SiteState = {
  apiVersion: 'ferry.dev/v1alpha1',
  kind: 'SiteState',
  answers: { domain: 'site.test', clusterFqdn: 'k8s-cluster.site.test', podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' },
  nodes: [{ name: 'server-1', ip: '10.0.0.1', role: 'server', platform: 'linux/amd64', kubernetesVersion: 'v1.37.2', bundle: 'k8s-0.1.0', joinedAt: '2026-12-03T10:00:00.000Z' }],
  bundles: [{ id: 'k8s-0.1.0', name: 'k8s', version: '0.1.0', fingerprint: 'SHA256:x', kubernetesVersion: 'v1.37.2', checksums: `sha256:${'0'.repeat(64)}`, addedAt: '2026-12-03T10:00:00.000Z' }],
  current: 'k8s-0.1.0',
};

let dir: string;
let root: string;
let api: Awaited<ReturnType<typeof startFakeApi>>;
const state_ = (args: string[]) => ferry(['state', ...args, '--kubeconfig', api.kubeconfig, '--root', root], { env: { CI: '1' } });

beforeAll(async () => {
  dir = await tmpdir('ferry-state-cli-');
  root = path.join(dir, 'server-1');
  api = await startFakeApi(path.join(dir, 'api'));
}, 60_000);
afterAll(async () => {
  await api?.stop();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

describe('ferry state', () => {
  it('show says when there is no state yet, with its code', async () => {
    const r = await state_(['show']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/error\[STATE_MISSING\]/);
  });

  it('mirror copies the state to this server once, and show prints it with the lease holder', async () => {
    await openSiteState({ kubeconfig: api.kubeconfig, root: path.join(dir, 'creator') }).create(state);
    const m = await state_(['mirror']);
    expect(m.code, m.stderr).toBe(0);
    expect(m.stdout).toMatch(/copied resourceVersion \d+/);
    expect((await state_(['mirror'])).stdout).toMatch(/current \(resourceVersion \d+\)/);
    const held = await kubeLease({ kubeconfig: api.kubeconfig, durationSeconds: 600 }).acquire('server-2/4242');
    const human = await state_(['show']);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/^server-1\s+10\.0\.0\.1\s+server\s+linux\/amd64\s+v1\.37\.2\s+k8s-0\.1\.0/m);
    expect(human.stdout).toMatch(/^lease: server-2\/4242 \(live/m);
    const json = JSON.parse((await ferry(['state', 'show', '--json', '--kubeconfig', api.kubeconfig, '--root', root])).stdout);
    expect(json).toMatchObject({ ok: true, source: 'cluster', state: { nodes: [{ name: 'server-1' }] }, lease: { holder: 'server-2/4242', live: true } });
    await held.release();
  });

  it('lease break refuses without a terminal unless --yes, and with --yes frees the lease', async () => {
    await kubeLease({ kubeconfig: api.kubeconfig, durationSeconds: 600 }).acquire('gone/1');
    const asked = await state_(['lease', 'break']);
    expect(asked.code).toBe(2);
    expect(asked.stderr).toMatch(/error\[PROMPT_NO_TTY\]/);
    expect((await getLease(api.kubeconfig, 'ferry-system', 'ferry-operation'))!.spec.holderIdentity).toBe('gone/1');
    const r = await state_(['lease', 'break', '--yes']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('broke the lease held by gone/1');
    expect((await getLease(api.kubeconfig, 'ferry-system', 'ferry-operation'))!.spec.holderIdentity).toBeUndefined();
  });

  it('operation abandon forgets the recorded operation by its id, and refuses another id', async () => {
    const site = openSiteState({ kubeconfig: api.kubeconfig, root: path.join(dir, 'creator') });
    const j = await beginOperation(site, { kind: 'join', args: { nodes: ['a'] }, holder: 'server-1/7' });
    const wrong = await state_(['operation', 'abandon', 'join-nope', '--yes']);
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toContain(`the recorded one is join ${j.operation.id}`);
    const r = await state_(['operation', 'abandon', j.operation.id, '--yes']);
    expect(r.code, r.stderr).toBe(0);
    expect((await site.read())!.operation).toBeUndefined();
  });

  it("show falls back to this server's mirror with a warning when the API does not answer", async () => {
    await api.stop();
    const r = await state_(['show']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: .*does not answer.*state mirror/);
    expect(r.stdout).toMatch(/from \S+\/var\/lib\/ferry\/site\/state\.json \(copied/);
    expect(r.stdout).toMatch(/^server-1\s/m);
  });
});
