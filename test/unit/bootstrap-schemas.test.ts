import { createRequire } from 'node:module';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import type { BootstrapValues, KubernetesObject } from '../../src/install/bootstrap.js';
import { ROOT } from '../helpers/cli.js';
import { renderChart, SITE_NODES } from '../helpers/helm.js';

/*
 * Every object ferry hands to server-side apply for the bootstrap (charts/ferry-bootstrap through
 * real helm, as the installer renders it), checked against the official Kubernetes OpenAPI schemas
 * as packaged by `kubernetes-models` (a devDependency; 4.5.x is the newest line that runs on
 * Node 20, and it models Kubernetes 1.33):
 *
 * - at run time with the package's validators (types, required fields, enums, formats), and
 * - for unknown fields, which those validators let through, by type-checking each object as a
 *   TypeScript literal against the package's interfaces: excess-property checks reject any field
 *   the API does not have, at any depth.
 */

const PACKAGE = 'kubernetes-models';
const installed = (() => {
  try {
    createRequire(import.meta.url).resolve(PACKAGE);
    return true;
  } catch {
    return false;
  }
})();

interface Model {
  validate(): void;
}
type ModelClass = new (data: unknown) => Model;

/** apiVersion/kind → the module and the interface the package declares for it. */
const KINDS: Record<string, { module: string; className: string; iface: string }> = {
  'v1/Namespace': { module: `${PACKAGE}/v1/Namespace`, className: 'Namespace', iface: 'INamespace' },
  'v1/ConfigMap': { module: `${PACKAGE}/v1/ConfigMap`, className: 'ConfigMap', iface: 'IConfigMap' },
  'apps/v1/DaemonSet': { module: `${PACKAGE}/apps/v1/DaemonSet`, className: 'DaemonSet', iface: 'IDaemonSet' },
};

const kindOf = (o: KubernetesObject) => `${o.apiVersion}/${o.kind}`;

async function modelFor(o: KubernetesObject): Promise<ModelClass> {
  const k = KINDS[kindOf(o)];
  if (!k) throw new Error(`no schema known for ${kindOf(o)}: add it to KINDS`);
  // A computed specifier keeps the type-check of the test files independent of the package.
  const mod = (await import(/* @vite-ignore */ k.module)) as Record<string, ModelClass>;
  return mod[k.className]!;
}

/** Runs each object through the package's validator; returns one line per failure. */
async function runtimeProblems(objs: KubernetesObject[]): Promise<string[]> {
  const out: string[] = [];
  for (const o of objs) {
    const Model = await modelFor(o);
    try {
      new Model(structuredClone(o)).validate();
    } catch (e) {
      out.push(`${kindOf(o)} ${o.metadata.name}: ${(e as Error).message}`);
    }
  }
  return out;
}

/**
 * Type-checks `const o: IDaemonSet = {…}` for each object in an in-memory file beside the tests,
 * so that `kubernetes-models` resolves from the repository's node_modules. Returns the diagnostics.
 */
