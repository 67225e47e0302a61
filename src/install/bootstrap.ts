import { parseAllDocuments } from 'yaml';
import type { BundleManifest } from '../bundle/format.js';
import { Codes, FerryError, UsageError } from '../errors.js';
import { Host } from './host.js';
import { BIN_DIR } from './paths.js';

/*
 * The site's DNS and API load balancer, step 6 of the disconnected side. charts/ferry-bootstrap is
 * their only source: ferry renders the bundle's copy of the chart with the bundle's helm (`helm
 * template`, which needs no network and no cluster) and applies the objects with server-side apply.
 * What the DNS answers, how the LB balances, and which values are refused are written in the chart
 * alone (its README says what it renders); this file only builds the values and hands helm's
 * answer on.
 */

export const BOOTSTRAP_NAMESPACE = 'ferry-system';
export const BOOTSTRAP_CHART = 'ferry-bootstrap';
export const DNS_NAME = 'ferry-dns';
export const LB_NAME = 'ferry-lb';

export type NodeRole = 'server' | 'agent';
export interface BootstrapNode {
  /** The Kubernetes node name; <name>.<domain> answers its IP (a name already in the domain is kept). */
  name: string;
  ip: string;
  role: NodeRole;
}
export interface BootstrapRecord {
  /** A name in the site domain: relative (`harbor` → harbor.<domain>) or full (`harbor.site.example`). */
  name: string;
  ip: string;
}
export interface Resources {
  requests?: { cpu?: string | number; memory?: string | number };
  limits?: { cpu?: string | number; memory?: string | number };
}

/**
 * The chart's values as ferry sets them; anything left out takes the chart's values.yaml. The
 * chart's values.schema.json is what checks them (a test renders every field here through it).
 */
export interface BootstrapValues {
  domain: string;
  /** Default k8s-cluster.<domain>. */
  clusterFqdn?: string;
  nodes: BootstrapNode[];
  records?: BootstrapRecord[];
  apiServerPort?: number;
  images?: { coredns?: string; haproxy?: string };
  /** Site resolvers (IPv4, optionally :port) for every name outside our zones; none means refuse them. */
  upstreamDns?: string[];
  dns?: { ttl?: number; healthPort?: number; readyPort?: number; resources?: Resources };
  lb?: {
    statsPort?: number;
    maxConnections?: number;
    healthCheck?: { interval?: string; fastInterval?: string; downInterval?: string; fall?: number; rise?: number };
    timeouts?: { connect?: string; client?: string; server?: string };
    resources?: Resources;
  };
}

/** A Kubernetes object as server-side apply takes it. */
export interface KubernetesObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: unknown;
}

/** What renders the objects: a chart (a directory or a packaged .tgz) and the helm binary to run. */
export interface BootstrapChart {
  chart: string;
  helm: string;
}

/** Where the binaries step puts the bundle's helm (files/helm/…, unpacked if it is an archive). */
export const INSTALLED_HELM = `${BIN_DIR}/helm`;

/**
 * The bundle's chart and helm on an installed host. FERRY_HELM overrides the helm, as it does at
 * build time. A bundle without either cannot have its DNS and LB, so it is refused by name.
 */
export async function bundledBootstrapChart(
  host: Host,
  manifest: Pick<BundleManifest, 'charts' | 'files'> | undefined,
  chartTgz: (manifestDigest: string) => Promise<string>,
): Promise<BootstrapChart> {
  const addIt = 'Add it to the bundle spec (bundle-spec/kubernetes.yaml carries both), build the bundle again and install that one.';
  const chart = manifest?.charts.find((c) => c.name === BOOTSTRAP_CHART);
  if (!chart) {
    throw new UsageError(Codes.chartNotFound, `the bundle carries no ${BOOTSTRAP_CHART} chart, which renders the site DNS and the API load balancer`, { hint: `${addIt} The chart is charts/${BOOTSTRAP_CHART} in ferry's repository.` });
  }
  const override = host.env.FERRY_HELM;
  if (!override && !manifest?.files.some((f) => f.name === 'helm')) {
    throw new UsageError(Codes.bundleBinaryMissing, `the bundle carries no helm, which renders the ${BOOTSTRAP_CHART} chart`, { hint: `${addIt} Or point FERRY_HELM at a helm binary on this host.` });
  }
  return { chart: await chartTgz(chart.digest), helm: override || host.p(INSTALLED_HELM) };
}

const VALUES_HINT =
  "ferry builds these values from the answers (domain, records, upstream DNS) and the cluster's nodes. The chart's values.schema.json and its checks (templates/_helpers.tpl) say what each must be: fix the answers, or install a bundle whose ferry-bootstrap chart matches this ferry.";

/** helm's own words, without its `Error: ` prefix and its advice to use --debug. */
function helmSaid(stderr: string): string[] {
  return stderr
    .split('\n')
    .map((l) => l.trimEnd().replace(/^Error: /, ''))
    .filter((l) => l.trim() && !/^Use --debug flag/.test(l));
}

/**
 * `helm template` of the chart with these values (on stdin, so nothing is written), parsed: every
 * object in helm's install order (the Namespace first). A refusal by the chart's schema or its
 * checks is a FerryError with helm's words, redacted.
 */
export async function renderBootstrap(values: BootstrapValues, from: BootstrapChart, host: Host = new Host()): Promise<KubernetesObject[]> {
  const args = ['template', BOOTSTRAP_CHART, from.chart, '--namespace', BOOTSTRAP_NAMESPACE, '--values', '-'];
  const r = await host.run(from.helm, args, { input: JSON.stringify(values), allowFail: true, timeoutMs: 120_000 });
  if (r.code !== 0) {
    const said = helmSaid(host.redact(r.stderr));
    throw new UsageError(Codes.bootstrapValues, `the ${BOOTSTRAP_CHART} chart refused its values (helm template, exit ${r.code}):\n  ${said.join('\n  ')}`, {
      hint: VALUES_HINT,
      details: { helm: from.helm, chart: from.chart, stderr: said },
    });
  }
  const objects: KubernetesObject[] = [];
  for (const doc of parseAllDocuments(r.stdout)) {
    const o = doc.toJS() as Partial<KubernetesObject> | null;
    if (o === null && doc.errors.length === 0) continue;
    if (doc.errors.length > 0 || typeof o?.apiVersion !== 'string' || typeof o.kind !== 'string' || typeof o.metadata?.name !== 'string') {
      throw new UsageError(Codes.chartInvalid, `helm template of ${from.chart} printed something that is not a Kubernetes object: ${doc.errors[0]?.message ?? JSON.stringify(o).slice(0, 200)}`, {
        hint: `Check the chart with \`helm lint\` and \`helm template\`; ferry applies only what helm renders from charts/${BOOTSTRAP_CHART}.`,
      });
    }
    objects.push(o as KubernetesObject);
  }
  if (objects.length === 0) {
    throw new UsageError(Codes.chartInvalid, `helm template of ${from.chart} rendered no objects (is ${from.helm} a real helm?)`, { hint: `ferry renders the DNS and LB with the bundle's helm, installed at ${INSTALLED_HELM}; re-run ferry install to install it again.` });
  }
  return objects;
}
