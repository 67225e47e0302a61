import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAnswers } from '../../src/install/answers.js';
import { tmpdir } from '../helpers/peers.js';

/*
 * Answers that pass a field-by-field check but break the cluster's saved state later (nodes.json,
 * the DNS records, the LB backends, kubeadm's networks) are refused when they load, each at its
 * file:line:column.
 */

let work: string;
beforeAll(async () => {
  work = await tmpdir('ferry-answers-');
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

const HEAD = 'apiVersion: ferry.dev/v1alpha1\nkind: InstallAnswers\ndomain: site.test\n';

/** Loads answers from these lines (after the three head lines); the refusal's lines, or [] when they load. */
async function refusals(name: string, body: string): Promise<string[]> {
  const file = path.join(work, `${name}.yaml`);
  await fs.writeFile(file, HEAD + body);
  return loadAnswers(file).then(
    () => [],
    (e: Error & { code?: string }) => {
      expect(e.code).toBe('SPEC_INVALID');
      return e.message.split('\n').slice(1).map((l) => l.trim().replace(`${file}:`, ''));
    },
  );
}

describe('answers that would break the saved state are refused when they load', () => {
  it('refuses IPv6 wherever an address or network goes, saying ferry is IPv4-only', async () => {
    expect(
      await refusals(
        'ipv6',
        `node: {name: server-1, ip: "fd00::10"}
podCidr: fd00:10::/64
serviceCidr: "fd00:20::/108"
records:
  - {name: gitlab, ip: "fd00::50"}
join:
  - {host: "fd00::21", name: agent-1, role: agent}
  - {host: 10.0.0.22, name: agent-2, role: agent, ip: "fd00::22"}
`,
      ),
    ).toEqual([
      '4:28: node.ip "fd00::10" is not valid (expected: The node\'s IPv4 address, for example 10.0.0.11 (ferry is IPv4-only today))',
      '5:10: podCidr "fd00:10::/64" is not valid (expected: The pod network, for example 10.244.0.0/16 (ferry is IPv4-only today))',
      '6:14: serviceCidr "fd00:20::/108" is not valid (expected: The Service network, for example 10.96.0.0/12 (ferry is IPv4-only today))',
      '8:24: records[0].ip "fd00::50" is not valid (expected: The IPv4 address the name answers (ferry is IPv4-only today))',
      '10:12: join[0].host "fd00::21" is not valid (expected: A host name or IPv4 address to reach over SSH (ferry is IPv4-only today).)',
      '11:55: join[1].ip "fd00::22" is not valid (expected: The node\'s own address on the cluster network, when it differs from host (ferry is IPv4-only today))',
    ]);
  });

  it('refuses a node address inside the pod or service network, given as ip or as an IP host', async () => {
    expect(
      await refusals(
        'cidr',
        `node: {name: server-1, ip: 10.244.3.4}
podCidr: 10.244.0.0/16
serviceCidr: 10.96.0.0/12
join:
  - {host: 10.0.0.21, name: agent-1, role: agent, ip: 10.100.0.20}
  - {host: 10.244.255.254, name: agent-2, role: agent}
  - {host: 10.0.0.23, name: agent-3, role: agent}
`,
      ),
    ).toEqual([
      '4:28: node.ip 10.244.3.4 is inside podCidr 10.244.0.0/16: a node\'s address must be outside the pod and service networks',
      '8:55: join[0].ip 10.100.0.20 is inside serviceCidr 10.96.0.0/12: a node\'s address must be outside the pod and service networks',
      '9:12: join[1].host 10.244.255.254 is inside podCidr 10.244.0.0/16: a node\'s address must be outside the pod and service networks',
    ]);
  });

  it('refuses two nodes on one address, and addresses no node can have', async () => {
    expect(
      await refusals(
        'same-ip',
        `node: {name: server-1, ip: 10.0.0.11}
podCidr: 10.244.0.0/16
serviceCidr: 10.96.0.0/12
join:
  - {host: 10.0.0.11, name: agent-1, role: agent}
  - {host: k8s-agent-2.site.test, name: agent-2, role: agent, ip: 10.0.0.11}
  - {host: 127.0.0.1, name: agent-3, role: agent}
  - {host: 0.0.0.0, name: agent-4, role: agent}
`,
      ),
    ).toEqual([
      '8:12: join[0].host 10.0.0.11 is also the address of server-1',
      '9:67: join[1].ip 10.0.0.11 is also the address of server-1',
      '10:12: join[2].host 127.0.0.1 is a loopback address, which the other nodes cannot reach',
      '11:12: join[3].host 0.0.0.0 is not a host address',
    ]);
  });

  it('resolves a join host given by name, refusing one that does not resolve or resolves to loopback', async () => {
    expect(
      await refusals(
        'names',
        `node: {name: server-1, ip: 10.0.0.11}
podCidr: 10.244.0.0/16
serviceCidr: 10.96.0.0/12
join:
  - {host: localhost, name: agent-1, role: agent}
  - {host: no-such-node.invalid, name: agent-2, role: agent}
  - {host: "bad host!", name: agent-3, role: agent}
`,
      ),
    ).toEqual([
      '8:12: join[0].host "localhost" resolves to 127.0.0.1: 127.0.0.1 is a loopback address, which the other nodes cannot reach',
      expect.stringMatching(/^9:12: join\[1\]\.host "no-such-node\.invalid" does not resolve to an IPv4 address \(\w+\): give its IP as host, or add ip:$/),
      '10:12: join[2].host "bad host!" is not valid (expected: A host name or IPv4 address to reach over SSH (ferry is IPv4-only today).)',
    ]);
  });

  it("refuses records and node names that would shadow ferry's own names in the site DNS", async () => {
    expect(
      await refusals(
        'shadow',
        `node: {name: server-1, ip: 10.0.0.11}
podCidr: 10.244.0.0/16
serviceCidr: 10.96.0.0/12
clusterFqdn: api.site.test
records:
  - {name: registry.site.test, ip: 10.0.0.50}
  - {name: registry, ip: 10.0.0.51}
  - {name: api, ip: 10.0.0.52}
  - {name: server-1.site.test, ip: 10.0.0.53}
  - {name: agent-1, ip: 10.0.0.54}
  - {name: gitlab, ip: 10.0.0.55}
join:
  - {host: 10.0.0.21, name: agent-1, role: agent}
  - {host: 10.0.0.22, name: registry, role: agent}
`,
      ),
    ).toEqual([
      '9:12: records[0].name would answer in the site DNS as registry.site.test, which is the site registry name',
      '10:12: records[1].name would answer in the site DNS as registry.site.test, which is the site registry name',
      '11:12: records[2].name would answer in the site DNS as api.site.test, which is the cluster FQDN',
      '12:12: records[3].name would answer in the site DNS as server-1.site.test, which is node server-1',
      '13:12: records[4].name would answer in the site DNS as agent-1.site.test, which is node agent-1',
      '17:29: join[1].name would answer in the site DNS as registry.site.test, which is the site registry name',
    ]);
    expect(await refusals('fqdn-is-registry', 'node: {name: server-1, ip: 10.0.0.11}\npodCidr: 10.244.0.0/16\nserviceCidr: 10.96.0.0/12\nclusterFqdn: registry.site.test\n')).toEqual([
      '7:14: clusterFqdn is registry.site.test, the site registry name',
    ]);
  });

  it('loads answers that break nothing, IP hosts kept as they are', async () => {
    const file = path.join(work, 'good.yaml');
    await fs.writeFile(file, `${HEAD}node: {name: server-1, ip: 10.0.0.11}\npodCidr: 10.244.0.0/16\nserviceCidr: 10.96.0.0/12\nrecords: [{name: gitlab, ip: 10.0.0.50}]\njoin:\n  - {host: 10.0.0.21, name: agent-1, role: agent}\n  - {host: 10.0.0.22, name: server-2, role: server, ip: 10.1.0.22}\n`);
    const a = await loadAnswers(file);
    expect(a.join).toEqual([
      { host: '10.0.0.21', name: 'agent-1', role: 'agent' },
      { host: '10.0.0.22', name: 'server-2', role: 'server', ip: '10.1.0.22' },
    ]);
  });
});