function typeProblems(objs: KubernetesObject[]): string[] {
  const file = path.join(ROOT, 'test', 'unit', '__bootstrap_objects__.ts');
  const used = [...new Set(objs.map(kindOf))];
  const lines = used.map((k) => {
    const m = KINDS[k];
    if (!m) throw new Error(`no schema known for ${k}: add it to KINDS`);
    return `import type { ${m.iface} } from '${m.module}';`;
  });
  objs.forEach((o, i) => lines.push(`export const o${i}: ${KINDS[kindOf(o)]!.iface} = ${JSON.stringify(o, null, 2)};`));
  const text = `${lines.join('\n')}\n`;
  const options: ts.CompilerOptions = {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
    lib: ['lib.es2022.d.ts'],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, ...rest) => (path.resolve(name) === file ? ts.createSourceFile(name, text, lang) : getSourceFile(name, lang, ...rest));
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => path.resolve(name) === file || fileExists(name);
  const readFile = host.readFile.bind(host);
  host.readFile = (name) => (path.resolve(name) === file ? text : readFile(name));
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const where = d.file && d.start !== undefined ? `${path.basename(d.file.fileName)}:${d.file.getLineAndCharacterOfPosition(d.start).line + 1}: ` : '';
    return `${where}${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
  });
}

const sites: Record<string, BootstrapValues> = {
  '3 servers, 2 agents, records and upstream DNS': {
    domain: 'site.example',
    nodes: [...SITE_NODES],
    records: [{ name: 'ntp', ip: '10.0.0.5' }],
    upstreamDns: ['10.0.0.2'],
  },
  'one server, a second zone, numeric CPU': {
    domain: 'lab.example',
    clusterFqdn: 'api.k8s.example',
    nodes: [{ name: 'cp', ip: '192.168.7.10', role: 'server' }],
    dns: { resources: { requests: { cpu: 1, memory: '20Mi' }, limits: { cpu: '500m', memory: '64Mi' } } },
  },
  'the chart defaults (no nodes)': { domain: 'site.example', nodes: [] },
};

describe.skipIf(!installed)(`bootstrap objects against the Kubernetes OpenAPI schemas (${PACKAGE})`, () => {
  for (const [name, values] of Object.entries(sites)) {
    it(`renders only valid objects for ${name}`, async () => {
      const objs = await renderChart(values);
      expect(objs.map(kindOf)).toEqual(['v1/Namespace', 'v1/ConfigMap', 'v1/ConfigMap', 'apps/v1/DaemonSet', 'apps/v1/DaemonSet']);
      expect(await runtimeProblems(objs)).toEqual([]);
      expect(typeProblems(objs)).toEqual([]);
    });
  }

  it('catches what it is there to catch: a wrong type, a bad enum and an unknown field', async () => {
    const [, , , dns] = (await renderChart(sites['3 servers, 2 agents, records and upstream DNS']!)) as [KubernetesObject, KubernetesObject, KubernetesObject, KubernetesObject];
    const wrongType = structuredClone(dns) as { spec: { template: { spec: { containers: { ports: { containerPort: unknown }[] }[] } } } } & KubernetesObject;
    wrongType.spec.template.spec.containers[0]!.ports[0]!.containerPort = '53';
    const badEnum = structuredClone(dns) as { spec: { template: { spec: { containers: { imagePullPolicy: string }[] } } } } & KubernetesObject;
    badEnum.spec.template.spec.containers[0]!.imagePullPolicy = 'Sometimes';
    const runtime = await runtimeProblems([wrongType, badEnum]);
    expect(runtime).toHaveLength(2);
    expect(runtime[0]).toMatch(/containers\/0\/ports\/0\/containerPort must be integer/);
    expect(runtime[1]).toMatch(/containers\/0\/imagePullPolicy must be equal to one of the allowed values/);

    const unknownField = structuredClone(dns) as { spec: { template: { spec: Record<string, unknown> } } } & KubernetesObject;
    unknownField.spec.template.spec.tolerationz = [{ operator: 'Exists' }];
    const unknownDeep = structuredClone(dns) as { spec: { template: { spec: { containers: Record<string, unknown>[] } } } } & KubernetesObject;
    unknownDeep.spec.template.spec.containers[0]!.readinessProbes = {};
    // TypeScript reports the first excess property of each literal: one object per case.
    const types = typeProblems([unknownField, unknownDeep]).join('\n');
    expect(types).toMatch(/'"tolerationz"' does not exist in type 'IPodSpec'/);
    expect(types).toMatch(/'"readinessProbes"' does not exist in type 'IContainer'/);
  });
});

if (!installed) {
  describe('bootstrap objects against the Kubernetes OpenAPI schemas', () => {
    it.skip(`needs the devDependency ${PACKAGE} (npm i -D ${PACKAGE}@4.5.1)`, () => {});
  });
}
