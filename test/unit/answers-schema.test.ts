import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { answerProblems, loadAnswers } from '../../src/install/answers.js';
import type { SiteAnswers } from '../../src/cluster/state.js';
import { answersSchema, SITE_SCHEMAS, type InstallAnswers, type JoinHost } from '../../src/spec/answers.js';
import { closestKey } from '../../src/spec/schema-errors.js';
import { ROOT } from '../helpers/cli.js';
import { tmpdir } from '../helpers/peers.js';

/*
 * The answers' shape is written once, as a JSON Schema (src/spec/answers.ts). The TypeScript type
 * is checked equal to it here at compile time, the chart's values schema at run time.
 */

type S = typeof answersSchema;
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type RequiredKeys<T> = { [K in keyof T]-?: object extends Pick<T, K> ? never : K }[keyof T];
type Props<X> = X extends { properties: infer P } ? P : never;
type Req<X> = X extends { required: readonly (infer R)[] } ? R : never;
/** A schema object and a TS type name the same keys, and the same ones as required. */
type Matches<X, T> = Same<keyof Props<X>, keyof T> extends true ? Same<Req<X>, RequiredKeys<T>> : false;

// A field added to the schema and not the type (or required in one only) fails to compile.
const checks: true[] = [
  true as Matches<S, InstallAnswers>,
  true as Matches<S['properties']['node'], InstallAnswers['node']>,
  true as Matches<S['properties']['ssh'], NonNullable<InstallAnswers['ssh']>>,
  true as Matches<S['properties']['join']['items'], JoinHost>,
  true as Matches<S['properties']['records']['items'], NonNullable<InstallAnswers['records']>[number]>,
  true as Matches<S['properties']['patches'], NonNullable<InstallAnswers['patches']>>,
  // The site state keeps the answers without this node, the join list and the document's header.
  true as Same<keyof SiteAnswers, Exclude<keyof InstallAnswers, 'apiVersion' | 'kind' | 'node' | 'join'>>,
];

