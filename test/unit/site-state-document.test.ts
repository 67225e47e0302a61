import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseState, stateProblems } from '../../src/cluster/document.js';
import { MirrorStore, newerVersion, STATE_MIRROR } from '../../src/cluster/mirror.js';
import type { SiteState } from '../../src/cluster/state.js';
import { STATE_MIRROR as PATHS_STATE_MIRROR } from '../../src/install/paths.js';
import { tmpdir } from '../helpers/peers.js';

const doc = (): SiteState => ({
  apiVersion: 'ferry.dev/v1alpha1',
  kind: 'SiteState',
  answers: { domain: 'site.test', clusterFqdn: 'k8s-cluster.site.test', podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' },
  nodes: [{ name: 's1', ip: '10.0.0.1', role: 'server', platform: 'linux/amd64', kubernetesVersion: 'v1.37.2', bundle: 'k8s-0.1.0', joinedAt: '2026-12-03T10:00:00.000Z' }],
  bundles: [{ id: 'k8s-0.1.0', name: 'k8s', version: '0.1.0', fingerprint: 'SHA256:x', checksums: 'sha256:0', addedAt: '2026-12-03T10:00:00.000Z' }],
  current: 'k8s-0.1.0',
});

describe('the site state document', () => {
  it('is accepted whole, and each damage is named by its path', () => {
    expect(stateProblems(doc())).toEqual([]);
    const bad = doc() as unknown as Record<string, unknown>;
    bad.kind = 'ConfigMap';
    (bad.nodes as Record<string, unknown>[]).push({ ...(bad.nodes as object[])[0], role: 'boss' });
    delete (bad.answers as Record<string, unknown>).podCidr;
    bad.operation = { id: 'x', kind: 'join', holder: 'h', startedAt: 't', args: {}, journal: [{ key: 1 }] };
    expect(stateProblems(bad)).toEqual([
      'kind: expected SiteState, found "ConfigMap"',
      'answers.podCidr: missing or not a string',
      'nodes[1].role: expected server or agent, found "boss"',
      'nodes: "s1" is listed twice',
      'operation.journal: missing or not a list of {key, at}',
    ]);
  });

  it('that is not JSON stops ferry with STATE_INVALID naming where it was read', () => {
    expect(() => parseState('{"apiVersion": ', 'ConfigMap ferry-system/ferry-site')).toThrow(expect.objectContaining({ code: 'STATE_INVALID', message: expect.stringContaining('ConfigMap ferry-system/ferry-site') }));
  });
});

describe("a server's state mirror", () => {
  it('is one path, which paths.ts gives too', () => {
    expect(PATHS_STATE_MIRROR).toBe(STATE_MIRROR);
    expect(STATE_MIRROR).toBe('/var/lib/ferry/site/state.json');
  });

  it('takes only a newer resourceVersion of the same ConfigMap, and any of a ConfigMap made again', async () => {
    const m = new MirrorStore(await tmpdir());
    expect(await m.copy(doc(), '120', 'uid-a')).toBe(true);
    expect(await m.copy(doc(), '119', 'uid-a')).toBe(false);
    expect(await m.copy(doc(), '120', 'uid-a')).toBe(false);
    expect(await m.copy(doc(), '121', 'uid-a')).toBe(true);
    // kubeadm reset and init: a new cluster, whose revisions start low again.
    expect(await m.copy(doc(), '7', 'uid-b')).toBe(true);
    expect(await m.read()).toMatchObject({ version: '7', uid: 'uid-b' });
    expect((await fs.stat(m.file)).mode & 0o777).toBe(0o600);
    expect(path.relative(path.dirname(path.dirname(m.file)), m.file)).toBe('site/state.json');
  });

  it('compares resourceVersions as integers when both are', () => {
    expect(newerVersion('1000', '999')).toBe(true);
    expect(newerVersion('999', '1000')).toBe(false);
    expect(newerVersion('abc', 'abd')).toBe(true);
    expect(newerVersion('5', undefined)).toBe(true);
  });
});
