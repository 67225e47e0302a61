import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ANSWERS_SHAPE, closestKey, unknownAnswerKeys } from '../../src/install/answers-keys.js';
import { loadAnswers, type InstallAnswers, type JoinHost } from '../../src/install/answers.js';
import { loadYaml, positionOf } from '../../src/spec/yamlpos.js';
import { tmpdir } from '../helpers/peers.js';

const base = { apiVersion: 'ferry.dev/v1alpha1', kind: 'InstallAnswers', domain: 'site.test', node: { name: 'server-1', ip: '10.0.0.11' }, podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' };
const keys = (v: unknown) => unknownAnswerKeys(v).map((p) => `${p.path.join('.')} ${p.msg}`);

// The shape and InstallAnswers name the same keys: a field added to one and not the other fails to compile.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const sameTop: Same<keyof typeof ANSWERS_SHAPE, keyof InstallAnswers> = true;
const sameNode: Same<keyof (typeof ANSWERS_SHAPE)['node'], keyof InstallAnswers['node']> = true;
const sameSsh: Same<keyof (typeof ANSWERS_SHAPE)['ssh'], keyof NonNullable<InstallAnswers['ssh']>> = true;
const sameJoin: Same<keyof (typeof ANSWERS_SHAPE)['join'][0], keyof JoinHost> = true;
const sameRecords: Same<keyof (typeof ANSWERS_SHAPE)['records'][0], keyof NonNullable<InstallAnswers['records']>[number]> = true;
const samePatches: Same<keyof (typeof ANSWERS_SHAPE)['patches'], keyof NonNullable<InstallAnswers['patches']>> = true;

describe('unknown keys in the answers file', () => {
  it('finds none in a full, valid answers file', () => {
    expect([sameTop, sameNode, sameSsh, sameJoin, sameRecords, samePatches]).toEqual([true, true, true, true, true, true]);
    const full = {
      ...base,
      clusterFqdn: 'k8s.site.test',
      cni: 'flannel',
      records: [{ name: 'ntp.site.test', ip: '10.0.0.5' }],
      upstreamDns: ['10.0.0.53'],
      ssh: { user: 'root', identityFile: '~/.ssh/id', knownHosts: '~/.ssh/known_hosts', port: 22 },
      join: [{ host: '10.0.0.12', name: 'server-2', role: 'server', ip: '10.0.0.12' }],
      cgroupV1: 'refuse',
      ignoreKubeadmPreflight: ['NumCPU'],
      // Patch contents are kubeadm's, not checked here.
      patches: { kubelet: { failSwapOn: false, anyKubeletField: 1 }, joinConfiguration: { nodeRegistration: { x: 1 } } },
    };
    expect(unknownAnswerKeys(full)).toEqual([]);
  });

  it('suggests the key meant: a different case, a slip, a swap of letters', () => {
    expect(keys({ ...base, podCIDR: '10.1.0.0/16' })).toEqual(['podCIDR is not a known key at the top level; did you mean podCidr?']);
    expect(keys({ ...base, servcieCidr: '10.2.0.0/16' })).toEqual(['servcieCidr is not a known key at the top level; did you mean serviceCidr?']);
    expect(keys({ ...base, ssh: { identtyFile: '~/.ssh/id' } })).toEqual(['ssh.identtyFile is not a known key in ssh; did you mean identityFile?']);
    expect(keys({ ...base, node: { name: 'a', ip: '10.0.0.1', IP: 'x' } })).toEqual(['node.IP is not a known key in node; did you mean ip?']);
    expect(keys({ ...base, upstreamDNS: ['10.0.0.53'] })).toEqual(['upstreamDNS is not a known key at the top level; did you mean upstreamDns?']);
  });

  it('names where a misplaced key belongs', () => {
    expect(keys({ ...base, identityFile: '~/.ssh/id' })).toEqual(['identityFile is not a known key at the top level; did you mean ssh.identityFile?']);
    expect(keys({ ...base, identtyFile: '~/.ssh/id' })).toEqual(['identtyFile is not a known key at the top level; did you mean ssh.identityFile?']);
  });

  it('lists the known keys when nothing is close', () => {
    const [p] = keys({ ...base, sevrices: ['dns'] });
    expect(p).toBe(
      'sevrices is not a known key at the top level (known: apiVersion, kind, domain, clusterFqdn, node, podCidr, serviceCidr, cni, records, upstreamDns, ssh, join, cgroupV1, ignoreKubeadmPreflight, patches)',
    );
  });

  it('walks join[] and records[] by index, and patch targets', () => {
    expect(
      unknownAnswerKeys({
        ...base,
        join: [{ host: 'a', name: 'n1', role: 'agent' }, { host: 'b', name: 'n2', rol: 'server', adress: '10.0.0.9' }],
        records: [{ name: 'x.site.test', ipp: '10.0.0.5' }],
        patches: { kubeProxi: { mode: 'ipvs' } },
      }),
    ).toEqual([
      { path: ['join', 1, 'rol'], msg: 'is not a known key in join; did you mean role?' },
      { path: ['join', 1, 'adress'], msg: 'is not a known key in join (known: host, name, role, ip)' },
      { path: ['records', 0, 'ipp'], msg: 'is not a known key in records; did you mean ip?' },
      { path: ['patches', 'kubeProxi'], msg: 'is not a known key in patches; did you mean kubeProxy?' },
    ]);
  });

  it('leaves values of the wrong type to answerProblems', () => {
    expect(unknownAnswerKeys({ ...base, node: 'server-1', ssh: ['x'], join: { host: 'a' }, records: 'none' })).toEqual([]);
    expect(unknownAnswerKeys(null)).toEqual([]);
    expect(unknownAnswerKeys('text')).toEqual([]);
  });

  it('does not suggest a far key for a short one', () => {
    expect(closestKey('ab', ['cni'])).toBeUndefined();
    expect(closestKey('CNI', ['cni'])).toBe('cni');
  });

  it('gives each unknown key its file:line:column through positionOf', async () => {
    const dir = await tmpdir();
    const file = path.join(dir, 'answers.yaml');
    await fs.writeFile(
      file,
      ['apiVersion: ferry.dev/v1alpha1', 'kind: InstallAnswers', 'domain: site.test', 'node: {name: s1, ip: 10.0.0.11}', 'podCIDR: 10.1.0.0/16', 'ssh:', '  user: root', '  identtyFile: ~/.ssh/id', 'join:', '  - {host: 10.0.0.12, name: s2, role: agent, sevrices: x}', ''].join('\n'),
    );
    const y = await loadYaml(file, 'answers');
    expect(unknownAnswerKeys(y.value).map((q) => `${positionOf(y, q.path, 'key')}: ${q.path.join('.')}`)).toEqual([
      `${file}:5:1: podCIDR`,
      `${file}:8:3: ssh.identtyFile`,
      `${file}:10:46: join.0.sevrices`,
    ]);
    await fs.rm(dir, { recursive: true, force: true });
  });
});

describe('loading an answers file with a misspelt key', () => {
  it('refuses it with the key position and a did-you-mean, instead of ignoring it', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-answers-'));
    const file = path.join(dir, 'answers.yaml');
    await fs.writeFile(file, 'apiVersion: ferry.dev/v1alpha1\nkind: InstallAnswers\ndomain: site.test\nnode: {name: server-1, ip: 10.0.0.11}\npodCIDR: 10.244.0.0/16\n');
    const e = (await loadAnswers(file).then(() => undefined, (x: unknown) => x)) as Error & { code: string };
    expect(e.code).toBe('SPEC_INVALID');
    expect(e.message).toMatch(new RegExp(`${file.replace(/[.]/g, '\\.')}:5:1: podCIDR .*podCidr`));
    await fs.rm(dir, { recursive: true, force: true });
  });
});