let work: string;
beforeAll(async () => {
  work = await tmpdir('ferry-answers-schema-');
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

const base: InstallAnswers = { apiVersion: 'ferry.dev/v1alpha1', kind: 'InstallAnswers', domain: 'site.test', node: { name: 'server-1', ip: '10.0.0.11' }, podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' };
const problems = (v: unknown) => answerProblems(v).map((p) => `${p.path.join('.')} ${p.msg}`);

/** Loads answers from these lines; the refusal's lines without the file name, or [] when they load. */
async function refusals(name: string, text: string): Promise<string[]> {
  const file = path.join(work, `${name}.yaml`);
  await fs.writeFile(file, text);
  return loadAnswers(file).then(
    () => [],
    (e: Error & { code?: string }) => {
      expect(e.code).toBe('SPEC_INVALID');
      return e.message.split('\n').slice(1).map((l) => l.trim().replace(`${file}:`, ''));
    },
  );
}

describe('the answers schema', () => {
  it('is the TypeScript type of the answers, key for key and required for required', () => {
    expect(checks).toHaveLength(7);
  });

  it("gives the bootstrap chart's values schema its shared parts as they are: domain, node names and IPs, records, resolvers", async () => {
    const chart = JSON.parse(await fs.readFile(path.join(ROOT, 'charts/ferry-bootstrap/values.schema.json'), 'utf8'));
    // On a difference: copy SITE_SCHEMAS from src/spec/answers.ts into the chart's schema.
    expect(chart.properties.domain).toEqual(SITE_SCHEMAS.domain);
    expect(chart.properties.nodes.items.properties.name).toEqual(SITE_SCHEMAS.nodeName);
    expect(chart.properties.nodes.items.properties.ip).toEqual(SITE_SCHEMAS.nodeIp);
    expect(chart.properties.records).toEqual(SITE_SCHEMAS.records);
    expect(chart.properties.upstreamDns).toEqual(SITE_SCHEMAS.upstreamDns);
  });

  it('accepts a full, valid answers file', () => {
    const full = {
      ...base,
      clusterFqdn: 'k8s.site.test',
      cni: 'flannel',
      records: [{ name: 'ntp.site.test', ip: '10.0.0.5' }],
      upstreamDns: ['10.0.0.53', '10.0.0.54:5353'],
      ssh: { user: 'root', identityFile: '~/.ssh/id', knownHosts: '~/.ssh/known_hosts', port: 22 },
      join: [{ host: '10.0.0.12', name: 'server-2', role: 'server', ip: '10.0.0.12' }],
      cgroupV1: 'refuse',
      ignoreKubeadmPreflight: ['NumCPU'],
      // Patch contents are kubeadm's, not checked here.
      patches: { kubelet: { failSwapOn: false, anyKubeletField: 1 }, joinConfiguration: { nodeRegistration: { x: 1 } } },
    };
    expect(problems(full)).toEqual([]);
  });

  it('suggests the key meant: a different case, a slip, a swap of letters, or where a misplaced key belongs', () => {
    expect(problems({ ...base, podCIDR: '10.1.0.0/16' })).toEqual(['podCIDR is not a known field; did you mean podCidr?']);
    expect(problems({ ...base, servcieCidr: '10.2.0.0/16' })).toEqual(['servcieCidr is not a known field; did you mean serviceCidr?']);
    expect(problems({ ...base, ssh: { identtyFile: '~/.ssh/id' } })).toEqual(['ssh.identtyFile is not a known field; did you mean identityFile?']);
    expect(problems({ ...base, identityFile: '~/.ssh/id' })).toEqual(['identityFile is not a known field; did you mean ssh.identityFile?']);
    expect(problems({ ...base, join: [{ host: 'a', name: 'n1', role: 'agent', adress: '10.0.0.9' }] })).toEqual(['join.0.adress is not a known field (known: host, name, role, ip)']);
    expect(problems({ ...base, patches: { kubeProxi: { mode: 'ipvs' } } })).toEqual(['patches.kubeProxi is not a known field; did you mean kubeProxy?']);
    expect(closestKey('ab', ['cni'])).toBeUndefined();
  });

  it('refuses values of the wrong type, naming what each field expects', () => {
    const got = problems({ ...base, node: 'server-1', ssh: { port: '22' }, records: 'none', cgroupV1: 'maybe' });
    expect(got.sort()).toEqual([
      'cgroupV1 must be allow or refuse (expected: A node on cgroup v1: allow (default, with a loud warning) or refuse.)',
      'node must be object (expected: The first server: this machine.)',
      expect.stringMatching(/^records must be array \(expected: Extra site DNS records/),
      'ssh.port must be integer (expected: Default 22.)',
    ]);
  });

  it('puts every problem, the schema\'s and the rules\', at its file:line:column in file order', async () => {
    expect(
      await refusals(
        'mixed',
        [
          'apiVersion: ferry.dev/v1alpha1',
          'kind: InstallAnswers',
          'domain: site.test',
          'node: {name: s1, ip: 10.0.0.11}',
          'podCIDR: 10.1.0.0/16',
          'podCidr: 10.244.0.0/16',
          'serviceCidr: 10.244.0.0/12',
          'ssh:',
          '  user: root',
          '  identtyFile: ~/.ssh/id',
          'join:',
          '  - {host: 10.0.0.12, name: s2, role: agent, sevrices: x}',
          '',
        ].join('\n'),
      ),
    ).toEqual([
      '5:1: podCIDR is not a known field; did you mean podCidr?',
      '7:14: serviceCidr overlaps podCidr 10.244.0.0/16',
      '10:3: ssh.identtyFile is not a known field; did you mean identityFile?',
      '12:46: join[0].sevrices is not a known field (known: host, name, role, ip)',
    ]);
  });
});
