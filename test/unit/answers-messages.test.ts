import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { answerProblems, loadAnswers } from '../../src/install/answers.js';
import { formatProblem } from '../../src/spec/answers.js';

const base = { apiVersion: 'ferry.dev/v1alpha1', kind: 'InstallAnswers', domain: 'site.example', node: { name: 'n1', ip: '10.1.2.3' }, podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' };

describe('answer messages point the right way', () => {
  it('10.0.0.300 is not an IP address (an IPv6 one keeps the IPv4-only message)', () => {
    expect(answerProblems({ ...base, node: { name: 'n1', ip: '10.0.0.300' } }).map(formatProblem)).toEqual(['node.ip "10.0.0.300" is not an IP address (an IPv4 address such as 10.0.0.11; ferry is IPv4-only today)']);
    expect(answerProblems({ ...base, node: { name: 'n1', ip: 'fd00::1' } }).map(formatProblem)[0]).toMatch(/is not valid \(expected: .*IPv4-only/);
  });

  it('a capital letter in an FQDN is named, when it is the one fault', () => {
    expect(answerProblems({ ...base, clusterFqdn: 'K8s.site.example' }).map(formatProblem)).toEqual(['clusterFqdn "K8s.site.example" has a capital letter (K): DNS names here are lowercase, write "k8s.site.example"']);
    expect(answerProblems({ ...base, node: { name: 'Bad_Name', ip: '10.1.2.3' } }).map(formatProblem)[0]).toMatch(/node\.name "Bad_Name" is not valid/);
  });

  it('a file without domain says domain is missing, and a bad address at its line', async () => {
    const f = path.join(await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-msg-')), 'a.yaml');
    await fs.writeFile(f, 'apiVersion: ferry.dev/v1alpha1\nkind: InstallAnswers\nnode: {name: n1, ip: 10.0.0.300}\npodCidr: 10.244.0.0/16\nserviceCidr: 10.96.0.0/12\n');
    const e = await loadAnswers(f).then(() => undefined, (x: Error) => x);
    expect(e?.message).toMatch(/: domain is missing: it is required/);
    expect(e?.message).not.toMatch(/\(top level\)/);
    expect(e?.message).toMatch(/a\.yaml:3:22: node\.ip "10\.0\.0\.300" is not an IP address/);
  });
});
